"""Human-facing output: the end-of-run summary, comparison tables, and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path


def print_summary(title: str, summary: dict) -> None:
    """A short, readable block at the end of a job."""
    width = max(len(k) for k in summary) + 2
    print(f"\n== {title} done ==")
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"{key:<{width}}{value}")


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """Rows of dicts as a GitHub-markdown table (missing cells blank)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def read_metrics(path: str | Path) -> list[dict]:
    """metrics.jsonl as a list of dicts (an absent file is an empty run)."""
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plot_curves(metrics_path: str | Path, png: str | Path, keys: tuple[str, ...] = ("train/loss",)) -> Path:
    """Training curves from metrics.jsonl as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in keys:
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points), label=key)
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return Path(png)


def plot_score_vs_flops(points: list[dict], png: str | Path, title: str) -> Path:
    """Score against GFLOPs, one labelled marker per model, like the paper's motivation figure.

    Each point: {"label", "gflops", "score", "series"}; points of one series are joined by a line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    series: dict[str, list[dict]] = {}
    for p in points:
        series.setdefault(p["series"], []).append(p)
    for name, pts in series.items():
        pts = sorted(pts, key=lambda p: p["gflops"])
        ax.plot([p["gflops"] for p in pts], [p["score"] for p in pts], marker="o", label=name)
        for p in pts:
            ax.annotate(p["label"], (p["gflops"], p["score"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("GFLOPs per sequence (log scale)")
    ax.set_ylabel("average dev score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return Path(png)
