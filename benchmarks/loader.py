"""How fast the distillation DataLoader feeds a GPU, with no model: sequences/s at the paper's batch of 1,024 x 128.

    python benchmarks/loader.py                          # ~1-2 min on 2 cores; writes benchmarks/results/loader.json
    python benchmarks/loader.py --smoke --tokenizer DIR  # seconds, tiny corpus and batch (the test suite runs this)

The corpus is the real thing `minimoe distill` reads: generated Wikipedia-like text (blank-line-separated documents,
one sentence per line, words from the tokenizer's vocabulary) built by `build_corpus` into its memmapped segment
pairs of <= 128 tokens. The loader is the trainer's own (`make_loader`: shuffled, padded per batch by `pad_collator`)
with 0, 1 and 2 worker processes. Each configuration runs in rounds, the order rotated every round; a round first
drains the batches the workers prefetched, then times the next ones; the figure is the median over rounds. The
in-process parts (reading 1,024 pairs from the memmap, padding them) are timed apart, with transformers'
`DataCollatorWithPadding` (what pad_collator used to be) beside ours.

Target: >= 15,000 sequences/s (~2M tokens/s, what a GPU distilling at the paper's scale consumes) with the
default number of workers (`train.num_workers` -1: min(4, cores)), reported as met or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import hardware, interleaved, load_average, median_ms  # noqa: E402

TARGET = 15_000  # sequences/s
FULL = {"batch": 1024, "pairs": 20_000, "timed": 12, "rounds": 3, "repeats": 5}
SMOKE = {"batch": 32, "pairs": 200, "timed": 2, "rounds": 1, "repeats": 1}


def log(msg: str) -> None:
    print(msg, flush=True)


def write_text(path: Path, tokenizer, pairs: int, max_length: int, seed: int = 0) -> None:
    """Documents of 4-40 sentences of 6-30 words from the tokenizer's whole-word vocabulary, enough for ~`pairs`
    segment pairs of up to `max_length` tokens (a sentence is ~1 token a word)."""
    words = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.isascii())
    rng = random.Random(seed)
    documents, tokens = [], 0
    while tokens < pairs * max_length * 0.8:
        sentences = [" ".join(rng.choices(words, k=rng.randint(6, 30))) + " ." for _ in range(rng.randint(4, 40))]
        documents.append("\n".join(sentences))
        tokens += sum(s.count(" ") + 1 for s in sentences)
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")


def started_loader(corpus, collate, batch: int, workers: int) -> tuple[object, float]:
    """The trainer's loader with `workers` processes, and the seconds to its first batch (the workers' start)."""
    from minimoe.training.trainer import TrainConfig, make_loader

    loader = make_loader(corpus, collate, TrainConfig(batch_size=batch, num_workers=workers), torch.device("cpu"))
    start = time.perf_counter()
    next(iter(loader))
    return loader, time.perf_counter() - start


def one_round(loader, workers: int, timed: int) -> float:
    """Sequences/s over `timed` batches, after draining what the workers prefetched (2 batches each)."""
    batches = iter(loader)
    for _ in range(2 * workers + 1):
        next(batches)
    start, sequences = time.perf_counter(), 0
    for _ in range(timed):
        sequences += len(next(batches)["input_ids"])
    return sequences / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny corpus and batch, one round (seconds)")
    ap.add_argument("--tokenizer", default="", help="a tokenizer directory (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "loader.json")
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    from minimoe.assets.fetch import fetch_teacher
    from minimoe.data.corpus import build_corpus
    from minimoe.data.encode import pad_collator
    from minimoe.training.trainer import loader_workers

    p = SMOKE if args.smoke else FULL
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or fetch_teacher())
    load_before = load_average()
    log(f"distillation loader benchmark ({'smoke' if args.smoke else 'full'}): 1-min load {load_before:.2f}")
    with tempfile.TemporaryDirectory(prefix="minimoe-loader-") as tmp:
        text = Path(tmp) / "wiki-like.txt"
        write_text(text, tokenizer, p["pairs"], 128)
        start = time.perf_counter()
        corpus = build_corpus(text, tokenizer, 128, cache_root=Path(tmp) / "cache")
        lengths = [len(corpus[i]["input_ids"]) for i in range(len(corpus))]
        log(
            f"  corpus: {text.stat().st_size / 1e6:.1f} MB of text -> {len(corpus):,} pairs of mean "
            f"{statistics.mean(lengths):.1f} tokens (built in {time.perf_counter() - start:.1f} s)"
        )
        collate = pad_collator(tokenizer)
        parts = in_process_parts(corpus, tokenizer, collate, p)
        for name, ms in parts.items():
            log(f"  in process, {p['batch']} pairs: {name} {ms:.1f} ms ({p['batch'] / ms * 1e3:,.0f} sequences/s)")
        configs = (0, 1, 2)
        loaders = {w: started_loader(corpus, collate, p["batch"], w) for w in configs}
        rates: dict[int, list[float]] = {w: [] for w in configs}
        for r in range(p["rounds"]):
            for w in configs[r % len(configs) :] + configs[: r % len(configs)]:
                rates[w].append(one_round(loaders[w][0], w, p["timed"]))
        loaders = {w: (None, first) for w, (_, first) in loaders.items()}  # stops the workers before cleanup
    default = loader_workers(-1)
    rows = [
        {
            "workers": w,
            "sequences_per_s": statistics.median(rates[w]),
            "tokens_per_s": statistics.median(rates[w]) * statistics.mean(lengths),
            "first_batch_s": loaders[w][1],
            "rounds": rates[w],
        }
        for w in configs
    ]
    at_default = next((r for r in rows if r["workers"] == min(default, max(configs))), rows[-1])
    met = at_default["sequences_per_s"] >= TARGET
    log(f"\n  batch {p['batch']} x <= 128 tokens, median of {p['rounds']} rounds of {p['timed']} batches:")
    log("  | workers | sequences/s | tokens/s |\n  |---|---|---|")
    for r in rows:
        log(f"  | {r['workers']} | {r['sequences_per_s']:,.0f} | {r['tokens_per_s']:,.0f} |")
    verdict = "MET" if met else "MISSED"
    note = " (smoke run: tiny batch, not a measurement)" if args.smoke else ""
    log(
        f"\n  target >= {TARGET:,} sequences/s with the default {default} workers on this machine: {verdict} "
        f"({at_default['sequences_per_s']:,.0f}){note}"
    )
    result = {
        "command": shlex.join(["python", "benchmarks/loader.py", *(sys.argv[1:] if argv is None else argv)]),
        "smoke": args.smoke,
        "hardware": hardware(),
        "load_before": load_before,
        "load_after": load_average(),
        "batch": p["batch"],
        "max_length": 128,
        "pairs": len(corpus),
        "mean_tokens": statistics.mean(lengths),
        "in_process_ms": parts,
        "rows": rows,
        "default_workers": default,
        "target": {"sequences_per_s": TARGET, "value": at_default["sequences_per_s"], "met": met},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    log(f"  wrote {args.json}")
    return 0


def in_process_parts(corpus, tokenizer, collate, p: dict) -> dict[str, float]:
    """Median ms, in this process, of reading one batch of pairs from the memmap and of padding it (ours and
    transformers' DataCollatorWithPadding), interleaved."""
    from transformers import DataCollatorWithPadding

    indices = random.Random(1).sample(range(len(corpus)), p["batch"])
    items = [corpus[i] for i in indices]
    theirs = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    cases = {
        "read pairs from the memmap": lambda: [corpus[i] for i in indices],
        "pad (pad_collator)": lambda: collate(items),
        "pad (DataCollatorWithPadding)": lambda: theirs(items),
    }
    times, _ = interleaved(cases, p["repeats"], warmup=1)
    return {name: median_ms(t) for name, t in times.items()}


if __name__ == "__main__":
    sys.exit(main())
