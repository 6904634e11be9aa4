"""`minimoe study`: the paper's capacity-gap experiment as a grid of teachers x student sizes x dense/MiniMoE x seeds.

Every stage is a distillation or fine-tuning run whose config comes from the recipe's `distill:`, `finetune:` and
`teacher_finetune:` sections (minimoe/studies). A rerun keeps the finished stages, so an interrupted study
resumes where it stopped and a finished one rewrites its report.
"""

from __future__ import annotations

from minimoe.studies.config import StudyConfig
from minimoe.studies.grid import run_study


def run(cfg: StudyConfig) -> list[dict]:
    """Run the grid into cfg.output_dir; study.md, study.json and the plots; the table's rows."""
    return run_study(cfg)
