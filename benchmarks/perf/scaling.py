"""How the MoE FFN layer's cost grows: with the number of experts (balanced and random-init routers), with
sequence length and with batch size (dense vs MoE E = 4, balanced routers), time and peak memory."""

from __future__ import annotations

import torch

from minimoe.modeling import MoEFeedForward
from moe_layer import build, inference_fn
from timing import attach_peak_memory, interleaved, median_ms, paired_ratio

from .presets import TARGETS, Preset, log
from .routing import CALIBRATION_SEED, balance_routers_, routing_of

TIMED_SEED = 1


def layer_case(
    p: Preset, experts: int, batch: int, seq: int, balanced: bool = True
) -> tuple[MoEFeedForward, torch.Tensor]:
    """A `MoEFeedForward` (hidden p.layer_hidden, per-expert width 4 x hidden), eval mode, and its timed input
    h [batch, seq, H]; routers balanced on a calibration input of the experts sweep's size unless `balanced`
    is False (random-init routers)."""
    H = p.layer_hidden
    module = build(MoEFeedForward, H, experts).eval()
    if balanced:
        calibration = torch.randn(*p.layer_tokens, H, generator=torch.Generator().manual_seed(CALIBRATION_SEED))
        balance_routers_(module, calibration, p.balance_steps, p.balance_lr)
    return module, torch.randn(batch, seq, H, generator=torch.Generator().manual_seed(TIMED_SEED))


def bench_experts(p: Preset) -> dict:
    """Time vs E at fixed per-expert width, balanced and random-init routers in one group; target on balanced."""
    B, T = p.layer_tokens
    cases, loads = {}, {}
    for E in p.layer_experts:
        for regime in ("balanced", "random") if E > 1 else ("balanced",):
            key = f"E={E} {regime}"
            module, h = layer_case(p, E, B, T, balanced=regime == "balanced")
            cases[key] = inference_fn(module, h)
            loads[key] = routing_of(module, h)[0] if E > 1 else {"groups": [B * T], "path": None}
    log(
        f"  experts {list(p.layer_experts)} at {B}x{T}, balanced and random routers: x {p.repeats_layer} "
        "interleaved repeats ..."
    )
    times, _ = interleaved(cases, p.repeats_layer)
    base = times["E=1 balanced"]
    rows = []
    for E in p.layer_experts:
        row = {"experts": E}
        for regime, suffix in (("balanced", ""), ("random", "_random_routers")):
            key = f"E={E} {regime if E > 1 else 'balanced'}"  # E = 1 has no router: the same case for both
            load = loads[key]["groups"]
            row |= {
                f"ms{suffix}": median_ms(times[key]),
                f"ratio_vs_e1{suffix}": paired_ratio(times[key], base),
                f"load{suffix}": load,
                f"max_load_over_mean{suffix}": max(load) * len(load) / sum(load),
                f"dispatch_path{suffix}": loads[key]["path"],
            }
        rows.append(row)
    attach_peak_memory(rows, [cases[f"E={E} balanced"] for E in p.layer_experts])
    top = max(p.layer_experts)
    ratio = paired_ratio(times[f"E={top} balanced"], base)
    return {
        "batch": B,
        "seq": T,
        "rows": rows,
        "routing": "balanced routers (random-init: the *_random_routers keys)",
        "ratio_max_over_1": ratio,
        "ratio_max_over_1_random_routers": paired_ratio(times[f"E={top} random"], base) if top > 1 else 1.0,
        "max_experts": top,
        "target": TARGETS["experts_16_over_1"],
        "met": ratio <= TARGETS["experts_16_over_1"],
    }


def bench_sweep(p: Preset, key: str) -> dict:
    """Dense (E = 1) and MoE (E = 4, balanced routers) vs sequence length (key "seq") or batch size ("batch")."""
    sizes, fixed = (p.sweep_seqs, p.sweep_seq_batch) if key == "seq" else (p.sweep_batches, p.layer_tokens[1])
    cases, shapes = {}, {}
    for size in sizes:
        batch, seq = (fixed, size) if key == "seq" else (size, fixed)
        for E in (1, 4):
            module, h = layer_case(p, E, batch, seq)
            cases[f"{size}/{E}"], shapes[f"{size}/{E}"] = inference_fn(module, h), (size, E, batch, seq)
    log(f"  {key} sweep {list(sizes)}: {len(cases)} cases x {p.repeats_layer} interleaved repeats ...")
    times, _ = interleaved(cases, p.repeats_layer)
    rows = []
    for name, (size, E, batch, seq) in shapes.items():
        t = times[name]
        rows.append(
            {
                key: size,
                "batch": batch,
                "seq": seq,
                "experts": E,
                "ms": median_ms(t),
                "us_per_token": median_ms(t) * 1e3 / (batch * seq),
                "moe_over_dense": paired_ratio(times[f"{size}/4"], times[f"{size}/1"]) if E == 4 else 1.0,
            }
        )
    attach_peak_memory(rows, list(cases.values()))
    return {"fixed": {"batch": fixed} if key == "seq" else {"seq": fixed}, "rows": rows}


def bench_scaling(p: Preset) -> dict:
    return {
        "hidden": p.layer_hidden,
        "expert_width": 4 * p.layer_hidden,
        "experts": bench_experts(p),
        "seq": bench_sweep(p, "seq"),
        "batch": bench_sweep(p, "batch"),
    }
