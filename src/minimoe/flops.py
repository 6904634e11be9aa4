"""FLOP and parameter accounting for MiniMoE students (and any HF encoder).

The entry points:

* `count_flops(model, batch_size, seq_len)` - the FLOPs one forward pass actually executes, measured
  with `torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts as 2 FLOPs).
* `analytic_flops(config, batch_size, seq_len)` - the same number in closed form for a MiniMoE encoder.
* `paper_gflops(config, seq_len)` - the paper's convention: linear-layer multiply-accumulates only,
  (4 H^2 + 2 H I) * T * L, in units of 1e9 (0.68 / 0.91 / 1.36 for 3L / 4L / 6L-384H, 10.9 for
  BERT-base, 38.7 for BERT-large).
* `count_parameters(model)` - total and active (per-token) parameters.
* `distillation_flops(teacher_config, student_config, seq_len)` - one task-agnostic distillation step per
  sequence (teacher forward, student forward and backward, relation head and relation KL), in closed form;
  `teacher_qkv_flops` is its teacher part.

What is counted (by both `count_flops` and `analytic_flops`): matrix multiplications only, at 2 FLOPs
per multiply-add - the Q, K, V and output projections, the attention scores (Q K^T) and context
(P V) products, the FFN of the ONE expert each token is routed to (top-1), the router (E > 1 only),
the pooler (and the classifier of a sequence-classification head). FlopCounterMode does not count,
and so neither does the closed form: embedding lookups, LayerNorm, softmax, GELU, tanh, bias adds,
residual adds, dropout, the gate multiply, the sort/gather of the dispatch and the load-balance loss
(together well under 1% of the total at the paper's shapes).

FlopCounterMode and SDPA on CPU (torch 2.13): `F.scaled_dot_product_attention` on a CPU tensor
dispatches to `aten._scaled_dot_product_flash_attention_for_cpu`, which is NOT in torch's
`flop_registry` (that has only the CUDA flash / efficient / cuDNN kernels, and the CPU kernel is not
CompositeImplicit, so FlopCounterMode cannot decompose it into counted matmuls). Measured naively, the
attention-score and context products silently count 0 FLOPs. `count_flops` therefore passes a
`custom_mapping` for the CPU kernel (and its backward) with torch's own SDPA formulas
(`sdpa_flop_count`: 2 bmm's, 2 * 2 * B * heads * T^2 * head_dim = 4 * B * T^2 * H), so the attention
is counted exactly as the explicit-matmul path (`output_attentions=True`) counts it. Should SDPA fall
back to its math path, that path is made of ordinary bmm's, which are counted once, as usual.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter as _fc
from torch.utils.flop_counter import FlopCounterMode

from minimoe.inference import eval_mode
from minimoe.modeling.moe import use_dispatch
from minimoe.report import si_count

__all__ = [
    "FlopReport",
    "ParamReport",
    "analytic_flops",
    "count_flops",
    "count_parameters",
    "distillation_flops",
    "paper_gflops",
    "teacher_qkv_flops",
]


# ----------------------------------------------------------------------------------------------
# SDPA on CPU: formulas missing from torch's flop registry
# ----------------------------------------------------------------------------------------------


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, dropout_p, ...)."""
    return _fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    """aten._scaled_dot_product_flash_attention_for_cpu_backward(grad_out, query, key, value, ...)."""
    return _fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _cpu_sdpa_mapping() -> dict[Any, Any]:
    """custom_mapping for FlopCounterMode: the CPU flash-attention kernels, when this torch has them."""
    mapping: dict[Any, Any] = {}
    for name, formula in (
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_cpu_flop),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_cpu_backward_flop),
    ):
        packet = getattr(torch.ops.aten, name, None)
        if packet is not None:
            mapping[packet] = formula
    return mapping


# ----------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------


@dataclass
class ParamReport:
    """Parameter counts. `active` = what one token uses: all but the (E-1)/E share of the experts.

    `active` includes the embeddings (they are part of every token's path); `embedding` says how
    many of the parameters they are, for the "non-embedding" convention some papers use.
    """

    total: int
    active: int
    embedding: int = 0
    expert: int = 0  # all expert weights and biases, every expert of every MoE layer
    router: int = 0
    num_experts: int = 1  # the largest E of any MoE layer (1 for dense and non-MiniMoE models)

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding

    def __str__(self) -> str:
        text = f"{si_count(self.total)} params, {si_count(self.active)} active"
        if self.num_experts > 1:
            text += f" (E={self.num_experts})"
        return text


@dataclass
class FlopReport:
    """FLOPs of one forward pass of `batch_size` sequences of `seq_len` tokens (2 FLOPs per MAC).

    `by_op`: aten op -> FLOPs; `by_module`: module name (relative to the model, "" = whole model)
    -> FLOPs of everything run inside it (nested modules are included in their parents).
    """

    total: int
    batch_size: int
    seq_len: int
    by_op: dict[str, int] = field(default_factory=dict)
    by_module: dict[str, int] = field(default_factory=dict)
    paper_gmacs: float | None = None  # paper_gflops(config, seq_len), per sequence
    params: ParamReport | None = None

    @property
    def gflops(self) -> float:
        """Whole batch, in 1e9 FLOPs."""
        return self.total / 1e9

    @property
    def per_sequence(self) -> float:
        return self.total / self.batch_size

    @property
    def gflops_per_sequence(self) -> float:
        return self.per_sequence / 1e9

    def __str__(self) -> str:
        text = f"{si_count(self.per_sequence, 2, ' ')}FLOPs"
        if self.batch_size != 1:
            text += f"/sequence (x{self.batch_size} = {si_count(self.total, 2, ' ')}FLOPs)"
        text += f" at T={self.seq_len}"
        if self.paper_gmacs is not None:
            macs = f"{self.paper_gmacs:.2f} G" if self.paper_gmacs >= 0.01 else si_count(self.paper_gmacs * 1e9, 2, " ")
            text += f" (paper: {macs}MACs)"
        if self.params is not None:
            text += f" | {self.params}"
        return text


# ----------------------------------------------------------------------------------------------
# Measured FLOPs
# ----------------------------------------------------------------------------------------------


def _accepts(model: nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _relative_module_name(name: str, root: str) -> str:
    if name == root:
        return ""
    return name[len(root) + 1 :] if name.startswith(root + ".") else name


def count_flops(
    model: nn.Module,
    batch_size: int = 1,
    seq_len: int = 128,
    *,
    seed: int = 0,
    forward_kwargs: Mapping[str, Any] | None = None,
) -> FlopReport:
    """FLOPs actually executed by one eval-mode forward on random ids (all tokens valid).

    Works for `MiniMoEModel`, `MiniMoEForSequenceClassification` and plain HF encoders (BertModel,
    ...): `attention_mask` (all ones) and `token_type_ids` (zeros) are passed only when the model's
    forward takes them. The SDPA kernel CPU uses is counted through a custom mapping (see the module
    docstring); `forward_kwargs` are passed on (e.g. `output_attentions=True` for the explicit path,
    which counts the same). The model's train/eval mode is restored afterwards. MoE layers run their
    grouped dispatch here, so the zero rows the padded dispatch may add are not counted as model FLOPs.
    """
    config = getattr(model, "config", None)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    if vocab < 2:
        raise ValueError("count_flops needs a model whose config has a vocab_size")
    device = _model_device(model)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=gen)
    pad = getattr(config, "pad_token_id", None)
    if pad is not None and 0 <= pad < vocab:
        ids[ids == pad] = (pad + 1) % vocab  # real tokens only
    inputs: dict[str, Any] = {"input_ids": ids.to(device)}
    if _accepts(model, "attention_mask"):
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if _accepts(model, "token_type_ids"):
        inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    inputs.update(forward_kwargs or {})

    counter = FlopCounterMode(display=False, depth=None, custom_mapping=_cpu_sdpa_mapping())
    with eval_mode(model), torch.no_grad(), use_dispatch(model, "grouped"), counter:
        model(**inputs)

    counts = counter.get_flop_counts()
    by_op = {str(op): int(n) for op, n in counts.get("Global", {}).items()}
    root = type(model).__name__
    by_module = {
        _relative_module_name(name, root): int(sum(ops.values())) for name, ops in counts.items() if name != "Global"
    }
    params = count_parameters(model)
    paper = None
    if config is not None and getattr(config, "hidden_size", None) and getattr(config, "num_hidden_layers", None):
        paper = paper_gflops(config, seq_len)
    return FlopReport(
        total=int(counter.get_total_flops()),
        batch_size=batch_size,
        seq_len=seq_len,
        by_op=by_op,
        by_module=by_module,
        paper_gmacs=paper,
        params=params,
    )


# ----------------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------------


def _intermediate(config) -> int:
    return int(getattr(config, "intermediate_size", None) or 4 * config.hidden_size)


def analytic_flops(config, batch_size: int = 1, seq_len: int = 128, *, pooler: bool = True, num_labels: int = 0) -> int:
    """Closed-form forward FLOPs (2 per multiply-add) of a MiniMoE encoder; matches `count_flops`.

    Per layer and sequence, with T = seq_len, H = hidden, I = ONE expert's width, E = experts:
      Q, K, V, O projections       4 * 2 * T * H^2
      scores Q K^T and context P V 2 * 2 * T^2 * H
      FFN of the routed expert     2 * 2 * T * H * I     (top-1: independent of E)
      router                       2 * T * H * E         (only when E > 1; E = 1 has no router)
    times num_hidden_layers, plus the pooler 2 * H^2 per sequence (`pooler=True`) and a classifier
    2 * H * num_labels (pass `num_labels=config.num_labels` for MiniMoEForSequenceClassification),
    all times batch_size. Embeddings, LayerNorm, softmax, GELU, biases etc. are not counted (nor
    are they by FlopCounterMode). Works for BertConfig too (E = 1).
    """
    T, H, I = seq_len, config.hidden_size, _intermediate(config)
    E = int(getattr(config, "num_experts", 1) or 1)
    per_layer = 8 * T * H * H + 4 * T * T * H + 4 * T * H * I
    if E > 1:
        per_layer += 2 * T * H * E
    per_sequence = config.num_hidden_layers * per_layer
    if pooler:
        per_sequence += 2 * H * H
    per_sequence += 2 * H * num_labels
    return batch_size * per_sequence


def teacher_qkv_flops(config, seq_len: int = 128, layer: int = -1) -> int:
    """FLOPs per sequence of `Teacher.qkv`: the encoder's layers below `layer`, then that layer's Q, K, V projections
    (the forward stops there), as `analytic_flops` counts them."""
    layers, T, H = config.num_hidden_layers, seq_len, config.hidden_size
    return (layer % layers) * (analytic_flops(config, 1, T, pooler=False) // layers) + 3 * 2 * T * H * H


def distillation_flops(
    teacher_config, student_config, seq_len: int = 128, *, teacher_layer: int = -1, relation_head: bool = True
) -> int:
    """FLOPs of one MiniLMv2 distillation step (`RelationDistillation` forward and backward) per sequence of
    `seq_len` real tokens, 2 per multiply-add, counted as `analytic_flops` counts (matmuls only):

      teacher forward (no gradient) through layer `teacher_layer` - 1, then that layer's Q, K, V projections
                                                       (the forward stops there): k * layer + 3 * 2 * T * Ht^2
      student forward and backward (the backward computes input and weight gradients: 2x the forward)
                                                       3 * analytic_flops(student, pooler=False)
      the extra relation head (Q, K, V on the last hidden states)   3 * 3 * 2 * T * Hs^2
      or, with `relation_head=False` (the student's own last-layer Q/K/V), no head, and no backward through the
      rest of the last layer (attention, output projection, FFN), which the loss does not reach
      relation scores X X^T of Q, K and V: teacher forward, student forward and backward (both operands)
                                                       3 * 2 * T^2 * Ht + 3 * 3 * 2 * T^2 * Hs

    The optimizer, softmaxes, the KL itself and the balance loss are not matmuls. tests/test_flops.py checks the sum
    against FlopCounterMode over a real step; about 0.20 GFLOP a token from BERT-base into 3L-384H (E = 4).
    """
    T, Ht, Hs = seq_len, teacher_config.hidden_size, student_config.hidden_size
    teacher = teacher_qkv_flops(teacher_config, T, teacher_layer)
    student_forward = analytic_flops(student_config, 1, T, pooler=False)
    if relation_head:
        student = 3 * student_forward + 3 * 3 * 2 * T * Hs * Hs
    else:
        last_layer_beyond_qkv = student_forward // student_config.num_hidden_layers - 3 * 2 * T * Hs * Hs
        student = 3 * student_forward - 2 * last_layer_beyond_qkv
    relations = 3 * 2 * T * T * Ht + 3 * 3 * 2 * T * T * Hs
    return teacher + student + relations


def paper_gflops(config, seq_len: int = 128, *, include_router: bool = False) -> float:
    """The paper's "FLOPs": linear-layer multiply-accumulates per sequence, in units of 1e9.

    (4 H^2 + 2 H I) * T * L, i.e. 12 d^2 T L for a standard layer with I = 4d. Embeddings, the
    attention-score/context matmuls and the pooler are excluded, and so by default is the router
    (H * E MACs per token and layer, ~0.1% at 384H / E = 4: `include_router=True` adds it).
    Gives 0.68 / 0.91 / 1.36 for 3L / 4L / 6L-384H (I = 1536), 10.9 for BERT-base, 38.7 for BERT-large.
    """
    H, I, L = config.hidden_size, _intermediate(config), config.num_hidden_layers
    per_token_layer = 4 * H * H + 2 * H * I
    E = int(getattr(config, "num_experts", 1) or 1)
    if include_router and E > 1:
        per_token_layer += H * E
    return per_token_layer * seq_len * L / 1e9


# ----------------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> ParamReport:
    """Total and active (per-token) parameters; shared tensors are counted once.

    For every `MoEFeedForward` with E experts, a token uses one expert, so (E-1)/E of its expert
    weights and biases (w_in, b_in, w_out, b_out) are inactive: active = total - sum over layers of
    that share. The router, attention, LayerNorms and embeddings are always active. For models without
    MoE layers active == total. `embedding` = parameters of all nn.Embedding modules.
    """
    from minimoe.modeling.moe import MoEFeedForward  # local: keep `import minimoe.flops` light

    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # model.parameters() already de-duplicates tied weights
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    expert = router = inactive = 0
    max_e = 1
    for m in model.modules():
        if isinstance(m, MoEFeedForward):
            n = sum(t.numel() for t in (m.w_in, m.b_in, m.w_out, m.b_out))
            E = m.num_experts
            expert += n
            inactive += n // E * (E - 1)
            max_e = max(max_e, E)
            if m.router is not None:
                router += sum(p.numel() for p in m.router.parameters())
    return ParamReport(
        total=total, active=total - inactive, embedding=embedding, expert=expert, router=router, num_experts=max_e
    )
