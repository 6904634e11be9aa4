"""The GPU benchmark: what the paper's distillation costs on this GPU, and the device path run end to end.

    python benchmarks/gpu.py             # one CUDA GPU, < 8 minutes: writes benchmarks/results/gpu.json and gpu.md
    python benchmarks/gpu.py --smoke     # the same code on CPU at tiny shapes, a minute (the test suite runs it)
    python benchmarks/gpu.py --estimate  # measures nothing: the recipe's FLOPs and its hours at an assumed MFU

1. Steps. Teachers of BERT-base's and BERT-large's shapes (transformers' BertModel, random weights, eager attention
   as `load_teacher` loads them) and the paper's 3L-384H and 6L-384H MiniMoE students (E = 4, built as `minimoe
   distill` builds them), trained by the project's `RelationDistillation` objective, fused AdamW (`make_optimizer`) and
   gradient clipping at 5.0, under bf16 autocast, at the paper's 1,024 sequences of 128 tokens a step: micro-batches
   of 1,024, halved until they fit in memory, accumulated to 1,024. Timed: the teacher's forward alone and the full
   step. Reported: tokens/s, peak GPU memory, model FLOPs utilisation (FLOPs from `minimoe.flops.distillation_flops`
   over the GPU's dense bf16 peak, from PEAK_TFLOPS by device name or --peak_tflops), and the hours the paper's
   recipe (PAPER_TOKENS: 5 epochs of English Wikipedia) would take at that rate.
2. The device path. 200 real steps of `minimoe distill` (the shipped bert-base-minimoe-3L-384H recipe in bf16, a
   saved random BERT-base-shaped teacher, a corpus of generated text) in a subprocess under `sync_count.py`, which
   counts the host syncs inside the training step by call site (torch.cuda.set_sync_debug_mode).

Without CUDA the full mode says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without install

PAPER_TOKENS = 1.7e10  # the paper's distillation: 5 epochs of English Wikipedia (~3.4e9 tokens) at 1,024 x 128
ASSUMED_MFU = 0.4  # what --estimate assumes until a GPU run measures it
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets; the first name found in
# torch.cuda.get_device_name() wins, so the longer names come first.
PEAK_TFLOPS = {
    "GH200": 989.4,
    "H200": 989.4,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
}
TEACHERS = {  # BertConfig shapes; vocabulary 30,522 as bert-base-uncased
    "BERT-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "BERT-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
STUDENTS = {"3L-384H": (3, 384), "6L-384H": (6, 384)}  # MiniMoE, 4 experts each
FULL = dict(batch=1024, seq=128, vocab=30522, teachers=TEACHERS, students=STUDENTS, cli_steps=200, cli_pairs=20_000)
SMOKE = dict(
    batch=8,
    seq=16,
    vocab=120,
    teachers={
        "BERT-base (tiny)": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
        "BERT-large (tiny)": dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=4, intermediate_size=192),
    },
    students={"1L-32H": (1, 32), "2L-32H": (2, 32)},
    micro=4,  # forced, so the smoke run accumulates
    cli_steps=4,
    cli_pairs=200,
)
CLI_RECIPE = "bert-base-minimoe-3L-384H"


def log(msg: str) -> None:
    print(msg, flush=True)


def bert_config(shape: dict, vocab: int, seq: int):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab, max_position_embeddings=max(512, seq), attn_implementation="eager", **shape)


def peak_flops(device: torch.device, override: float) -> tuple[float | None, str]:
    """The device's dense bf16 peak in FLOP/s (None when unknown) and its name."""
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    if override:
        return override * 1e12, name
    return next((tf * 1e12 for key, tf in PEAK_TFLOPS.items() if key in name), None), name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, least: int, seconds: float, most: int) -> list[float]:
    """Seconds of each call of `fn` (synchronised): at least `least` calls, then until `seconds` or `most`."""
    times: list[float] = []
    while len(times) < least or (sum(times) < seconds and len(times) < most):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def measure_pair(teacher, teacher_name: str, student_name: str, shape: tuple[int, int], p: dict, device) -> dict:
    """Teacher forward and full distillation step of one teacher/student pair at p["batch"] x p["seq"]."""
    from minimoe.distill.losses import choose_relation_heads
    from minimoe.flops import distillation_flops, teacher_qkv_flops
    from minimoe.modeling import init_student
    from minimoe.training.distillation import StudentConfig, student_config
    from minimoe.training.objectives import RelationDistillation
    from minimoe.training.trainer import make_optimizer

    B, T = p["batch"], p["seq"]
    layers, hidden = shape
    student = init_student(student_config(teacher, StudentConfig(layers=layers, hidden=hidden, experts=4)), seed=0)
    heads = choose_relation_heads(teacher.hidden_size, hidden, 32)
    objective = RelationDistillation(student, teacher, heads, -1, "head").to(device).train()
    optimizer = make_optimizer(objective, 0.01, 3e-4, device)
    params = [q for q in objective.parameters() if q.requires_grad]
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, teacher.vocab_size, (B, T), generator=generator).to(device)  # [B, T], all tokens real
    mask = torch.ones_like(ids)
    types = (torch.arange(T, device=device) >= T // 2).long().expand(B, T)  # segment A, then B
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def step(micro: int) -> None:
        for i in range(0, B, micro):
            with autocast:
                loss = objective(ids[i : i + micro], mask[i : i + micro], types[i : i + micro])["loss"]
            (loss * (min(micro, B - i) / B)).backward()  # accumulated to the mean over the whole batch
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    micro = p.get("micro", B)
    while True:  # the first step that fits is also the warmup
        try:
            step(micro)
            sync(device)
            break
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            gc.collect()
            torch.cuda.empty_cache()
            if micro == 1:
                raise
            micro //= 2

    @torch.no_grad()
    def teacher_forward() -> None:
        for i in range(0, B, micro):
            with autocast:
                teacher.qkv(ids[i : i + micro], mask[i : i + micro], types[i : i + micro])

    least, seconds, most = (2, 0.0, 2) if device.type == "cpu" else (3, 10.0, 10)
    teacher_forward()
    teacher_times = timed(teacher_forward, device, least, seconds, most)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_times = timed(lambda: step(micro), device, least, seconds, most)
    peak_memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    flops = distillation_flops(teacher.config, student.config, T)  # per sequence
    step_s, teacher_s = median(step_times), median(teacher_times)
    row = {
        "teacher": teacher_name,
        "student": f"{student_name} E=4",
        "batch": B,
        "seq": T,
        "micro_batch": micro,
        "grad_accum": -(-B // micro),
        "step_s": step_s,
        "teacher_forward_s": teacher_s,
        "teacher_share": teacher_s / step_s,
        "tokens_per_s": B * T / step_s,
        "peak_memory_gib": peak_memory,
        "flops_per_token": flops / T,
        "teacher_flops_per_token": teacher_qkv_flops(teacher.config, T) / T,
        "step_flops": flops * B,
        "projected_hours": PAPER_TOKENS / (B * T / step_s) / 3600,
        "steps_timed": len(step_times),
    }
    return row  # the student, its optimizer state and activations are freed with this frame


def measure_steps(p: dict, device: torch.device, peak: float | None) -> list[dict]:
    """Every teacher x student pair; the teacher is built once on the device."""
    from transformers import BertModel

    from minimoe.distill.teachers import Teacher

    rows = []
    for teacher_name, shape in p["teachers"].items():
        torch.manual_seed(0)
        with torch.device(device):
            teacher = Teacher(BertModel(bert_config(shape, p["vocab"], p["seq"]), add_pooling_layer=False))
        for student_name, student_shape in p["students"].items():
            log(f"  {teacher_name} -> {student_name} E=4 ...")
            row = measure_pair(teacher, teacher_name, student_name, student_shape, p, device)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            row["mfu"] = row["step_flops"] / row["step_s"] / peak if peak else None
            row["teacher_mfu"] = (
                row["teacher_flops_per_token"] * row["batch"] * row["seq"] / row["teacher_forward_s"] / peak
                if peak
                else None
            )
            rows.append(row)
            log("    " + describe(row))
        del teacher
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def describe(row: dict) -> str:
    mfu = f"MFU {100 * row['mfu']:.0f}%" if row["mfu"] is not None else "MFU n/a"
    memory = f", peak {row['peak_memory_gib']:.1f} GiB" if row["peak_memory_gib"] is not None else ""
    return (
        f"{row['tokens_per_s']:,.0f} tokens/s ({row['micro_batch']} x {row['grad_accum']}{memory}), {mfu}, "
        f"teacher {100 * row['teacher_share']:.0f}% of the step, paper recipe {row['projected_hours']:.1f} h"
    )


# ---- the device path: `minimoe distill` end to end ------------------------------------------------------------


def write_teacher(directory: Path, shape: dict, vocab: int, seq: int) -> list[str]:
    """A random BERT of `shape` saved with a WordPiece tokenizer over `vocab` generated words; returns the words."""
    from transformers import BertModel, BertTokenizerFast

    words = [f"w{i}" for i in range(vocab - 5)]
    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab=str(directory / "vocab.txt")).save_pretrained(directory)
    torch.manual_seed(0)
    BertModel(bert_config(shape, vocab, seq), add_pooling_layer=False).save_pretrained(directory)
    return words


def write_corpus(path: Path, words: list[str], pairs: int, seq: int) -> None:
    """Blank-line-separated documents, one sentence of 6-30 generated words a line, for ~`pairs` segment pairs."""
    rng, documents, tokens = random.Random(0), [], 0
    while tokens < pairs * seq:
        sentences = [" ".join(rng.choices(words, k=rng.randint(6, 30))) + " ." for _ in range(rng.randint(4, 40))]
        documents.append("\n".join(sentences))
        tokens += sum(s.count(" ") + 1 for s in sentences)
    path.write_text("\n\n".join(documents) + "\n")


def run_cli(p: dict, micro: int, device: torch.device, work: Path) -> dict:
    """`minimoe distill` for p["cli_steps"] steps under sync_count.py; its summary and the host syncs by phase."""
    teacher_shape = next(iter(p["teachers"].values()))
    words = write_teacher(work / "teacher", teacher_shape, p["vocab"], p["seq"])
    write_corpus(work / "corpus.txt", words, p["cli_pairs"], p["seq"])
    args = ["distill", "--config", CLI_RECIPE, "--teacher", str(work / "teacher"), "--corpus", str(work / "corpus.txt")]
    args += ["--max_length", str(p["seq"]), "--inspect_sequences", "0", "--train.output_dir", str(work / "run")]
    args += ["--train.max_steps", str(p["cli_steps"]), "--train.mixed_precision", "bf16", "--train.save_every", "0"]
    args += ["--train.batch_size", str(micro), "--train.grad_accum", str(-(-p["batch"] // micro))]
    args += ["--train.log_every", str(max(1, p["cli_steps"] // 4))]
    if device.type == "cpu":  # the smoke run: the tiny student the teacher's shape allows
        layers, hidden = next(iter(p["students"].values()))
        args += ["--student.layers", str(layers), "--student.hidden", str(hidden), "--student.heads", "0"]
        args += ["--student.intermediate", "0", "--relation_heads", "4", "--train.threads", "1"]
    report = work / "syncs.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "sync_count.py"), str(report), *args]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    env["MINIMOE_HOME"] = str(work / "home")  # the corpus cache stays in the temporary directory
    if device.type == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the smoke run stays on CPU even on a GPU machine
    log(f"  minimoe {shlex.join(args)}")
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"minimoe distill failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary = json.loads((work / "run" / "summary.json").read_text())
    syncs = json.loads(report.read_text())
    steps = summary["steps"]
    by_phase: dict[str, int] = {}
    for event in syncs["events"]:
        by_phase[event["phase"]] = by_phase.get(event["phase"], 0) + event["count"]
    return {
        "command": "minimoe " + shlex.join(args),
        "steps": steps,
        "train_seconds": summary["seconds"],
        "wall_seconds": wall,
        "tokens_per_s": steps * p["batch"] * p["seq"] / summary["seconds"],
        "sync_mode": syncs["mode"],
        "syncs_by_phase": by_phase,
        "syncs_per_step": by_phase.get("step", 0) / steps,
        "sync_sites_in_step": [e for e in syncs["events"] if e["phase"] == "step"],
        "sync_sites_elsewhere": [e for e in syncs["events"] if e["phase"] != "step"][:20],
    }


# ---- reports -------------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    """The tables of one run, as benchmarks/results/gpu.md holds them."""
    lines = [f"GPU benchmark ({result['device']}), `{result['command']}`", ""]
    lines += ["| teacher | student | micro x accum | tokens/s | peak GiB | MFU | teacher share | paper recipe h |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for r in result["steps"]:
        memory = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        mfu = f"{100 * r['mfu']:.0f}%" if r["mfu"] is not None else "-"
        lines.append(
            f"| {r['teacher']} | {r['student']} | {r['micro_batch']} x {r['grad_accum']} | {r['tokens_per_s']:,.0f} "
            f"| {memory} | {mfu} | {100 * r['teacher_share']:.0f}% | {r['projected_hours']:.1f} |"
        )
    cli = result["cli"]
    lines += ["", f"`{cli['command']}`: {cli['steps']} steps in {cli['train_seconds']:.1f} s "]
    lines[-1] += f"({cli['tokens_per_s']:,.0f} tokens/s end to end); {cli['sync_mode']}: "
    lines[-1] += ", ".join(f"{n} in {phase}" for phase, n in cli["syncs_by_phase"].items()) or "none"
    lines[-1] += f" ({cli['syncs_per_step']:.2f} per step)"
    lines += ["", "| sync site in the step | count |", "|---|---|"]
    lines += [f"| `{e['site']}` | {e['count']} |" for e in cli["sync_sites_in_step"]] or ["| (none) | 0 |"]
    return "\n".join(lines) + "\n"


ESTIMATE_GPUS = {"H100 SXM": "H100", "A100": "A100", "L4": "L4"}  # label: PEAK_TFLOPS key


def estimate_rows(mfu: float = ASSUMED_MFU) -> list[dict]:
    """Per teacher/student pair: the step's FLOPs a token and the paper recipe's hours on ESTIMATE_GPUS at `mfu`."""
    from minimoe import MiniMoEConfig
    from minimoe.flops import distillation_flops

    rows = []
    for teacher, shape in TEACHERS.items():
        for student, (layers, hidden) in STUDENTS.items():
            config = MiniMoEConfig.for_student(layers, hidden, 4, vocab_size=30522)
            per_token = distillation_flops(bert_config(shape, 30522, 128), config, 128) / 128
            hours = {
                gpu: PAPER_TOKENS * per_token / (PEAK_TFLOPS[key] * 1e12 * mfu) / 3600
                for gpu, key in ESTIMATE_GPUS.items()
            }
            rows.append({"teacher": teacher, "student": f"{student} E=4", "gflop_per_token": per_token / 1e9} | hours)
    return rows


def estimate_table(mfu: float = ASSUMED_MFU) -> str:
    """`estimate_rows` as a markdown table (what --estimate prints and docs/performance.md quotes)."""
    lines = ["| teacher | student | GFLOP/token | " + " | ".join(f"{g} h" for g in ESTIMATE_GPUS) + " |"]
    lines.append("|---|---|---|" + "---|" * len(ESTIMATE_GPUS))
    for r in estimate_rows(mfu):
        hours = " | ".join(f"{r[g]:.1f}" for g in ESTIMATE_GPUS)
        lines.append(f"| {r['teacher']} | {r['student']} | {r['gflop_per_token']:.3f} | {hours} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="the same code on CPU at tiny shapes")
    ap.add_argument("--estimate", action="store_true", help="print the projection at --mfu; measure nothing")
    ap.add_argument("--mfu", type=float, default=ASSUMED_MFU, help="utilisation --estimate assumes")
    ap.add_argument("--peak_tflops", type=float, default=0.0, help="this GPU's dense bf16 peak, if not in the table")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where gpu.json and gpu.md go")
    args = ap.parse_args(argv)
    if args.estimate:
        log(
            f"Paper recipe: {PAPER_TOKENS:.1e} tokens (5 epochs of English Wikipedia at 1,024 x 128), {args.mfu:.0%} MFU"
        )
        log(estimate_table(args.mfu))
        return 0
    if not args.smoke and not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU and found none (--smoke runs its code on CPU; --estimate projects)")
        return 0
    p = SMOKE if args.smoke else FULL
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        print(f"benchmarks/gpu.py measures bf16, which {torch.cuda.get_device_name()} does not support")
        return 0
    if args.smoke:
        torch.set_num_threads(1)
    peak, name = peak_flops(device, args.peak_tflops)
    started = time.perf_counter()
    log(f"GPU benchmark ({'smoke, CPU' if args.smoke else name}): batch {p['batch']} x {p['seq']}, bf16 autocast")
    if device.type == "cuda" and peak is None:
        log("  (no peak FLOP/s known for this GPU: pass --peak_tflops for the utilisation)")
    rows = measure_steps(p, device, peak)
    log(f"[2/2] {p['cli_steps']} steps of `minimoe distill` on {device.type}, host syncs counted")
    with tempfile.TemporaryDirectory(prefix="minimoe-gpu-") as tmp:
        cli = run_cli(p, rows[0]["micro_batch"], device, Path(tmp))
    result = {
        "command": shlex.join(["python", "benchmarks/gpu.py", *(sys.argv[1:] if argv is None else argv)]),
        "device": name,
        "smoke": args.smoke,
        "torch": torch.__version__,
        "peak_tflops": peak / 1e12 if peak else None,
        "paper_tokens": PAPER_TOKENS,
        "steps": rows,
        "cli": cli,
        "seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "gpu.md").write_text(markdown(result))
    log("\n" + markdown(result))
    log(f"{result['seconds']:.0f} s; wrote {args.out / 'gpu.json'} and {args.out / 'gpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
