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


def save_figure(fig, png: str | Path, dpi: int = 120) -> Path:
    """Lay out, write and close a matplotlib figure; returns the PNG's path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(png, dpi=dpi)
    plt.close(fig)
    return Path(png)


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
    return save_figure(fig, png, dpi=120)


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
    return save_figure(fig, png, dpi=120)


def plot_paired_differences(cells: list[dict], png: str | Path, target: float) -> Path:
    """One row per study cell: the mean MiniMoE - dense difference with its sd over seeds, against 0 and the
    target. Each cell: {"study", "cell", "average diff", "average diff sd"}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.4 * len(cells)))
    ys = list(range(len(cells)))[::-1]  # the first cell on top
    colors = {s: f"C{i}" for i, s in enumerate(dict.fromkeys(c["study"] for c in cells))}
    for y, c in zip(ys, cells):
        ax.errorbar(c["average diff"], y, xerr=c["average diff sd"], fmt="o", capsize=3, color=colors[c["study"]])
    ax.axvline(0, color="grey", lw=1)
    ax.axvline(target, color="green", ls="--", lw=1, label=f"target (+{target:g})")
    ax.set_yticks(ys, [f"{c['study']}: {c['cell']}" for c in cells], fontsize=8)
    ax.set_xlabel("MiniMoE - dense, average dev score (points; bars: sd over seeds)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, png, dpi=120)


def plot_expert_diagnostics(report: dict, png: str | Path) -> Path:
    """Expert diagnostics (`minimoe.diagnostics.diagnose`) as a PNG: load and router entropy per layer, and a
    token-to-expert heat map (the share of each frequent token's occurrences each expert takes, per layer).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers, E = report["layers"], report["num_experts"]
    heat = np.asarray(report["heatmap"]["fractions"])  # [L, K, E]
    tokens = report["heatmap"]["tokens"]
    fig, (ax_load, ax_entropy, ax_heat) = plt.subplots(
        1, 3, figsize=(14, 0.9 + 0.18 * max(len(tokens), 12)), gridspec_kw={"width_ratios": [1, 1, 1.4]}
    )
    loads = np.asarray([layer["load"] for layer in layers])  # [L, E]
    bottom = np.zeros(len(layers))
    for e in range(E):  # stacked bars: each expert's share of the tokens per layer
        ax_load.bar(range(len(layers)), 100 * loads[:, e], bottom=bottom, label=f"expert {e}")
        bottom += 100 * loads[:, e]
    ax_load.axhline(100 / E, color="k", lw=0.5, ls=":")
    ax_load.set(title="load per expert (% of tokens)", xlabel="layer", xticks=range(len(layers)))
    ax_load.legend(fontsize=6, ncol=2)
    x = range(len(layers))
    ax_entropy.plot(x, [layer["entropy_ratio"] for layer in layers], marker="o", label="entropy / ln E")
    ax_entropy.plot(x, [layer["top_prob"] for layer in layers], marker="s", label="mean top probability")
    ax_entropy.axhline(1 / E, color="k", lw=0.5, ls=":")
    ax_entropy.set(title="router confidence", xlabel="layer", xticks=list(x), ylim=(0, 1.05))
    ax_entropy.legend(fontsize=7)
    ax_entropy.grid(alpha=0.3)
    image = ax_heat.imshow(
        heat.transpose(1, 0, 2).reshape(len(tokens), -1), aspect="auto", vmin=0, vmax=1, cmap="viridis"
    )
    ax_heat.set_yticks(range(len(tokens)), tokens, fontsize=7)
    ax_heat.set_xticks(range(0, heat.shape[0] * E, E), [f"L{i}" for i in range(heat.shape[0])])
    for boundary in range(E, heat.shape[0] * E, E):
        ax_heat.axvline(boundary - 0.5, color="w", lw=1)
    ax_heat.set_title(f"token -> expert (share of its occurrences; {E} experts per layer)")
    fig.colorbar(image, ax=ax_heat, fraction=0.04)
    return save_figure(fig, png, dpi=110)


def plot_curve_panels(panels: dict[str, dict[str, list[list]]], png: str | Path, ylabel: str, xlabel: str) -> Path:
    """Curves of several runs side by side: one panel per group, one colour per series, one line per run.

    panels: {panel title: {series name: [run curve, ...]}}, each curve a list of (x, y), e.g. the relation
    KL of the dense and MiniMoE students of one size, one curve per seed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(name for series in panels.values() for name in series))  # same colour everywhere
    for ax, (title, series) in zip(axes[0], panels.items()):
        for name, curves in series.items():
            colour = colours[names.index(name) % len(colours)]
            for i, curve in enumerate(c for c in curves if c):
                marker = "." if len(curve) < 20 else None  # a short run's few points stay visible
                ax.plot(*zip(*curve), color=colour, alpha=0.8, lw=1, marker=marker, label=name if i == 0 else None)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, png, dpi=110)
