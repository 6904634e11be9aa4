"""Dispatch strategies compared on the same MoE FFN weights and inputs: sorted (ours), the naive loop with
boolean masks (the authors' release) and a dense one-hot einsum, against the dense FFN, forward and backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minimoe.modeling import MoEFeedForward
from moe_layer import NaiveMoEFeedForward, build, inference_fn, train_fn
from timing import attach_peak_memory, interleaved, median_ms, paired_ratio

from .presets import Preset, log
from .routing import routing_of


class OneHotMoEFeedForward(MoEFeedForward):
    """Dense one-hot dispatch: every expert computes every token, a one-hot [N, E] mask keeps the routed one.

    E times the FLOPs and E x [N, I] activations; the simplest vectorised form (no sort, no host sync).
    """

    def dispatch(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        hidden = self.act(torch.einsum("nh,eih->eni", x, self.w_in) + self.b_in[:, None, :])  # [E, N, I]
        out = torch.einsum("eni,ehi->enh", hidden, self.w_out) + self.b_out[:, None, :]  # [E, N, H]
        chosen = F.one_hot(index, self.num_experts).to(out.dtype)  # [N, E]
        return torch.einsum("enh,ne->nh", out, chosen)  # [N, H]


def bench_dispatch(p: Preset) -> dict:
    """Sorted vs naive vs one-hot dispatch (and the dense FFN), random-init router, at batch 1 and large batch."""
    H, E = p.layer_hidden, 4
    B, T = p.layer_tokens
    sorted_ = build(MoEFeedForward, H, E)
    variants = {
        "sorted (ours)": sorted_,
        "naive loop+masks": build(NaiveMoEFeedForward, H, E),
        "one-hot einsum": build(OneHotMoEFeedForward, H, E),
        "dense FFN (E=1)": build(MoEFeedForward, H, 1),
    }
    for name in ("naive loop+masks", "one-hot einsum"):
        variants[name].load_state_dict(sorted_.state_dict())
    rows, routing, match = [], {}, {}
    for batch, repeats in ((1, p.repeats_small), (B, p.repeats_dispatch)):
        h = torch.randn(batch, T, H, generator=torch.Generator().manual_seed(1))  # [batch, T, H]
        with torch.no_grad():
            ref = sorted_.eval()(h)[0]
            match[batch] = {
                name: bool(torch.allclose(m.eval()(h)[0], ref, atol=1e-5))
                for name, m in variants.items()
                if name not in ("sorted (ours)", "dense FFN (E=1)")
            }
        routing[batch] = routing_of(sorted_, h)[0]
        cases = {f"inference/{name}": inference_fn(m, h) for name, m in variants.items()}
        cases |= {f"train/{name}": train_fn(m, h) for name, m in variants.items()}
        log(f"  {len(cases)} cases at {batch}x{T}, E={E} x {repeats} interleaved repeats ...")
        times, _ = interleaved(cases, repeats)
        group = []
        for key, t in times.items():
            mode, name = key.split("/", 1)
            group.append(
                {
                    "batch": batch,
                    "seq": T,
                    "mode": mode,
                    "variant": name,
                    "ms": median_ms(t),
                    "ratio_vs_sorted": paired_ratio(t, times[f"{mode}/sorted (ours)"]),
                    "ratio_vs_dense": paired_ratio(t, times[f"{mode}/dense FFN (E=1)"]),
                }
            )
        for m in variants.values():
            m.eval()
        attach_peak_memory([r for r in group if r["mode"] == "inference"], [cases[f"inference/{n}"] for n in variants])
        rows += group
    return {
        "batch": B,
        "seq": T,
        "batches": [1, B],
        "hidden": H,
        "experts": E,
        "routing": "random-init router",
        "load": {str(k): v["groups"] for k, v in routing.items()},
        "sorted_dispatch_path": {str(k): v["path"] for k, v in routing.items()},
        "outputs_match_sorted": all(all(v.values()) for v in match.values()),
        "outputs_match_by_batch": {str(k): v for k, v in match.items()},
        "rows": rows,
    }
