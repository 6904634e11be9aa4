"""`minimoe distill`: task-agnostic MiniLMv2 relation distillation of a teacher into a MiniMoE student.

The run lives in the library (training/distillation.py), where `minimoe study` reaches it too.
"""

from __future__ import annotations

from minimoe.training.distillation import DistillConfig, run_distillation


def run(cfg: DistillConfig) -> dict:
    """Distil into cfg.train.output_dir: the student (without its relation head), summary.json, inspect.json; the
    summary."""
    return run_distillation(cfg)
