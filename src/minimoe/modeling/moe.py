"""The mixture-of-minimal-experts FFN: top-1 routing, dropless, sorted grouped dispatch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

from minimoe.modeling.config import MiniMoEConfig


class Router(nn.Linear):
    """hidden -> E logits. Its own class so weight init can keep PyTorch's default (as the paper does)."""


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


class MoEFeedForward(nn.Module):
    """Post-LN BERT FFN made of E experts, each as wide as the dense FFN; top-1 routed.

    y = LayerNorm(h + p_e * Dropout(W2_e act(W1_e h + b1_e) + b2_e)), e = argmax softmax(router(h)).
    Expert weights are stacked ([E, out, in]) so moefy, conversion and dispatch index one tensor.
    With E = 1 there is no router and the layer is numerically a standard BERT FFN.
    """

    # Zero rows per expert the batched path may add before E separate matmuls are cheaper: 16, or one per
    # 128 tokens when that is more. Measured on 2 CPU cores (docs/performance.md): a separate call costs
    # ~17 rows at 128 tokens, and at 4096 tokens the batched path wins from E = 16 (1.20 vs 1.28 x dense)
    # but not at E = 4 (1.10 vs 1.07), where balanced groups still differ by ~30 rows.
    PAD_ROWS_PER_EXPERT = 16
    PAD_ROWS_PER_TOKEN = 1 / 128
    dispatch_mode = "auto"  # or "padded" / "grouped" to force one path (tests, benchmarks, FLOPs counting)

    def __init__(self, config: MiniMoEConfig):
        super().__init__()
        E, H, I = config.num_experts, config.hidden_size, config.intermediate_size
        self.num_experts = E
        self.router_noise = config.router_noise
        self.router = Router(H, E) if E > 1 else None
        self.w_in = nn.Parameter(torch.empty(E, I, H))
        self.b_in = nn.Parameter(torch.empty(E, I))
        self.w_out = nn.Parameter(torch.empty(E, H, I))
        self.b_out = nn.Parameter(torch.empty(E, H))
        self.act = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(H, eps=config.layer_norm_eps)

    def expert(self, x: torch.Tensor, e: int) -> torch.Tensor:
        """Expert e on tokens x [n, H] -> [n, H]."""
        return F.linear(self.act(F.linear(x, self.w_in[e], self.b_in[e])), self.w_out[e], self.b_out[e])

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router logits [N, E] (noisy in training), chosen expert [N] and its probability [N]."""
        logits = self.router(x)  # [N, E]
        if self.training and self.router_noise > 0:
            logits = logits + torch.empty_like(logits).uniform_(-self.router_noise, self.router_noise)
        gate, index = expert_major_probs(logits).max(dim=0)  # [N], [N]
        return logits, index, gate

    def dispatch(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Run each token through its expert: x [N, H], index [N] -> [N, H].

        Tokens are sorted by expert. When the groups are near equal (padding them to the largest adds fewer
        rows than E separate matmul calls cost) they go through one batched matmul pair; otherwise one
        matmul pair per group. The group sizes go to the host once per layer (free on CPU). Both paths give
        the same outputs and gradients.
        """
        E, N = self.num_experts, x.shape[0]
        order = index.argsort(stable=True)  # [N]
        counts = torch.bincount(index, minlength=E)  # [E]
        capacity = int(counts.max())
        allowed = E * max(self.PAD_ROWS_PER_EXPERT, N * self.PAD_ROWS_PER_TOKEN)  # zero rows worth one call each
        near_equal = E * capacity - N <= allowed
        if self.dispatch_mode == "padded" or (self.dispatch_mode == "auto" and near_equal):
            return self._dispatch_padded(x, index, order, counts, capacity)
        return self._dispatch_grouped(x, order, counts.tolist())

    def _dispatch_padded(
        self, x: torch.Tensor, index: torch.Tensor, order: torch.Tensor, counts: torch.Tensor, capacity: int
    ) -> torch.Tensor:
        """Groups zero-padded to `capacity` rows, then two batched matmuls over all experts at once."""
        E, C, (N, H) = self.num_experts, capacity, x.shape
        starts = counts.cumsum(0) - counts  # [E]
        sorted_index = index[order]  # [N]
        rank = torch.arange(N, device=x.device) - starts[sorted_index]  # [N] place within its group
        slot = torch.empty_like(order)
        slot[order] = sorted_index * C + rank  # [N] row of each token in the padded [E * C] layout
        padded = x.new_zeros(E * C, H).index_copy(0, slot, x).view(E, C, H)  # [E, C, H]
        inner = self.act(torch.baddbmm(self.b_in.unsqueeze(1), padded, self.w_in.transpose(1, 2)))  # [E, C, I]
        out = torch.baddbmm(self.b_out.unsqueeze(1), inner, self.w_out.transpose(1, 2))  # [E, C, H]
        return out.view(E * C, H).index_select(0, slot)  # [N, H]; padded rows never read, so no gradient

    def _dispatch_grouped(self, x: torch.Tensor, order: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """One matmul pair per expert group, on the tokens sorted by expert.

        Weights are unbound (not indexed) so backward writes each expert's gradient slice once.
        """
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        w_in, b_in, w_out, b_out = (p.unbind(0) for p in (self.w_in, self.b_in, self.w_out, self.b_out))
        groups = Permute.apply(x, order, inverse).split(counts)  # E x [n_e, H]
        y_sorted = torch.cat(
            [F.linear(self.act(F.linear(g, w_in[e], b_in[e])), w_out[e], b_out[e]) for e, g in enumerate(groups)]
        )  # [N, H]
        return Permute.apply(y_sorted, inverse, order)  # [N, H]

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h [B, T, H] -> (output [B, T, H], router logits [B, T, E] or None when E = 1)."""
        B, T, H = h.shape
        x = h.reshape(B * T, H)  # [N, H]
        if self.router is None:
            return self.LayerNorm(h + self.dropout(self.expert(x, 0)).view(B, T, H)), None
        logits, index, gate = self.route(x)
        y = self.dropout(self.dispatch(x, index))  # [N, H]
        y = y * gate.unsqueeze(-1).to(y.dtype)
        return self.LayerNorm(h + y.view(B, T, H)), logits.view(B, T, -1)


@contextmanager
def grouped_dispatch(model: nn.Module) -> Iterator[None]:
    """Within the block every MoE layer of `model` runs one matmul pair per expert group, never padded.

    For counting the FLOPs of the top-1 computation itself: the padded path's zero rows are an
    execution choice, not model compute.
    """
    layers = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    saved = [m.dispatch_mode for m in layers]
    for m in layers:
        m.dispatch_mode = "grouped"
    try:
        yield
    finally:
        for m, mode in zip(layers, saved):
            m.dispatch_mode = mode


def expert_major_probs(logits: torch.Tensor) -> torch.Tensor:
    """Router probabilities, expert-major: logits [..., E] -> fp32 [E, N].

    On CPU a softmax over a contiguous leading dim of size E is ~5x faster than over a last dim of size E
    (measured at N = 4096, E = 4: 33 vs 186 us with the max), which matters next to a tiny student's FFN.
    """
    return logits.float().reshape(-1, logits.shape[-1]).T.contiguous().softmax(dim=0)


def load_balance_loss(router_logits: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Switch-Transformer balance loss of one layer: E * sum_i mean_t p_{t,i} * frac_t(argmax = i).

    router_logits [B, T, E]; padding tokens (attention_mask = 0) are left out. Equals 1 when balanced.
    """
    E = router_logits.shape[-1]
    probs = expert_major_probs(router_logits)  # [E, N]
    if attention_mask is None:
        weight = probs.new_ones(probs.shape[1])
    else:
        weight = attention_mask.reshape(-1).to(probs.dtype)  # [N]
    total = weight.sum().clamp_min(1.0)
    mean_prob = probs @ weight / total  # [E]
    chosen = probs.max(dim=0).indices  # [N]; argmax over dim 0 is ~10x slower on CPU
    fraction = torch.bincount(chosen, weights=weight, minlength=E) / total  # [E], no gradient
    return E * (mean_prob * fraction).sum()


def with_balance_loss(loss: torch.Tensor, aux_loss: torch.Tensor | None, coef: float) -> torch.Tensor:
    """The paper's total objective: task loss + coef x balance loss (unchanged when there is no router)."""
    return loss if aux_loss is None else loss + coef * aux_loss
