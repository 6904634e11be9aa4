"""Human-facing output: the end-of-run summary, comparison tables, and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path


def print_summary(title: str, summary: dict, file=None) -> None:
    """A short, readable block at the end of a job (on stdout, or `file`)."""
    width = max(len(k) for k in summary) + 2
    print(f"\n== {title} done ==", file=file)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"{key:<{width}}{value}", file=file)


def si_count(n: float, digits: int = 1, sep: str = "") -> str:
    """1.2e9 -> '1.2G', 28.5e6 -> '28.5M', 900 -> '900' (sep goes between number and prefix)."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f}{sep}{unit}"
    return f"{n:.0f}{sep}"


def markdown_rows(header: list[str], rows: list[list]) -> str:
    """A header and rows of cells as a GitHub-markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """Rows of dicts as a GitHub-markdown table (missing cells blank, floats rounded)."""
    return markdown_rows(columns, [[_cell(row.get(c, "")) for c in columns] for row in rows])


def _cell(value) -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"  # small values (KL, sd) keep 3 digits


def read_metrics(path: str | Path) -> list[dict]:
    """metrics.jsonl as a list of dicts (an absent file is an empty run)."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plot_curves(metrics_path: str | Path, png: str | Path, keys: tuple[str, ...] = ("train/loss",)) -> Path:
    """Training curves from metrics.jsonl as a PNG, one panel per metric present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    present = [k for k in keys if any(k in r for r in records)]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(4 * max(1, len(present)), 3.2), squeeze=False)
    for ax, key in zip(axes[0], present):  # one panel per metric: losses and scores differ in scale
        ax.plot(
            *zip(*[(r["step"], r[key]) for r in records if key in r]), marker="." if key.startswith("eval") else None
        )
        ax.set_title(key)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return Path(png)


def plot_score_vs_flops(points: list[dict], png: str | Path, title: str) -> Path:
    """Score against GFLOPs, one labelled marker per model, like the paper's motivation figure.

    Each point: {"label", "gflops", "score", "series"} and optionally "err" (a +-bar, e.g. the std over
    seeds); points of one series are joined by a line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(figsize=(8, 4.8))
    series: dict[str, list[dict]] = {}
    for p in points:
        series.setdefault(p["series"], []).append(p)
    ticks: dict[float, str] = {}  # each x position is labelled once, under the axis
    for i, (name, pts) in enumerate(series.items()):
        pts = sorted(pts, key=lambda p: p["gflops"])
        shift = 1 + 0.025 * (i - (len(series) - 1) / 2)  # spread coinciding points (and their bars) apart
        xs, ys = [p["gflops"] * shift for p in pts], [p["score"] for p in pts]
        marker = "*" if "teacher" in name else ("s" if "dense" in name else "o")
        (line,) = ax.plot(xs, ys, marker=marker, markersize=10 if marker == "*" else 6, label=name, alpha=0.9)
        if any(p.get("err") for p in pts):
            ax.errorbar(
                xs, ys, yerr=[p.get("err", 0) for p in pts], fmt="none", ecolor=line.get_color(), capsize=3, alpha=0.7
            )
        for p in pts:
            ticks.setdefault(round(p["gflops"], 2), f"{p['label']}\n{p['gflops']:.2g}")
    ax.set_xscale("log")
    ax.set_xticks(list(ticks), list(ticks.values()), fontsize=7)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("GFLOPs per sequence (log scale)")
    ax.set_ylabel("average dev score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return Path(png)
