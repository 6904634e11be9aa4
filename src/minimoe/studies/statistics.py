"""What a study reads from its stages' directories, and the statistics over seeds it reports.

A student's run (`per_seed`) maps each seed to its scores per task, their average, the final relation KL, the
fine-tuning train loss and the router statistics; differences between two students are taken seed by seed.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from minimoe.report import read_metrics

KL_MARKS, KL_WINDOW = 6, 0.4  # relation KL is tabulated at 6 evenly spaced steps, each over 40% of the interval


def relation_kl_curve(distill_dir: Path) -> list[tuple[int, float]]:
    """(step, relation KL) at every logged distillation step."""
    records = read_metrics(distill_dir / "metrics.jsonl")
    return [(m["step"], m["train/relation_kl"]) for m in records if "train/relation_kl" in m]


def final_relation_kl(distill_dir: Path) -> float:
    """The relation KL at the last logged distillation step: how closely the student fits the teacher."""
    curve = relation_kl_curve(distill_dir)
    return curve[-1][1] if curve else float("nan")


def final_train_loss(run_dir: Path, fraction: float = 0.1) -> float:
    """Mean fine-tuning task loss over the last 10% of logged steps: how closely the model fits its training set
    (a model that scores lower with a higher loss underfits; with a lower loss, it overfits)."""
    losses = [m["train/task_loss"] for m in read_metrics(run_dir / "metrics.jsonl") if "train/task_loss" in m]
    return statistics.mean(losses[-max(1, int(len(losses) * fraction)) :]) if losses else float("nan")


def expert_usage(distill_dir: Path) -> dict:
    """The student's mean router top probability and forced-expert change over layers (its inspect.json)."""
    path = distill_dir / "inspect.json"
    if not path.is_file():
        return {}
    layers = json.loads(path.read_text())["layers"]
    return {
        "router top p": statistics.mean(x["top_prob"] for x in layers),
        "forced change": statistics.mean(statistics.mean(x["forced_change"]) for x in layers),
    }


def kl_marks(curves: list[list[tuple[int, float]]], steps: int) -> tuple[list[int], float]:
    """The steps to tabulate relation KL at (KL_MARKS evenly spaced ones, fewer when fewer steps were logged)
    and the window before each to average over: KL_WINDOW of the interval, but at least the logging interval,
    so every window holds a logged value."""
    logged = sorted({s for curve in curves for s, _ in curve})
    spacing = steps / max(1, min(KL_MARKS, len(logged)))
    interval = min((b - a for a, b in zip(logged, logged[1:])), default=steps)
    return [round(k * spacing) for k in range(1, round(steps / spacing) + 1)], max(KL_WINDOW * spacing, interval)


def kl_at_marks(curves: list[list[tuple[int, float]]], steps: int) -> dict[int, float]:
    """Relation KL at the `kl_marks` steps, mean over seeds. Each value is the mean of the logged ones in the
    window before its mark, so one batch's noise decides no comparison."""
    marks, window = kl_marks(curves, steps)
    out = {}
    for mark in marks:
        windows = [[v for s, v in curve if mark - window < s <= mark] for curve in curves]
        means = [statistics.mean(w) for w in windows if w]
        out[mark] = statistics.mean(means) if means else float("nan")
    return out


def summary_row(scores: dict[str, list[float]]) -> dict:
    """Per-task mean and std over seeds, and the average over tasks with its std over seeds."""
    row = {}
    for task, values in scores.items():
        row[task] = statistics.mean(values)
        row[f"{task} sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    row["average"] = statistics.mean(row[t] for t in scores)
    per_seed = [statistics.mean(vals) for vals in zip(*scores.values())]
    row["average sd"] = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
    row["seeds"] = len(per_seed)
    return row


def student_kind(run: dict) -> tuple:
    """What makes two grid runs the same students: a dense student of a variant that only turns MoE-only fields is
    the base one (same tag), run once and shown once."""
    return run["teacher"], run["size"], run["experts"], run["tag"]


def seed_differences(a: dict, b: dict, tasks: list[str]) -> dict:
    """`a` - `b` over the seeds both ran: mean and std per task, on the average, of the final relation KL and of
    the fine-tuning train loss; the per-seed average differences; the seed count."""
    seeds = [s for s in a["per_seed"] if s in b["per_seed"]]
    row = {}
    for key in [*tasks, "average", "distill KL", "train loss"]:
        diffs = [a["per_seed"][s][key] - b["per_seed"][s][key] for s in seeds]
        row[f"{key} diff"] = statistics.mean(diffs)
        row[f"{key} diff sd"] = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    row["average diffs"] = " ".join(f"{a['per_seed'][s]['average'] - b['per_seed'][s]['average']:+.2f}" for s in seeds)
    row["seeds"] = len(seeds)
    return row


def paired_differences(runs: list[dict], tasks: list[str]) -> list[dict]:
    """MiniMoE - dense per seed, for every MiniMoE run set with a dense one of the same teacher, variant and size.

    Mean and std over the seeds both have, per task and on the average (and the final relation KL).
    """
    rows = []
    for moe in (r for r in runs if r["experts"] > 1):
        dense = next(
            (r for r in runs if r["experts"] == 1 and all(r[k] == moe[k] for k in ("teacher", "variant", "size"))), None
        )
        if dense is None:
            continue
        row = {"teacher": moe["teacher"], "variant": moe["variant"] or "base", "size": moe["size"]}
        row["pair"] = f"E={moe['experts']} - dense"
        rows.append(row | seed_differences(moe, dense, tasks))
    return rows


def ablation_differences(runs: list[dict], tasks: list[str]) -> list[dict]:
    """Each variant - the base student of the same teacher, size and experts, per seed: what a variant's overrides
    do to that student (a dense student the variant leaves unchanged is the base one, so it has no row)."""
    rows, same = [], ("teacher", "size", "experts")
    for variant in (r for r in runs if r["variant"]):
        base = next((r for r in runs if not r["variant"] and all(r[k] == variant[k] for k in same)), None)
        if base is None or student_kind(base) == student_kind(variant):
            continue
        row = {"teacher": variant["teacher"], "variant": variant["variant"], "size": variant["size"]}
        row["student"] = "dense" if variant["experts"] == 1 else f"E={variant['experts']}"
        rows.append(row | seed_differences(variant, base, tasks))
    return rows


def kl_rows(runs: list[dict], steps: int) -> list[dict]:
    """Relation KL of every student kind at evenly spaced distillation steps (mean over seeds): where the
    dense curve flattens and whether MiniMoE goes lower. A dense student shared by variants shows once."""
    rows, seen = [], set()
    for r in runs:
        if student_kind(r) not in seen:
            seen.add(student_kind(r))
            marks = kl_at_marks(r["curves"], steps)
            rows.append({"teacher": r["teacher"], "student": r["label"]} | {str(m): v for m, v in marks.items()})
    return rows
