"""Distillation-corpus build as the corpus grows: peak memory, tokens/s with 1 and 2 workers, disk bytes per token.

    python benchmarks/corpus_build.py                            # 0.2 GB and 2 GB of text, ~25 min on 2 quiet cores
    python benchmarks/corpus_build.py --doc docs/performance.md  # also write the table into the page's notes
    python benchmarks/corpus_build.py --smoke                    # tiny sizes (the test suite runs this)

Wikipedia-like text is generated into a temporary directory (deleted afterwards): articles of 3 to 200
sentences (log-normal, median 25), blank-line separated, one sentence a line, words drawn Zipf-like from
the tokenizer's whole-word vocabulary with rarer made-up words, numbers, capitals and commas mixed in. Each
build (`minimoe.data.corpus.build_corpus`, as `minimoe distill` runs it) runs in a fresh process; a sampler
reads, every 0.2 s, the proportional set size (PSS: shared pages split between the processes sharing them)
of the build's process tree (the reader and its forked workers) and the bytes of the shards it has written.
Peak memory is the largest summed PSS; the largest single RSS is shown beside it. Targets: peak memory of the
large build at most 1.25x the small one's (memory does not grow with the corpus), and 2 workers at least
1.6x the tokens/s of 1. The tokenizer is the packaged all-MiniLM-L6-v2 one when it is in the cache (else a
WordPiece over the generator's words). The exit code is always 0; a missed target prints "MISSED".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout without install
sys.path.insert(0, str(ROOT / "benchmarks"))  # timing.py

from timing import cpu_model  # noqa: E402

MEMORY_TARGET = 1.25  # peak memory, large / small corpus
SPEEDUP_TARGET = 1.6  # tokens/s, 2 workers / 1
SIZES = {"full": (200_000_000, 2_000_000_000), "smoke": (100_000, 1_000_000)}
SMOKE_SHARD_CHARS = 1 << 14  # so that the tiny texts still make several shards (the default is 1 MiB)
SECTION_BEGIN, SECTION_END = "<!-- corpus-build:begin -->", "<!-- corpus-build:end -->"
NOTES_END = "<!-- notes:end -->"  # benchmarks/run.py keeps the notes section when it regenerates the page
BUILD = """
import json, resource, sys, time
from transformers import AutoTokenizer
from minimoe.data.corpus import build_corpus
tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
start = time.perf_counter()
shard = {"shard_chars": int(sys.argv[5])} if len(sys.argv) > 5 else {}
corpus = build_corpus(sys.argv[1], tokenizer, 128, cache_root=sys.argv[3], workers=int(sys.argv[4]), **shard)
seconds = time.perf_counter() - start
manifest = json.loads((corpus.directory / "manifest.json").read_text())
entry = sum(p.stat().st_size for p in corpus.directory.iterdir())
rss = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print(json.dumps({"seconds": seconds, "entry_bytes": entry, "max_rss_kb": rss, **manifest}))
"""


# ---- the text -------------------------------------------------------------------------------------------------


def word_list(tokenizer_dir: Path, rng: np.random.Generator) -> np.ndarray:
    """Whole words of the tokenizer's vocabulary (most frequent first) and 20% as many made-up rare words."""
    vocab = (tokenizer_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    words = [w for w in vocab if w.isalpha() and w.isascii() and len(w) > 1]
    syllables = ["".join(s) for s in zip(rng.choice(list("bcdfghklmnprstvz"), 400), rng.choice(list("aeiou"), 400))]
    made_up = ["".join(rng.choice(syllables, rng.integers(3, 6))) for _ in range(len(words) // 5)]
    return np.array(words + made_up, dtype=object)


def write_text(path: Path, size: int, words: np.ndarray, seed: int) -> None:
    """Wikipedia-like documents until `size` bytes: one sentence a line, a blank line between articles."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(words) + 1)
    p = 1.0 / ranks**1.05
    p /= p.sum()
    written = 0
    with path.open("w", encoding="utf-8") as f:
        while written < size:
            articles = min(256, 1 + size // 8000)  # a block of about 3 kB each: small texts stay near their size
            lengths = np.clip(rng.lognormal(math.log(25), 0.9, articles), 3, 200).astype(int)  # sentences each
            n = int(lengths.sum())
            words_per = np.clip(rng.normal(22, 9, n), 4, 70).astype(int)
            picks = words[rng.choice(len(words), int(words_per.sum()), p=p)]
            numbers = rng.integers(1, 2030, n)
            ends = np.cumsum(words_per)
            sentences = []
            for i, (start, end) in enumerate(zip(ends - words_per, ends)):
                tokens = list(picks[start:end])
                tokens[0] = tokens[0].capitalize()
                if i % 3 == 0:
                    tokens.insert(len(tokens) // 2, f"in {numbers[i]},")
                sentences.append(" ".join(tokens) + ".")
            starts = np.cumsum(lengths) - lengths
            block = "\n\n".join("\n".join(sentences[s : s + k]) for s, k in zip(starts, lengths)) + "\n\n"
            f.write(block)
            written += len(block.encode("utf-8"))


def tokenizer_dir(scratch: Path) -> tuple[Path, str]:
    """The packaged all-MiniLM-L6-v2 tokenizer if it is in the cache, else a small WordPiece built here."""
    from minimoe.cache import cache_dir

    packaged = cache_dir() / "teachers" / "all-MiniLM-L6-v2"
    if (packaged / "tokenizer.json").is_file():
        return packaged, "all-MiniLM-L6-v2 (packaged)"
    from transformers import BertTokenizer

    words = "the of and in to was is for on as by with he at from his an were are which this city film".split()
    directory = scratch / "tokenizer"
    directory.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", *words, *"abcdefghijklmnopqrstuvwxyz"]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + list("0123456789")
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(vocab=str(directory / "vocab.txt")).save_pretrained(directory)
    return directory, "a character-level WordPiece (all-MiniLM-L6-v2 not in the cache)"


# ---- one build, watched -------------------------------------------------------------------------------------


def tree_memory(root: psutil.Process) -> tuple[int, int]:
    """Summed PSS and largest RSS (bytes) of a process and its descendants."""
    pss = rss = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        pss += info.pss
        rss = max(rss, info.rss)
    return pss, rss


def shard_bytes(cache: Path) -> int:
    """Bytes of the shards in the cache's work directories (the build's temporary files)."""
    total = 0
    for work in cache.glob(".*.partial"):
        for shard in work.glob("*"):
            try:
                total += shard.stat().st_size
            except FileNotFoundError:  # a shard renamed or removed under us
                continue
    return total


def build(text: Path, tokenizer: Path, cache: Path, workers: int, shard_chars: int | None) -> dict:
    """Build the corpus of `text` in a fresh process, sampling its memory and disk; return the measurements."""
    command = [sys.executable, "-c", BUILD, str(text), str(tokenizer), str(cache), str(workers)]
    command += [str(shard_chars)] if shard_chars else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    peak = {"pss": 0, "rss": 0, "shards": 0}
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.wait(0.2):
            try:
                pss, rss = tree_memory(root)
            except psutil.NoSuchProcess:
                return
            peak.update(
                pss=max(peak["pss"], pss), rss=max(peak["rss"], rss), shards=max(peak["shards"], shard_bytes(cache))
            )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"the build of {text} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    return result | {"peak_pss": peak["pss"], "peak_rss": peak["rss"], "shard_bytes": peak["shards"]}


# ---- report -------------------------------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    lines = [
        "| text | workers | tokens | seconds | tokens/s | peak memory (PSS, all processes) | largest RSS | "
        "disk bytes/token: corpus | + shards while building |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['text_bytes'] / 1e9:.3g} GB | {r['workers']} | {r['tokens']:,} | {r['seconds']:.1f} | "
            f"{r['tokens'] / r['seconds']:,.0f} | {r['peak_pss'] / 2**20:,.0f} MiB | {r['peak_rss'] / 2**20:,.0f} MiB | "
            f"{r['entry_bytes'] / r['tokens']:.2f} | {r['shard_bytes'] / r['tokens']:.2f} |"
        )
    return "\n".join(lines)


def targets(rows: list[dict]) -> list[tuple[str, float, float]]:
    small1, small2, large2 = rows
    speedup = (small2["tokens"] / small2["seconds"]) / (small1["tokens"] / small1["seconds"])
    return [
        ("peak memory, large / small corpus (2 workers)", large2["peak_pss"] / small2["peak_pss"], MEMORY_TARGET),
        ("tokens/s, 2 workers / 1 (small corpus)", speedup, SPEEDUP_TARGET),
    ]


def section(rows: list[dict], command: str, tokenizer: str, smoke: bool, load_before: float) -> str:
    checks = targets(rows)
    verdicts = [
        f"- {name}: **{value:.2f}** (target {'<=' if name.startswith('peak') else '>='} {target}) "
        f"{'met' if (value <= target if name.startswith('peak') else value >= target) else 'MISSED'}"
        for name, value, target in checks
    ]
    cpu = cpu_model()
    return "\n".join(
        [
            SECTION_BEGIN,
            "### Building the distillation corpus as it grows" + (" (SMOKE RUN: tiny sizes)" if smoke else ""),
            "",
            f"`{command}` on {os.cpu_count()} cores ({cpu}); 1-minute load average {load_before:.2f} before,",
            f"{os.getloadavg()[0]:.2f} after (the builds' own processes included); tokenizer {tokenizer}, max_length 128.",
            "Text: generated Wikipedia-like articles (see the script), one build per row in a",
            "fresh process. Peak memory sums the proportional set size of the reader and its workers. Disk: the",
            "built corpus, and the shards the build writes first (the most the work directory held, sampled), which",
            "it deletes once they are merged into the corpus: a build needs the sum of the two for a moment.",
            "",
            table(rows),
            "",
            *verdicts,
            SECTION_END,
        ]
    )


def write_section(doc: Path, text: str) -> None:
    """Replace this benchmark's section of the page, or add it at the end of the hand-written notes."""
    page = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    if SECTION_BEGIN in page:
        page = page[: page.index(SECTION_BEGIN)] + text + page[page.index(SECTION_END) + len(SECTION_END) :]
    elif NOTES_END in page:
        page = page.replace(NOTES_END, f"{text}\n{NOTES_END}")
    else:
        page = page + ("\n" if page else "") + text + "\n"
    doc.write_text(page, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the benchmark runs")
    ap.add_argument("--doc", type=Path, help="write the table into this page (e.g. docs/performance.md)")
    ap.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()), help="where the text is generated")
    args = ap.parse_args(argv)
    small, large = SIZES["smoke" if args.smoke else "full"]
    command = "python benchmarks/corpus_build.py" + (" --smoke" if args.smoke else "")
    scratch = Path(tempfile.mkdtemp(prefix="minimoe-corpus-bench-", dir=args.scratch))
    load_before = os.getloadavg()[0]
    try:
        tokenizer, tokenizer_name = tokenizer_dir(scratch)
        words = word_list(tokenizer, np.random.default_rng(0))
        rows = []
        for size, workers in ((small, 1), (small, 2), (large, 2)):
            text = scratch / f"text-{size}.txt"
            if not text.exists():
                print(f"generating {size / 1e9:.3g} GB of text in {text}", file=sys.stderr)
                write_text(text, size, words, seed=size)
            cache = scratch / f"cache-{size}-{workers}"
            print(f"building {text.name} with {workers} worker(s)", file=sys.stderr)
            measured = build(text, tokenizer, cache, workers, SMOKE_SHARD_CHARS if args.smoke else None)
            rows.append(measured | {"text_bytes": text.stat().st_size, "workers": workers})
            shutil.rmtree(cache)
        text = section(rows, command, tokenizer_name, args.smoke, load_before)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(text)
    if args.doc:
        write_section(args.doc, text)
        print(f"wrote {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
