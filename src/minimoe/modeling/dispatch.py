"""Expert dispatch strategies: how top-1 routed tokens reach their expert, one function each, chosen by name.

As Hugging Face's MoE models pick an *experts implementation* (`eager`, `batched_mm`, `grouped_mm`) from the
config, `MiniMoEConfig.expert_dispatch` names one of `DISPATCH` here (checked by `strategy` when a layer is built,
since the config file of a saved model's remote code cannot import this one); `use_dispatch` (moe.py) switches a
model's layers for a block: FLOPs counting, export (`EXPORTABLE` only) and the benchmarks. Every strategy maps
x [N, H] and the chosen expert index [N] to the experts' outputs [N, H], with the same outputs and gradients as a
per-expert loop:

- `padded`: tokens sorted by expert, groups zero-padded to the largest, one `baddbmm` pair over all experts.
- `grouped`: tokens sorted by expert, one matmul pair per group (no padded rows, E calls).
- `auto`: `padded` when padding adds fewer rows than E separate calls cost, else `grouped` (the default).
- `masked`: per expert, the rows of a mask (nonzero), the expert, the rows written back: top-1 FLOPs, no
  host sync of its own (the row counts stay symbolic), so torch.export and ONNX (NonZero) express it.
- `dense`: every expert on every token, then each token's row is picked: static shapes, no data-dependent
  control flow or host sync, so it traces, exports and compiles anywhere. It costs E x the expert FLOPs
  and an [E, N, 4H] activation; an export fallback, not an eager path.

`padded` and `grouped` read the group sizes on the host once per layer (`counts.max()` / `counts.tolist()`);
on CPU that is a few microseconds, not a device sync. The expert weights are the parameters themselves
(`MoEFeedForward.weights`), in inference too: a cached copy could go stale (benchmarks/weight_cache.py
measures what one would save).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from minimoe.errors import MiniMoEError

# Zero rows per expert the padded path may add before E separate matmuls are cheaper: 16, or one per 128 tokens
# when that is more. Measured on 2 CPU cores (docs/performance.md): a separate call costs ~17 rows at 128 tokens,
# and at 4096 tokens padding wins from E = 16 (1.20 vs 1.28 x dense) but not at E = 4 (1.10 vs 1.07), where
# balanced groups still differ by ~30 rows.
PAD_ROWS_PER_EXPERT = 16
PAD_ROWS_PER_TOKEN = 1 / 128


class Permute(torch.autograd.Function):
    """Rows gathered by a permutation; its backward is the inverse gather (not index_select's scatter-add)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(0, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def experts_pair(act: Callable, x: torch.Tensor, w_in, b_in, w_out, b_out) -> torch.Tensor:
    """act(x W_in^T + b_in) W_out^T + b_out: x [E, C, H] with stacked weights [E, out, in], or x [C, H] with one."""
    if x.dim() == 2:
        return F.linear(act(F.linear(x, w_in, b_in)), w_out, b_out)  # [C, H]
    inner = act(torch.baddbmm(b_in.unsqueeze(1), x, w_in.mT))  # [E, C, I]
    return torch.baddbmm(b_out.unsqueeze(1), inner, w_out.mT)  # [E, C, H]


def padded(ffn, x: torch.Tensor, index: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
    """Groups zero-padded to the largest (C rows each), then one batched matmul pair over all experts."""
    E, H = ffn.num_experts, x.shape[1]
    if counts is None:
        counts = torch.bincount(index, minlength=E)  # [E]
    C = int(counts.max())
    # Place of each token within its expert's group, without a sort: running count of its expert so far.
    rank = F.one_hot(index, E).cumsum(0).gather(1, index.unsqueeze(1)).squeeze(1) - 1  # [N]
    slot = index * C + rank  # [N] row of each token in the padded [E * C] layout
    groups = x.new_zeros(E * C, H).index_copy(0, slot, x).view(E, C, H)  # [E, C, H]
    out = experts_pair(ffn.act, groups, *ffn.weights())  # [E, C, H]
    return out.view(E * C, H).index_select(0, slot)  # [N, H]; padded rows never read, so no gradient


def grouped(ffn, x: torch.Tensor, index: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
    """One matmul pair per expert group, on the tokens sorted by expert.

    Weights are unbound (not indexed) so backward writes each expert's gradient slice once.
    """
    E = ffn.num_experts
    if counts is None:
        counts = torch.bincount(index, minlength=E)  # [E]
    order = index.argsort(stable=True)  # [N]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    per_expert = list(zip(*(w.unbind(0) for w in ffn.weights())))  # E x (w_in, b_in, w_out, b_out)
    groups = Permute.apply(x, order, inverse).split(counts.tolist())  # E x [n_e, H]
    y_sorted = torch.cat([experts_pair(ffn.act, g, *per_expert[e]) for e, g in enumerate(groups)])  # [N, H]
    return Permute.apply(y_sorted, inverse, order)  # [N, H]


def auto(ffn, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`padded` when the groups are near equal (padding adds fewer rows than E calls cost), else `grouped`."""
    E, N = ffn.num_experts, x.shape[0]
    counts = torch.bincount(index, minlength=E)  # [E]
    allowed = E * max(PAD_ROWS_PER_EXPERT, N * PAD_ROWS_PER_TOKEN)  # zero rows worth one call each
    near_equal = E * int(counts.max()) - N <= allowed
    return (padded if near_equal else grouped)(ffn, x, index, counts)


def dense(ffn, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, then each token's own expert row: static shapes, E x the expert FLOPs."""
    E, (N, H) = ffn.num_experts, x.shape
    out = experts_pair(ffn.act, x.unsqueeze(0).expand(E, N, H), *ffn.weights())  # [E, N, H]
    return out.gather(0, index.view(1, N, 1).expand(1, N, H)).squeeze(0)  # [N, H]


def masked(ffn, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per expert: its tokens' rows (nonzero of a mask), the expert, the rows written back (index_copy)."""
    y = torch.zeros_like(x)  # [N, H]
    per_expert = list(zip(*(w.unbind(0) for w in ffn.weights())))  # E x (w_in, b_in, w_out, b_out)
    for e, weights in enumerate(per_expert):
        rows = (index == e).nonzero().squeeze(1)  # [n_e]
        y = y.index_copy(0, rows, experts_pair(ffn.act, x.index_select(0, rows), *weights))  # [N, H]
    return y


DISPATCH: dict[str, Callable[..., torch.Tensor]] = {
    "auto": auto,
    "padded": padded,
    "grouped": grouped,
    "dense": dense,
    "masked": masked,
}
EXPORTABLE = ("masked", "dense")
"""The strategies that trace into a torch.export / ONNX graph (no host reads of group sizes)."""


def strategy(name: str, exportable: bool = False) -> Callable[..., torch.Tensor]:
    """The dispatch function called `name` (an exportable one when asked), or one clear error naming the choices."""
    choices = EXPORTABLE if exportable else tuple(DISPATCH)
    if name not in choices:
        kind = "exportable expert dispatch" if exportable else "expert_dispatch"
        raise MiniMoEError(f"{kind} must be one of {', '.join(choices)}, got {name!r}")
    return DISPATCH[name]
