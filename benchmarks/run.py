"""minimoe performance suite: one command, every number the docs quote, taken in one run on this machine.

    python benchmarks/run.py            # full suite, 8-18 min on 2 CPU cores (CPU-dependent)
    python benchmarks/run.py --smoke    # tiny shapes, 1-2 repeats, cached MiniLM only (the test suite runs this)

Writes benchmarks/results/perf.json, docs/img/perf_*.png and docs/performance.md (paths can be changed,
see --help). Sections, one module each under benchmarks/perf/:

1. inference: latency (median ms) and throughput (sequences/s) at batch 1 and 32, seq 128, of the packaged
   teachers (real weights) and random-init students, dense (E = 1) and MiniMoE (E = 4) of the same active
   size; MoE/dense latency and FLOPs ratios per shape in three routing regimes (routing.py): balanced
   routers (the headline, what the targets are checked on), the same with the pre-fix grouped dispatch
   forced, and random-init routers; params and active params; bf16 autocast.
2. scaling of the MoE FFN layer (hidden 384, per-expert width 1536): time vs number of experts (balanced
   and random-init routers), vs sequence length, vs batch; peak memory of each.
3. training: task-agnostic distillation step throughput from the real all-MiniLM-L6-v2 teacher, the share
   of the step spent in the teacher, teacher Q/K/V live vs cached, fp32 vs bf16 autocast.
4. dispatch: sorted (ours) vs the naive loop-with-masks vs a dense one-hot einsum, same inputs.
5. export: onnxruntime fp32 and dynamic int8 vs PyTorch eager, dense and MoE, batch 1 and 32.
6. a torch.profiler breakdown of every missed target.

Timing (benchmarks/timing.py, shared with moe_layer.py): all cases of a group are warmed up, then run
round-robin with the order rotated each round; a case's time is the median over rounds and a ratio of two
cases is the *paired* ratio (median over rounds of a / b in the same round). Ratios are only ever taken
between cases of the same group of the same run.

Allocator: glibc's default malloc returns big freed blocks (e.g. a dense FFN's [N, 4H] activation) to the
OS after every call, so a dense model pays page faults the MoE's smaller per-expert blocks do not, which
flatters the MoE. The suite therefore first measures inference with the stock allocator (what a user
gets; the latency targets are checked on these ratios), then switches this process to keep freed memory
mapped (mallopt, as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ would) and measures everything else -
including the MoE/dense ratios again as a second column - compute against compute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.disable_progress_bar()  # no "Loading weights" bars in the benchmark output

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))  # timing.py, moe_layer.py, perf/

from perf.dispatch import bench_dispatch  # noqa: E402
from perf.export import bench_export  # noqa: E402
from perf.inference import bench_inference, bench_student_ratios_tuned  # noqa: E402
from perf.plots import plot_all  # noqa: E402
from perf.presets import FULL, MPNET, SMOKE, TARGETS, log  # noqa: E402
from perf.profiles import profile_misses  # noqa: E402
from perf.report import headline, write_doc  # noqa: E402
from perf.scaling import bench_scaling  # noqa: E402
from perf.training import bench_training  # noqa: E402
from timing import CpuMonitor, hardware, load_average, malloc_description, tune_malloc_now  # noqa: E402

ALLOCATOR_NOTE = (
    "the inference tables (teachers, students, bf16) run first with the stock glibc allocator; then the process "
    "keeps freed memory mapped (glibc mallopt: mmap threshold 256 MiB, trim threshold 1 GiB, as "
    "MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ would) and the MoE/dense ratios (second column; the targets are "
    "checked on the stock-allocator ratios), the "
    "layer scaling, the dispatch comparison and the training step are measured. Stock malloc unmaps big freed blocks "
    "(the dense FFN's [N, 4H] activation) after each call, so the dense model pays page faults the MoE's smaller "
    "per-expert blocks avoid, which flatters the MoE."
)
MEMORY_METHOD = (
    "tensor peak = peak of live CPU tensor bytes allocated during one call, replayed from the allocation/free events "
    "of `torch.profiler.profile(profile_memory=True)`; RSS rise = the process's peak resident set during the call "
    "(VmHWM, reset via /proc/self/clear_refs) minus its RSS before. `tracemalloc` is not used (it does not see tensor "
    "storage). One extra call per case, after the timed ones."
)


def rounded(obj, digits: int = 4):
    """Floats rounded for the JSON file."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def display_path(path: Path) -> str:
    """`path` relative to the checkout when inside it (as the docs quote it), else as given."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def collect_targets(ratios: list[dict], bf16: list[dict], scaling: dict, training: dict) -> list[dict]:
    """Every target with its value: balanced-router latency ratios (stock malloc, fp32 and bf16), FLOPs ratio per
    shape, layer E=max / E=1, the distillation and fine-tuning steps."""
    targets = [
        {
            "name": f"MoE/dense latency {r['shape']} batch {r['batch']}{suffix}",
            "value": r["latency_ratio"],
            "target": r["target"],
            "met": r["met"],
        }
        for rows, suffix in ((ratios, ""), (bf16, " bf16"))
        for r in rows
    ]
    flops = {r["shape"]: r["flops_ratio"] for r in ratios}
    targets += [
        {
            "name": f"MoE/dense FLOPs {shape}",
            "value": value,
            "target": TARGETS["flops"],
            "met": value <= TARGETS["flops"],
        }
        for shape, value in flops.items()
    ]
    ex = scaling["experts"]
    targets.append(
        {
            "name": f"MoE layer time E={ex['max_experts']} / E=1",
            "value": ex["ratio_max_over_1"],
            "target": ex["target"],
            "met": ex["met"],
        }
    )
    step = training["moe_over_dense_step"]
    targets.append(
        {
            "name": f"MoE/dense distillation step {training['batch']}x{training['seq']}",
            "value": step,
            "target": TARGETS["train_step"],
            "met": step <= TARGETS["train_step"],
        }
    )
    targets += [
        {
            "name": f"MoE/dense fine-tuning step {f['batch']}x{f['seq']}",
            "value": f["moe_over_dense_step"],
            "target": TARGETS["train_step"],
            "met": f["moe_over_dense_step"] <= TARGETS["train_step"],
        }
        for f in training["finetune"]
    ]
    return targets


def print_profiles(profiles: list[dict]) -> None:
    for prof in profiles:
        a, b = prof["labels"]
        ops = ", ".join(f"{r['op']} +{r['extra_us']:.0f}us" for r in prof["top_extra_ops"][:5])
        print(
            f"profile {prof['target']}: {a} {prof['total_us'][a]:.0f}us vs {b} {prof['total_us'][b]:.0f}us; "
            f"top extra: {ops}"
        )
        if "expert_matmul_probe" in prof:
            print(
                "  expert-matmul probe (x dense FFN): "
                + ", ".join(f"{q['case']} {q['ratio_vs_dense']:.2f}" for q in prof["expert_matmul_probe"]["rows"])
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, 1-2 repeats, cached MiniLM only (< 30 s)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "perf.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    ap.add_argument("--img-dir", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--no-doc", action="store_true", help="write only the JSON (no plots, no markdown)")
    ap.add_argument("--no-mpnet", action="store_true", help=f"skip the {MPNET} teacher (~440 MB download)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: 2, smoke: 1)")
    ap.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: rewrite the headline, plots and doc from the existing --json",
    )
    args = ap.parse_args(argv)
    if args.render:
        return publish(json.loads(args.json.read_text()), args, time.perf_counter())
    p = SMOKE if args.smoke else FULL
    torch.set_num_threads(args.threads or p.threads)
    started = time.perf_counter()
    load_before = load_average()
    cli_args = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/run.py" + (" " + shlex.join(cli_args) if cli_args else "")
    log(
        f"minimoe benchmark suite ({'smoke' if args.smoke else 'full'}): {torch.get_num_threads()} threads, "
        f"1-min load {load_before:.2f}{'  (busy machine: numbers will be noisy)' if load_before > 1.5 else ''}"
    )
    if torch.get_num_threads() > 1 and load_before > 1.5:
        log("  note: with other processes on every core, multi-threaded torch ops can slow down many-fold")

    stock_malloc = malloc_description()
    whole, busy = CpuMonitor(), {}

    def section(name: str, fn: Callable[[], object]):
        monitor = CpuMonitor()
        result = fn()
        busy[name] = monitor.result()
        other = busy[name]["other_cores"]
        if other is not None:
            log(
                f"  ({busy[name]['seconds']:.0f} s; other processes used {other:.2f} cores, "
                f"steal {100 * busy[name]['steal']:.1f}%)"
            )
        return result

    log("[1/6] inference: teachers and students, batch " + " and ".join(map(str, p.batches)))
    inference, models = section("inference (stock malloc)", lambda: bench_inference(p, args.no_mpnet or args.smoke))
    tuned = tune_malloc_now()
    malloc_after = (
        f"{stock_malloc}, then mallopt(M_MMAP_THRESHOLD=256 MiB, M_TRIM_THRESHOLD=1 GiB)"
        if tuned
        else f"{stock_malloc} throughout (mallopt unavailable)"
    )
    log("  allocator now keeps freed memory mapped" if tuned else "  (could not tune the allocator; not glibc)")
    tuned_ratios = section("student ratios (tuned malloc)", lambda: bench_student_ratios_tuned(p, models))
    inference["moe_vs_dense_tuned_malloc"] = tuned_ratios
    log("[2/6] scaling of the MoE layer")
    scaling = section("layer scaling", lambda: bench_scaling(p))
    log("[3/6] training: distillation step")
    training = section("training", lambda: bench_training(p))
    log("[4/6] dispatch comparison")
    dispatch = section("dispatch", lambda: bench_dispatch(p))
    log("[5/6] exported inference: onnxruntime fp32 and int8 vs PyTorch")
    exported = section("export", lambda: bench_export(p, models))
    stock_ratios = inference["moe_vs_dense_stock_malloc"]
    targets = collect_targets(stock_ratios, inference["moe_vs_dense_bf16"], scaling, training)
    log("[6/6] profiles of missed targets")
    profiles = section("profiles", lambda: profile_misses(p, stock_ratios, scaling, models))
    if not profiles:
        log("  none missed")

    perf = {
        "schema": 1,
        "meta": {
            "command": command,
            "smoke": args.smoke,
            "json": display_path(args.json),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "hardware": hardware(),
            "load_before": load_before,
            "load_after": load_average(),
            "other_cores": whole.result()["other_cores"],
            "steal": whole.result()["steal"],
            "busy_by_section": busy,
            "malloc": malloc_after,
            "allocator_note": ALLOCATOR_NOTE if tuned else "stock glibc malloc throughout (mallopt not available)",
            "memory_method": MEMORY_METHOD,
            "threads": torch.get_num_threads(),
        },
        "inference": inference,
        "scaling": scaling,
        "training": training,
        "dispatch": dispatch,
        "export": exported,
        "targets": targets,
        "profiles": profiles,
    }
    perf["meta"]["wall_time_s"] = round(time.perf_counter() - started, 1)
    return publish(perf, args, started)


def publish(perf: dict, args: argparse.Namespace, started: float) -> int:
    """Headline into perf.json, then the plots and docs/performance.md, then the headline on stdout."""
    perf["headline"] = headline(perf)
    perf = rounded(perf)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(perf, indent=1))
    if not args.no_doc:
        images = plot_all(perf, args.img_dir)
        write_doc(perf, args.doc, images)
    print()
    print("=" * 30 + " headline " + "=" * 30)
    for line in perf["headline"]:
        print(line)
    print_profiles(perf["profiles"])
    print(
        f"wrote {args.json}"
        + ("" if args.no_doc else f", {args.doc}, {len(images)} plots in {args.img_dir}")
        + f" in {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
