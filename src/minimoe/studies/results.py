"""A study's results and its report: study.md (the tables), study.json (what `minimoe compare` reads) and plots."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from minimoe.errors import MiniMoEError
from minimoe.files import atomic_write_text
from minimoe.report import markdown_table, plot_curve_panels, plot_score_vs_flops
from minimoe.studies.statistics import kl_marks

REPORT_FILES = ("study.md", "study.json", "score_vs_flops.png", "kl_curves.png")


@dataclass
class StudyResults:
    """Everything a study reports, as study.json holds it."""

    config: dict
    """the study's recipe"""
    rows: list[dict]
    """the table: one row per model (teacher, then each student kind), means and spreads over seeds"""
    paired: list[dict] = field(default_factory=list)
    """MiniMoE - dense, paired by seed, per teacher, variant and size"""
    ablations: list[dict] = field(default_factory=list)
    """each variant - the base student with the same experts, paired by seed"""
    relation_kl: list[dict] = field(default_factory=list)
    """relation KL of every student kind at evenly spaced distillation steps"""
    runs: list[dict] = field(default_factory=list)
    """every student kind's per-seed results"""

    @classmethod
    def load(cls, directory: str | Path) -> StudyResults:
        """The results a study wrote in `directory`, with a clear error when there are none."""
        path = Path(directory) / "study.json"
        if not path.is_file():
            raise MiniMoEError(f"{path} not found: pass a `minimoe study` output directory")
        try:
            data = json.loads(path.read_text())
            return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise MiniMoEError(f"{path} is not a study report ({e!r}); rerun the study to rewrite it") from None


def study_table(results: StudyResults, tasks: list[str], latency: bool, steps: int) -> str:
    """study.md: the table, the paired differences, the ablations against the base grid, relation KL during
    distillation."""
    columns = ["teacher", "model", "params (M)", "active (M)", "paper GMACs", "GFLOPs"]
    columns += ["ms @32x128"] if latency else []
    columns += ["distill KL", "train loss", "router top p", "forced change"]
    spread = len(results.config["seeds"]) > 1  # std columns only when there is a spread to show
    columns += [c for t in tasks for c in (t, f"{t} sd")[: 1 + spread]]
    columns += ["average", "average sd"][: 1 + spread] + ["% of teacher", "seeds"]
    diff_columns = [c for k in [*tasks, "average"] for c in (f"{k} diff", f"{k} diff sd")]
    diff_columns += ["average diffs", "distill KL diff", "train loss diff", "seeds"]
    table = markdown_table(results.rows, columns)
    if results.paired:
        table += "\n\nPaired by seed (MiniMoE - dense, points; sd over seeds):\n\n"
        table += markdown_table(results.paired, ["teacher", "variant", "size", "pair", *diff_columns])
    if results.ablations:
        table += "\n\nAblations against the base grid (variant - base student with the same experts, paired by "
        table += "seed; points; sd over seeds):\n\n"
        table += markdown_table(results.ablations, ["teacher", "variant", "size", "student", *diff_columns])
    if results.relation_kl:
        window = round(kl_marks(results.runs[0]["curves"], steps)[1])
        table += f"\n\nRelation KL during distillation (mean of the logged values over the {window} steps "
        table += "before each step, then over seeds):\n\n"
        table += markdown_table(
            [{k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()} for r in results.relation_kl],
            list(results.relation_kl[0]),
        )
    return table + "\n"


def write_report(results: StudyResults, out: Path, tasks: list[str], latency: bool, steps: int) -> str:
    """study.md, study.json, score_vs_flops.png and kl_curves.png in `out`; returns the table."""
    table = study_table(results, tasks, latency, steps)
    atomic_write_text(out / "study.md", table)
    runs = [{k: v for k, v in r.items() if k not in ("curves", "best_dir")} for r in results.runs]
    atomic_write_text(out / "study.json", json.dumps(asdict(results) | {"runs": runs}, indent=2))
    spread = len(results.config["seeds"]) > 1
    points = [
        {
            "label": r["model"].split()[0] if r["model"] != "teacher" else "teacher",
            "gflops": r["GFLOPs"],
            "score": r["average"],
            "err": r["average sd"],
            "series": f"{r['teacher']} / " + ("teacher" if r["model"] == "teacher" else r["model"].split(" ", 1)[1]),
        }
        for r in results.rows
    ]
    bars = "; bars: std over seeds" if spread else ""
    plot_score_vs_flops(points, out / "score_vs_flops.png", f"average dev score vs FLOPs (seq 128{bars})")
    panels: dict[str, dict[str, list]] = {}
    for r in results.runs:  # one panel per teacher / variant / size; dense and MiniMoE together
        panel = f"{r['teacher']} {r['size']}" + (f" [{r['variant']}]" if r["variant"] else "")
        panels.setdefault(panel, {})[r["label"].split(" ", 1)[1].split(" [")[0]] = r["curves"]
    plot_curve_panels(panels, out / "kl_curves.png", "relation KL", "distillation step")
    return table
