"""The suite's plots (docs/img/perf_*.png), drawn from perf.json alone."""

from __future__ import annotations

from pathlib import Path

from .presets import TARGETS


def plot_all(perf: dict, img_dir: Path) -> list[Path]:
    """Every plot of the page into img_dir; returns their paths (the page links them by file stem)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    hw = perf["meta"]["hardware"]
    machine = f"{hw['cpu']}, {hw['threads']} threads, torch {hw['torch']}"

    def save(fig, name: str) -> None:
        fig.text(0.99, 0.005, machine, ha="right", va="bottom", fontsize=7, color="gray")
        fig.tight_layout(rect=(0, 0.02, 1, 1))
        path = img_dir / f"perf_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    inf = perf["inference"]
    seq = inf["seq_len"]
    # -- inference latency per model, both batches
    fig, axes = plt.subplots(1, len(inf["batches"]), figsize=(12, 4.8))
    listed = {m["model"] for m in inf["models"]}  # not the other routing regimes: they are in the ratio plot
    for ax, batch in zip(axes, inf["batches"]):
        rows = [r for r in inf["latency"] if r["batch"] == batch and r["dtype"] == "fp32" and r["model"] in listed]
        names = [r["model"] for r in rows]
        colors = ["tab:gray" if "dense" in n else "tab:orange" if "MoE" in n else "tab:blue" for n in names]
        ax.barh(names, [r["ms"] for r in rows], color=colors)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("latency per batch (ms, median, log scale)")
        ax.set_title(f"Inference latency, batch {batch} x seq {seq} (fp32)")
        for y, r in enumerate(rows):
            ax.text(r["ms"], y, f" {r['ms']:.1f} ms | {r['seq_per_s']:.0f} seq/s", va="center", fontsize=7)
        ax.set_xlim(right=max(r["ms"] for r in rows) * 12)
    save(fig, "inference")

    # -- MoE/dense ratios per shape: bars = balanced routers (the targets), markers = the other two regimes
    ratios = perf["inference"]["moe_vs_dense_tuned_malloc"]
    shapes = list(dict.fromkeys(r["shape"] for r in ratios))
    by = {(r["shape"], r["batch"]): r for r in ratios}
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.3
    for i, batch in enumerate(inf["batches"]):
        xs = [j + (i - 0.5) * width for j in range(len(shapes))]
        vals = [by[(s, batch)]["latency_ratio"] for s in shapes]
        ax.bar(xs, vals, width, label=f"balanced routers, batch {batch}")
        for x, v in zip(xs, vals):
            ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        for key, marker, label in (
            ("latency_ratio_grouped_dispatch", "x", "before fix (grouped)"),
            ("latency_ratio_random_routers", "o", "random routers"),
        ):
            ax.plot(
                xs,
                [by[(s, batch)][key] for s in shapes],
                marker,
                color="black" if marker == "x" else "tab:red",
                mfc="none",
                ls="none",
                label=label if i == 0 else None,
            )
    ax.plot(range(len(shapes)), [by[(s, inf["batches"][0])]["flops_ratio"] for s in shapes], "k^", label="FLOPs")
    ax.axhline(
        TARGETS["latency_b32"], color="tab:green", ls="--", lw=1, label=f"target batch 32 ({TARGETS['latency_b32']})"
    )
    ax.axhline(TARGETS["latency_b1"], color="tab:red", ls=":", lw=1, label=f"target batch 1 ({TARGETS['latency_b1']})")
    ax.axhline(1.0, color="black", lw=0.5)
    ax.set_xticks(range(len(shapes)), shapes)
    ax.set_xlabel("student shape (per-expert FFN width 4 x hidden)")
    ax.set_ylabel("MiniMoE (E=4) / dense (E=1)")
    ax.set_title(f"MoE/dense cost ratio, seq {seq} (paired medians, tuned malloc)")
    top = max(
        max(r[k] for k in ("latency_ratio", "latency_ratio_grouped_dispatch", "latency_ratio_random_routers"))
        for r in ratios
    )
    ax.set_ylim(0, max(1.5, top) * 1.45)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    save(fig, "moe_dense_ratio")

    # -- layer: time vs experts
    sc = perf["scaling"]
    ex = sc["experts"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    es = [r["experts"] for r in ex["rows"]]
    ax.plot(es, [r["ms"] for r in ex["rows"]], "o-", label="MoE FFN layer, balanced routers")
    ax.plot(
        es,
        [r["ms_random_routers"] for r in ex["rows"]],
        "s--",
        color="tab:gray",
        mfc="none",
        label="MoE FFN layer, random-init routers",
    )
    base = ex["rows"][0]["ms"]
    ax.axhline(
        base * TARGETS["experts_16_over_1"],
        color="tab:red",
        ls=":",
        lw=1,
        label=f"target: {TARGETS['experts_16_over_1']} x time(E=1)",
    )
    for r in ex["rows"]:
        ax.annotate(
            f"{r['ratio_vs_e1']:.2f}x",
            (r["experts"], r["ms"]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(es, [str(e) for e in es])
    ax.set_ylim(0, max(max(r["ms"], r["ms_random_routers"]) for r in ex["rows"]) * 1.4)
    ax.set_xlabel("number of experts E (top-1, same per-token FLOPs)")
    ax.set_ylabel("forward time (ms, median)")
    ax.set_title(
        f"MoE layer cost vs experts: {ex['batch']}x{ex['seq']} tokens, hidden {sc['hidden']}, "
        f"expert width {sc['expert_width']}",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="lower right")
    save(fig, "layer_experts")

    # -- layer: time and memory vs seq and vs batch
    for key, label in (("seq", "sequence length (tokens)"), ("batch", "batch size (sequences)")):
        d = sc[key]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for E, style in ((1, "s-"), (4, "o-")):
            rows = [r for r in d["rows"] if r["experts"] == E]
            xs = [r[key] for r in rows]
            name = "dense (E=1)" if E == 1 else "MoE (E=4)"
            a1.plot(xs, [r["ms"] for r in rows], style, label=name)
            a2.plot(xs, [r["tensor_peak_mb"] or float("nan") for r in rows], style, label=name)
        fixed = ", ".join(f"{k} {v}" for k, v in d["fixed"].items())
        for ax in (a1, a2):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.legend(fontsize=7)
        a1.set_ylabel("forward time (ms, median, log)")
        a1.set_title(f"MoE layer time vs {key} ({fixed}, hidden {sc['hidden']})", fontsize=10)
        a2.set_ylabel("peak tensor memory in one forward (MiB, log)")
        a2.set_title(f"MoE layer peak memory vs {key} ({fixed})", fontsize=10)
        save(fig, f"layer_{key}")

    # -- training step breakdown
    tr = perf["training"]
    rows = {r["case"]: r for r in tr["rows"]}
    fig, ax = plt.subplots(figsize=(9, 4.6))
    labels, totals, teach = [], [], []
    for dtype in ("fp32", "bf16"):
        step = rows[f"step {tr['student']} {dtype}"]["ms"]
        labels += [f"{tr['student']} MoE, {dtype}", f"{tr['student']} MoE, {dtype}, teacher cached"]
        totals += [step, rows[f"step {tr['student']} {dtype}, teacher cached"]["ms"]]
        teach += [step * tr[f"teacher_share_{dtype}"], 0.0]
    ax.barh(labels, teach, color="tab:blue", label=f"teacher forward ({tr['teacher']} .qkv)")
    ax.barh(
        labels,
        [t - s for t, s in zip(totals, teach)],
        left=teach,
        color="tab:orange",
        label="student fwd + loss + backward + AdamW",
    )
    for y, (t, s) in enumerate(zip(totals, teach)):
        ax.text(
            t,
            y,
            f" {t:.0f} ms, {tr['tokens_per_step'] / (t / 1e3):,.0f} tok/s, teacher {100 * s / t:.0f}%",
            va="center",
            fontsize=8,
        )
    ax.set_xlim(0, max(totals) * 1.6)
    ax.invert_yaxis()
    ax.set_xlabel("time per distillation step (ms, median)")
    ax.set_title(f"Task-agnostic distillation step, batch {tr['batch']} x seq {tr['seq']}")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    save(fig, "training")

    # -- dispatch comparison
    dp = perf["dispatch"]
    fig, axes = plt.subplots(len(dp["batches"]), 2, figsize=(12, 3.3 * len(dp["batches"])), squeeze=False)
    for i, batch in enumerate(dp["batches"]):
        for ax, mode in zip(axes[i], ("inference", "train")):
            rows = [r for r in dp["rows"] if r["mode"] == mode and r["batch"] == batch]
            ax.barh(
                [r["variant"] for r in rows],
                [r["ms"] for r in rows],
                color=["tab:orange", "tab:red", "tab:purple", "tab:gray"][: len(rows)],
            )
            for y, r in enumerate(rows):
                ax.text(r["ms"], y, f" {r['ms']:.2f} ms ({r['ratio_vs_sorted']:.2f}x sorted)", va="center", fontsize=8)
            ax.invert_yaxis()
            ax.set_xlim(0, max(r["ms"] for r in rows) * 1.55)
            ax.set_xlabel("time per call (ms, median)")
            ax.set_title(
                f"{'forward' if mode == 'inference' else 'forward + backward'}: batch {batch} x seq "
                f"{dp['seq']} tokens, hidden {dp['hidden']}, E={dp['experts']}",
                fontsize=10,
            )
    save(fig, "dispatch")
    return paths
