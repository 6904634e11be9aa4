"""`minimoe compare`: the paired differences (MiniMoE - dense) of several studies side by side.

Reads each study's study.json and writes compare.md (one row per study cell, with whether it meets a gain
target) and compare.png (the mean difference per cell with its spread over seeds), so regimes run as
separate `minimoe study` grids can be judged together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from minimoe.errors import MiniMoEError
from minimoe.files import atomic_write_text
from minimoe.report import markdown_table, plot_paired_differences
from minimoe.studies.results import StudyResults


@dataclass
class CompareConfig:
    """Several studies' MiniMoE - dense differences in one table and plot (`minimoe compare`)."""

    studies: list[str] = field(default_factory=list)
    """study output directories (with study.json); NAME=DIR names one"""
    output_dir: str = "runs/compare"
    """where compare.md and compare.png go"""
    target: float = 1.0
    """the gain (points) a cell must reach, and exceed twice its seed spread, to count"""


def paired_cells(spec: str) -> list[dict]:
    """The paired rows of one study, each named by study, size, pair and variant."""
    name, _, directory = spec.rpartition("=")
    name = name or Path(directory).name
    return [
        {
            "study": name,
            "cell": f"{p['size']} {p['pair']}" + ("" if p["variant"] == "base" else f" [{p['variant']}]"),
            **{k: p[k] for k in ("average diff", "average diff sd", "average diffs", "distill KL diff", "seeds")},
        }
        for p in StudyResults.load(directory).paired
    ]


def run(cfg: CompareConfig) -> dict:
    """Table and plot of every study's cells; the summary says how many meet the target."""
    if not cfg.studies:
        raise MiniMoEError("no studies given: pass --studies DIR [DIR ...]")
    cells = [c for spec in cfg.studies for c in paired_cells(spec)]
    if not cells:
        raise MiniMoEError("the studies have no MiniMoE - dense pairs (a study needs experts 1 and >1)")
    for c in cells:
        met = c["average diff"] >= cfg.target and c["average diff"] > 2 * c["average diff sd"]
        c["target met"] = "yes" if met else "no"
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    columns = ["study", "cell", "average diff", "average diff sd", "average diffs", "distill KL diff", "seeds"]
    table = markdown_table(cells, [*columns, "target met"])
    header = f"MiniMoE - dense, paired by seed (points; target: >= {cfg.target:g} and > 2 sd):\n\n"
    atomic_write_text(out / "compare.md", header + table + "\n")
    plot_paired_differences(cells, out / "compare.png", cfg.target)
    print(table)
    return {
        "cells": len(cells),
        "target met": sum(c["target met"] == "yes" for c in cells),
        "table": str(out / "compare.md"),
        "plot": str(out / "compare.png"),
    }
