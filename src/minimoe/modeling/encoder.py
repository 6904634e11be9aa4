"""The MiniMoE encoder: BERT embeddings and post-LN attention, MoE feed-forward layers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from minimoe.errors import MiniMoEError
from minimoe.modeling.config import MiniMoEConfig
from minimoe.modeling.loading import read_config, validate_checkpoint
from minimoe.modeling.moe import MoEFeedForward, Router, load_balance_loss


@dataclass
class MiniMoEModelOutput(ModelOutput):
    """Encoder output. `qkv` holds each layer's (query, key, value) projections, each [B, T, H]."""

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None
    aux_loss: torch.FloatTensor | None = None
    qkv: tuple[tuple[torch.FloatTensor, torch.FloatTensor, torch.FloatTensor], ...] | None = None


class MiniMoEEmbeddings(nn.Module):
    """Word + absolute position + token type embeddings, LayerNorm, dropout (as BERT)."""

    def __init__(self, config: MiniMoEConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """input_ids [B, T] -> [B, T, H]."""
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)  # [T]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x))


class MiniMoEAttention(nn.Module):
    """Multi-head self-attention with output projection, residual and post-LayerNorm."""

    def __init__(self, config: MiniMoEConfig):
        super().__init__()
        H = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.dense = nn.Linear(H, H)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.attn_dropout = config.attention_probs_dropout_prob
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, H] -> [B, nh, T, hd]."""
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, h: torch.Tensor, keep: torch.Tensor, output_attentions: bool = False):
        """h [B, T, H], keep [B, 1, 1, T] (True = attend) -> (out [B, T, H], probs or None, (q, k, v))."""
        q, k, v = self.query(h), self.key(h), self.value(h)  # each [B, T, H]
        qh, kh, vh = self.split_heads(q), self.split_heads(k), self.split_heads(v)  # [B, nh, T, hd]
        dropout_p = self.attn_dropout if self.training else 0.0
        probs = None
        if output_attentions:
            scores = qh @ kh.transpose(-1, -2) / math.sqrt(self.head_dim)  # [B, nh, T, T]
            probs = scores.masked_fill(~keep, torch.finfo(scores.dtype).min).softmax(dim=-1)
            context = F.dropout(probs, dropout_p, self.training) @ vh  # [B, nh, T, hd]
        else:
            context = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=keep, dropout_p=dropout_p)
        B, _, T, _ = context.shape
        context = context.transpose(1, 2).reshape(B, T, -1)  # [B, T, H]
        out = self.LayerNorm(h + self.dropout(self.dense(context)))
        return out, probs, (q, k, v)


class MiniMoELayer(nn.Module):
    """One transformer layer: dense attention, then the mixture-of-minimal-experts FFN."""

    def __init__(self, config: MiniMoEConfig):
        super().__init__()
        self.attention = MiniMoEAttention(config)
        self.ffn = MoEFeedForward(config)

    def forward(self, h: torch.Tensor, keep: torch.Tensor, output_attentions: bool = False):
        a, probs, qkv = self.attention(h, keep, output_attentions)
        out, router_logits = self.ffn(a)
        return out, probs, qkv, router_logits


class MiniMoEEncoder(nn.Module):
    def __init__(self, config: MiniMoEConfig):
        super().__init__()
        self.layer = nn.ModuleList(MiniMoELayer(config) for _ in range(config.num_hidden_layers))


class MiniMoEPooler(nn.Module):
    """Linear + tanh on the first ([CLS]) token, as BERT's pooler."""

    def __init__(self, config: MiniMoEConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(h[:, 0]))  # [B, H]


class MiniMoEPreTrainedModel(PreTrainedModel):
    """Weight init and HF plumbing shared by the MiniMoE models."""

    config_class = MiniMoEConfig
    base_model_prefix = "minimoe"
    _no_split_modules = ["MiniMoELayer"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """transformers' loader, after checking a local directory so a bad one fails in one clear line."""
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            if path.exists() or path.is_absolute() or str(pretrained_model_name_or_path).startswith("."):
                raise MiniMoEError(f"{path} is not a model directory")
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        config = kwargs.pop("config", None)
        if not isinstance(config, MiniMoEConfig):
            model_type = read_config(path).get("model_type")
            if model_type != "minimoe":
                raise MiniMoEError(
                    f"{path / 'config.json'} field model_type is {model_type!r}, not 'minimoe' "
                    "(the authors' released checkpoints load after `minimoe convert`)"
                )
            # loading options are the model's, not config fields (transformers pops them the same way)
            held = {k: kwargs.pop(k) for k in ("dtype", "torch_dtype", "device_map") if k in kwargs}
            try:
                config, kwargs = MiniMoEConfig.from_pretrained(path, return_unused_kwargs=True, **kwargs)
            except MiniMoEError as err:
                raise MiniMoEError(f"{path / 'config.json'}: {err}") from None
            kwargs |= held
        validate_checkpoint(path, cls, config, kwargs.get("ignore_mismatched_sizes", False))
        return super().from_pretrained(path, *model_args, config=config, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT init (N(0, 0.02)) everywhere but the router, which keeps PyTorch's Linear default."""
        if isinstance(module, Router):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.in_features)
            init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, MoEFeedForward):
            init.normal_(module.w_in, mean=0.0, std=self.config.initializer_range)
            init.normal_(module.w_out, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.b_in)
            init.zeros_(module.b_out)
        else:
            super()._init_weights(module)


class MiniMoEModel(MiniMoEPreTrainedModel):
    """The bare MiniMoE encoder. Returns hidden states, router logits and the load-balance loss."""

    # a distilled student has no pooler; a fine-tuned checkpoint's classifier is not part of the bare encoder
    _keys_to_ignore_on_load_missing = [r"(^|\.)pooler\."]
    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: MiniMoEConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = MiniMoEEmbeddings(config)
        self.encoder = MiniMoEEncoder(config)
        self.pooler = MiniMoEPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        output_qkv: bool = False,
        output_aux_loss: bool | None = None,
    ) -> MiniMoEModelOutput:
        """input_ids [B, T], attention_mask [B, T] (1 = token, 0 = padding); a tuple with return_dict=False.

        `aux_loss` is computed in training mode or when `output_aux_loss=True`: it is a training loss, and its
        ~15 small ops per layer are a visible share of a tiny student's batch-1 inference latency.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, T]
        h = self.embeddings(input_ids, token_type_ids)  # [B, T, H]
        hidden, attentions, qkvs, router_logits = [h], [], [], []
        for layer in self.encoder.layer:
            h, probs, qkv, logits = layer(h, keep, output_attentions)
            hidden.append(h)
            attentions.append(probs)
            qkvs.append(qkv)
            if logits is not None:
                router_logits.append(logits)
        aux_loss = None
        if router_logits and (self.training if output_aux_loss is None else output_aux_loss):
            aux_loss = torch.stack([load_balance_loss(lg, attention_mask) for lg in router_logits]).mean()
        return MiniMoEModelOutput(
            last_hidden_state=h,
            pooler_output=self.pooler(h) if self.pooler is not None else None,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            router_logits=tuple(router_logits) or None,
            aux_loss=aux_loss,
            qkv=tuple(qkvs) if output_qkv else None,
        )
