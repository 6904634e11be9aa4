"""What the removed inference weight cache saved: MoE layer and student forwards with it vs on the parameters.

Until issue 22, `MoEFeedForward.weights` returned, in inference, copies of the expert weights in the compute
dtype (bf16 under bf16 autocast) stored so that the batched matmuls read a contiguous W^T, cached per dtype and
rebuilt when a parameter's (data_ptr, _version) moved. Fused AdamW and `p.data` edits change parameters without
moving either, so evaluation after training read stale experts. The layer now always reads its parameters.
`cached_weights` below is the removed code; this script times it against the parameters.

    python benchmarks/weight_cache.py [--repeats 40 --repeats-large 8 --threads 2 --json out.json]

Cases, one interleaved group per batch size (timing.py: warmed up, round-robin, order rotated each round):
the MoE FFN layer (hidden 384, per-expert width 1536; E = 4 with a random-init router, and the dense E = 1)
and a 4L-384H student (dense, and E = 4 with routers balanced as benchmarks/perf/inference.py does), each in
fp32 and under bf16 autocast, each with the cache and without, at batch 1 and 32 x 128 tokens. Reported per
case: the median ms either way and the paired ratio without / with the cache (> 1: the cache saved time);
per batch and dtype: the students' MoE/dense paired ratio either way.
The exit code is always 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))  # timing.py, moe_layer.py, perf/

from minimoe.modeling.moe import MoEFeedForward  # noqa: E402
from moe_layer import build  # noqa: E402
from perf.models import forward_fn, make_student, random_ids  # noqa: E402
from perf.presets import FULL  # noqa: E402
from perf.routing import CALIBRATION_SEED, balance_routers_  # noqa: E402
from timing import (  # noqa: E402
    cpu_model,
    hardware,
    interleaved,
    malloc_description,
    median_ms,
    paired_ratio,
    run_benchmark,
)

HIDDEN, EXPERTS, LAYERS, SEQ = 384, 4, 4, 128


def cached_weights(self: MoEFeedForward) -> tuple[torch.Tensor, ...]:
    """The removed `MoEFeedForward.weights`: in inference, per-dtype copies with W^T contiguous, keyed on versions."""
    params = (self.w_in, self.b_in, self.w_out, self.b_out)
    if (torch.is_grad_enabled() and self.w_in.requires_grad) or torch.compiler.is_compiling():
        return params
    device = self.w_in.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.w_in.dtype
    key = tuple((p.data_ptr(), p._version) for p in params)
    cached = self._layouts.get(dtype)
    if cached is None or cached[0] != key:
        layout = tuple(
            p.detach().to(dtype).mT.contiguous().mT if p.dim() == 3 else p.detach().to(dtype) for p in params
        )
        cached = (key, layout)
        self._layouts[dtype] = cached
    return cached[1]


def with_cache(model: nn.Module) -> nn.Module:
    """A copy of `model` whose MoE layers read their expert weights through the removed cache."""
    model = copy.deepcopy(model)
    for layer in model.modules():
        if isinstance(layer, MoEFeedForward):
            layer._layouts = {}
            layer.weights = types.MethodType(cached_weights, layer)
    return model


def layer_fn(layer: MoEFeedForward, h: torch.Tensor, bf16: bool) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            layer(h)

    return run


def models() -> dict[str, nn.Module]:
    """The layers and students without the cache, by name; the MoE student's routers balanced."""
    moe = make_student(LAYERS, HIDDEN, EXPERTS)
    calibration = random_ids(moe.config.vocab_size, *FULL.balance_tokens, seed=CALIBRATION_SEED)
    balance_routers_(moe, calibration, FULL.balance_steps, FULL.balance_lr)
    return {
        "layer dense": build(MoEFeedForward, HIDDEN, 1).eval(),
        f"layer E={EXPERTS}": build(MoEFeedForward, HIDDEN, EXPERTS).eval(),
        f"{LAYERS}L-{HIDDEN}H dense": make_student(LAYERS, HIDDEN, 1),
        f"{LAYERS}L-{HIDDEN}H E={EXPERTS}": moe,
    }


def cases_for(named: dict[str, tuple[nn.Module, nn.Module]], batch: int) -> dict[str, Callable[[], None]]:
    """Every model x dtype x (cache, params) forward at this batch; keys "model | dtype | cache|params"."""
    h = torch.randn(batch, SEQ, HIDDEN, generator=torch.Generator().manual_seed(1))
    cases = {}
    for name, pair in named.items():
        for dtype in ("fp32", "bf16"):
            for mode, model in zip(("cache", "params"), pair):
                if name.startswith("layer"):
                    fn = layer_fn(model, h, dtype == "bf16")
                else:
                    fn = forward_fn(model, random_ids(model.config.vocab_size, batch, SEQ), dtype == "bf16")
                cases[f"{name} | {dtype} | {mode}"] = fn
    return cases


def same_outputs(named: dict[str, tuple[nn.Module, nn.Module]]) -> bool:
    """The cache and the parameters give the same fp32 outputs (a check that the comparison is fair)."""
    h = torch.randn(1, SEQ, HIDDEN, generator=torch.Generator().manual_seed(2))
    same = True
    with torch.no_grad():
        for name, (cached, plain) in named.items():
            if name.startswith("layer"):
                a, b = cached(h)[0], plain(h)[0]
            else:
                ids = random_ids(plain.config.vocab_size, 1, SEQ, seed=2)
                a, b = cached(input_ids=ids).last_hidden_state, plain(input_ids=ids).last_hidden_state
            same &= torch.allclose(a, b, atol=1e-5)
    return same


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=40, help="rounds at batch 1")
    ap.add_argument("--repeats-large", type=int, default=8, help="rounds at batch 32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    named = {name: (with_cache(model), model) for name, model in models().items()}
    print(
        f"hardware: {cpu_model()} | {os.cpu_count()} cores, torch threads {torch.get_num_threads()} | "
        f"torch {torch.__version__} | {malloc_description()} | cache == params (fp32): {same_outputs(named)}"
    )
    rows = []
    for batch, repeats in ((1, args.repeats), (32, args.repeats_large)):
        times, _ = interleaved(cases_for(named, batch), repeats)
        print(f"\nbatch {batch} x {SEQ}, median of {repeats} interleaved rounds")
        print(f"{'model':<18}{'dtype':<6}{'cache ms':>10}{'params ms':>11}{'params / cache (paired)':>26}")
        for name in named:
            for dtype in ("fp32", "bf16"):
                cache, params = (times[f"{name} | {dtype} | {mode}"] for mode in ("cache", "params"))
                row = {"batch": batch, "model": name, "dtype": dtype, "cache_ms": median_ms(cache)}
                row |= {"params_ms": median_ms(params), "params_over_cache": paired_ratio(params, cache)}
                rows.append(row)
                print(
                    f"{name:<18}{dtype:<6}{row['cache_ms']:>10.2f}{row['params_ms']:>11.2f}"
                    f"{row['params_over_cache']:>26.3f}"
                )
        student, dense = f"{LAYERS}L-{HIDDEN}H E={EXPERTS}", f"{LAYERS}L-{HIDDEN}H dense"
        for dtype in ("fp32", "bf16"):
            ratio = {
                mode: paired_ratio(times[f"{student} | {dtype} | {mode}"], times[f"{dense} | {dtype} | {mode}"])
                for mode in ("cache", "params")
            }
            print(f"student MoE/dense {dtype}: {ratio['cache']:.3f} with the cache, {ratio['params']:.3f} without")
            rows.append({"batch": batch, "model": "student MoE/dense", "dtype": dtype} | ratio)
    elapsed = time.perf_counter() - started
    print(f"\n1-min load avg {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; wall time {elapsed:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "command": "python benchmarks/weight_cache.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "hardware": hardware(),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "rows": [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows],
            "wall_time_s": round(elapsed),
        }
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_benchmark(main)
