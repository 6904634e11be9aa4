"""`MiniMoEConfig`: a BERT encoder config whose FFNs are mixtures of minimal experts."""

from __future__ import annotations

from transformers import PretrainedConfig

from minimoe.errors import MiniMoEError

# Families whose position ids start after the padding index (pad_token_id + 1), as RoBERTa's do.
PADDING_OFFSET_FAMILIES = frozenset(
    {"roberta", "roberta-prelayernorm", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "data2vec-text"}
    | {"xmod", "ibert", "longformer"}
)


def position_limit(config: PretrainedConfig) -> int | None:
    """The most tokens a model of this config can embed: its position table, less the pad_token_id + 1 offset
    of the RoBERTa-style families (514 -> 512); None for a config without a position table.
    """
    table = getattr(config, "max_position_embeddings", None)
    if not table:
        return None
    if getattr(config, "model_type", "") in PADDING_OFFSET_FAMILIES:
        return table - (getattr(config, "pad_token_id", 1) or 0) - 1
    return table


class MiniMoEConfig(PretrainedConfig):
    """Config of a MiniMoE encoder.

    `intermediate_size` is the width of ONE expert (the dense student's FFN width), so the
    per-token compute is that of a dense BERT of the same shape; `num_experts = 1` is a plain BERT.
    `expert_dispatch` names the strategy in `modeling/dispatch.py` that runs the experts ("auto"; "masked" or
    "dense" for export), checked there when the model is built: this file becomes a saved model's
    configuration_minimoe.py, which cannot import the modeling file. Not `experts_implementation`:
    transformers reserves that name for its own registry.
    """

    model_type = "minimoe"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 384,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 12,
        intermediate_size: int = 1536,
        num_experts: int = 4,
        router_noise: float = 0.1,
        router_aux_loss_coef: float = 0.01,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        classifier_dropout: float | None = None,
        expert_dispatch: str = "auto",
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.num_experts = num_experts
        self.router_noise = router_noise
        self.router_aux_loss_coef = router_aux_loss_coef
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.classifier_dropout = classifier_dropout
        self.expert_dispatch = expert_dispatch
        self.validate_shapes()

    def validate_shapes(self) -> None:
        """Reject shapes the encoder cannot build, naming the offending field."""
        for field in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "num_experts",
            "max_position_embeddings",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise MiniMoEError(f"config field {field} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise MiniMoEError(
                f"config field hidden_size ({self.hidden_size}) must be divisible by "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if not 0.0 <= self.router_noise < 1.0:
            raise MiniMoEError(f"config field router_noise must be in [0, 1), got {self.router_noise}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def for_student(
        cls,
        layers: int,
        hidden: int,
        experts: int = 4,
        heads: int = 0,
        intermediate: int = 0,
        teacher: PretrainedConfig | None = None,
        **overrides,
    ) -> MiniMoEConfig:
        """The one place student shapes get their defaults: heads = hidden / 32 (the paper's head size),
        per-expert FFN width = 4 x hidden; vocabulary, positions and special tokens from `teacher`.
        """
        fields = dict(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads or max(1, hidden // 32),
            intermediate_size=intermediate or 4 * hidden,
            num_experts=experts,
        )
        if teacher is not None:
            fields |= dict(
                vocab_size=teacher.vocab_size,
                max_position_embeddings=position_limit(teacher) or 512,  # the student counts positions from 0
                type_vocab_size=max(2, getattr(teacher, "type_vocab_size", 2) or 2),
                pad_token_id=getattr(teacher, "pad_token_id", 0) or 0,
            )
        return cls(**(fields | overrides))
