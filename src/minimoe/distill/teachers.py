"""Frozen teacher encoders: load a Hugging Face model and read one layer's self-attention Q, K, V.

MiniLMv2 distils the relations between the Q/K/V projections of one teacher layer, so each
supported family only needs to say where those three linear modules live.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from minimoe.assets.resolve import load_pretrained, resolve_model
from minimoe.errors import MiniMoEError
from minimoe.modeling.loading import has_weights, validate_checkpoint


@dataclass(frozen=True)
class _Adapter:
    """Where a family keeps its layers and, inside one layer, its Q, K, V linear modules."""

    layers: str  # dotted path from the base model to the nn.ModuleList of layers
    qkv: tuple[str, str, str]  # dotted paths from one layer to its Q, K, V nn.Linear
    takes_token_type_ids: bool


_BERT_LIKE = _Adapter("encoder.layer", ("attention.self.query", "attention.self.key", "attention.self.value"), True)

ADAPTERS: dict[str, _Adapter] = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "electra": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "mpnet": _Adapter("encoder.layer", ("attention.attn.q", "attention.attn.k", "attention.attn.v"), False),
    "distilbert": _Adapter("transformer.layer", ("attention.q_lin", "attention.k_lin", "attention.v_lin"), False),
    "minimoe": _Adapter("encoder.layer", ("attention.query", "attention.key", "attention.value"), True),
}


class _StopForward(Exception):
    """Raised by the last Q/K/V hook so the layers above the distilled one are never run."""


class Teacher(nn.Module):
    """A frozen encoder in eval mode that returns one layer's Q, K, V projections.

    Run it under no_grad only; it is a plain module, never meant to be wrapped by DDP.
    """

    def __init__(self, model: PreTrainedModel, name: str | None = None):
        super().__init__()
        model_type = model.config.model_type
        if model_type not in ADAPTERS:
            raise MiniMoEError(
                f"teacher family {model_type!r} is not supported; supported: {', '.join(sorted(ADAPTERS))}"
            )
        # A model with a task head (e.g. ForSequenceClassification) keeps the encoder in base_model.
        self.model = getattr(model, "base_model", model)
        self.name = name or getattr(model.config, "_name_or_path", "") or model_type
        self._adapter = ADAPTERS[model_type]
        try:
            self.model.get_submodule(self._adapter.layers)
        except AttributeError as err:
            raise MiniMoEError(f"teacher {self.name!r} ({model_type}) has no {self._adapter.layers!r}: {err}") from None
        self.model.requires_grad_(False)
        self.eval()

    @classmethod
    def from_model(cls, model: PreTrainedModel) -> Teacher:
        """Wrap an already-built model (base or with a task head) and freeze it."""
        return cls(model)

    def train(self, mode: bool = True) -> Teacher:
        """Always stay in eval mode: teacher targets must not carry dropout noise."""
        return super().train(False)

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        """Where the teacher's weights live; its inputs must be moved there."""
        return next(self.model.parameters()).device

    @property
    def model_type(self) -> str:
        return self.config.model_type

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def layers(self) -> nn.ModuleList:
        """The encoder's layer stack (not stored as an attribute, to keep state_dict keys unique)."""
        return self.model.get_submodule(self._adapter.layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def vocab_size(self) -> int:
        """Rows of the input embedding matrix (what token ids must stay below)."""
        return self.model.get_input_embeddings().num_embeddings

    def _qkv_modules(self, layer: int) -> list[nn.Module]:
        """The Q, K, V linear modules of `layer` (negative counts from the end)."""
        if not -self.num_layers <= layer < self.num_layers:
            raise MiniMoEError(f"teacher layer {layer} is out of range for {self.name!r} with {self.num_layers} layers")
        block = self.layers[layer]
        return [block.get_submodule(path) for path in self._adapter.qkv]

    @torch.no_grad()
    def qkv(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        layer: int = -1,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V projections (each [B, T, H]) of `layer`, from one forward pass stopped there."""
        captured: dict[int, torch.Tensor] = {}

        def hook_for(slot: int):
            def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
                captured[slot] = output  # [B, T, H]
                if len(captured) == 3:
                    raise _StopForward

            return hook

        handles = [m.register_forward_hook(hook_for(i)) for i, m in enumerate(self._qkv_modules(layer))]
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and self._adapter.takes_token_type_ids:
            inputs["token_type_ids"] = token_type_ids
        try:
            self.model(**inputs)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if len(captured) != 3:
            raise MiniMoEError(f"teacher {self.name!r} did not run the Q/K/V projections of layer {layer}")
        return captured[0], captured[1], captured[2]


def load_teacher(name_or_path: str | os.PathLike, dtype: torch.dtype | str | None = None) -> Teacher:
    """Load a packaged name, hub model or local directory with eager attention as a frozen `Teacher`.

    A local directory's weights are checked against its config first: a truncated file, a config field that
    does not fit the weights, or a layer the weights lack is one error naming the file and the field (a
    missing layer would otherwise be initialised at random and distilled from without a word).
    """
    path = Path(resolve_model(name_or_path))
    if path.is_dir() and has_weights(path):
        validate_checkpoint(path, AutoModel.from_config, load_pretrained(AutoConfig, path))
    kwargs = {"attn_implementation": "eager"} | ({"dtype": dtype} if dtype is not None else {})
    return Teacher(load_pretrained(AutoModel, name_or_path, **kwargs), name=str(name_or_path))


def check_tokenizer(tokenizer, teacher: Teacher) -> None:
    """Fail early if the tokenizer can emit ids the teacher's embedding matrix does not hold."""
    tokenizer_name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    size, rows = len(tokenizer), teacher.vocab_size
    if size > rows:
        raise MiniMoEError(
            f"tokenizer {tokenizer_name} has {size} tokens but teacher {teacher.name}'s embeddings hold {rows}"
        )
    for field in ("pad_token_id", "cls_token_id"):
        token_id = getattr(tokenizer, field, None)
        if token_id is not None and not 0 <= token_id < rows:
            raise MiniMoEError(
                f"tokenizer {tokenizer_name} has {field}={token_id} but teacher {teacher.name}'s embeddings hold {rows}"
            )
