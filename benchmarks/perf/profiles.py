"""Where the time goes when a target is missed: torch.profiler per-op diffs of the slower case against the
faster one, and for the student ratios a probe of the expert matmuls alone (weight traffic vs call count)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from minimoe.modeling import MoEFeedForward
from moe_layer import build, inference_fn
from timing import interleaved, median_ms, paired_ratio, quiet_stderr

from .inference import EXPERTS, student_name
from .models import forward_fn, random_ids
from .presets import Preset, log
from .scaling import layer_case


def profile_ops(fn: Callable[[], None], iters: int) -> dict[str, dict]:
    """Self CPU time per call (us) and call counts per op, from torch.profiler over `iters` calls."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            fn()
    return {e.key: {"self_us": e.self_cpu_time_total / iters, "calls": e.count / iters} for e in prof.key_averages()}


def profile_diff(
    name: str, fn_a: Callable[[], None], fn_b: Callable[[], None], labels: tuple[str, str], iters: int, top: int = 12
) -> dict:
    """Per-op self CPU time of b (the slower) minus a, top ops by extra time, per call."""
    a, b = profile_ops(fn_a, iters), profile_ops(fn_b, iters)
    rows = []
    for op in set(a) | set(b):
        ta, tb = a.get(op, {}).get("self_us", 0.0), b.get(op, {}).get("self_us", 0.0)
        rows.append(
            {
                "op": op,
                f"{labels[0]}_us": ta,
                f"{labels[1]}_us": tb,
                "extra_us": tb - ta,
                f"{labels[1]}_calls": b.get(op, {}).get("calls", 0.0),
                f"{labels[0]}_calls": a.get(op, {}).get("calls", 0.0),
            }
        )
    rows.sort(key=lambda r: -r["extra_us"])
    total_a = sum(v["self_us"] for v in a.values())
    total_b = sum(v["self_us"] for v in b.values())
    return {
        "target": name,
        "labels": list(labels),
        "iters": iters,
        "total_us": {labels[0]: total_a, labels[1]: total_b},
        "top_extra_ops": rows[:top],
        "top_saved_ops": sorted(rows, key=lambda r: r["extra_us"])[:3],
    }


def l3_cache() -> str | None:
    """The last-level cache size as the kernel reports it (e.g. "32768K"), None if unknown."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"), reverse=True):
        try:
            if (index / "level").read_text().strip() == "3":
                return (index / "size").read_text().strip()
        except OSError:
            continue
    return None


def expert_matmul_probe(hidden: int, tokens: int, experts: int, repeats: int) -> dict:
    """Where the extra FFN time of a small batch goes: the same E expert calls on N/E tokens each, once with E
    distinct experts' weights (what the MoE does) and once all with expert 0's weights (same FLOPs, same call
    count and shapes, 1/E of the weight traffic), against one dense call on N tokens."""
    moe = build(MoEFeedForward, hidden, experts).eval()
    dense = build(MoEFeedForward, hidden, 1).eval()
    x = torch.randn(tokens, hidden, generator=torch.Generator().manual_seed(2))
    parts = x.split(-(-tokens // experts))

    def run(module, which):
        def f():
            with torch.no_grad():
                for e, xe in enumerate(parts):
                    module.expert(xe, which(e))

        return f

    cases = {
        "dense FFN, N tokens": lambda: dense.expert(x, 0),
        "E experts, distinct weights": run(moe, lambda e: e),
        "E experts, same weights": run(moe, lambda e: 0),
    }
    with torch.no_grad():
        times, _ = interleaved(cases, repeats)
    base = times["dense FFN, N tokens"]
    return {
        "hidden": hidden,
        "tokens": tokens,
        "experts": experts,
        "rows": [
            {"case": k, "us": median_ms(t) * 1e3, "ratio_vs_dense": paired_ratio(t, base)} for k, t in times.items()
        ],
    }


def profile_misses(p: Preset, ratios: list[dict], scaling: dict, models: dict) -> list[dict]:
    """A profile diff for every missed latency target (balanced-router students, as the targets are checked)."""
    out = []
    for r in ratios:
        if r["met"]:
            continue
        dense, moe = (models[student_name(r["shape"], v)]["model"] for v in (None, ""))
        ids = random_ids(dense.config.vocab_size, r["batch"], p.seq)
        log(f"  profiling {r['shape']} batch {r['batch']} (MoE/dense {r['latency_ratio']:.3f} > {r['target']}) ...")
        iters = p.profile_iters * (10 if r["batch"] == 1 else 1)
        prof = profile_diff(
            f"latency {r['shape']} batch {r['batch']}",
            forward_fn(dense, ids),
            forward_fn(moe, ids),
            ("dense", "moe"),
            iters,
        )
        prof["expert_matmul_probe"] = expert_matmul_probe(
            dense.config.hidden_size, r["batch"] * p.seq, EXPERTS, p.repeats_small
        )
        prof["weights_mib"] = {
            label: sum(t.numel() * t.element_size() for t in m.parameters()) / 2**20
            for label, m in (("dense", dense), ("moe", moe))
        }
        prof["ffn_weights_mib"] = {
            label: sum(
                t.numel() * t.element_size() for layer in m.encoder.layer for t in (layer.ffn.w_in, layer.ffn.w_out)
            )
            / 2**20
            for label, m in (("dense", dense), ("moe", moe))
        }
        prof["l3_cache"] = l3_cache()
        out.append(prof)
    exp = scaling["experts"]
    if not exp["met"]:
        B, T = exp["batch"], exp["seq"]
        top = exp["max_experts"]
        m1, h = layer_case(p, 1, B, T)
        mE, _ = layer_case(p, top, B, T)
        log(f"  profiling the MoE layer E={top} vs E=1 ...")
        out.append(
            profile_diff(
                f"layer E={top} vs E=1",
                inference_fn(m1, h),
                inference_fn(mE, h),
                ("E=1", f"E={top}"),
                p.profile_iters * 3,
            )
        )
    return out
