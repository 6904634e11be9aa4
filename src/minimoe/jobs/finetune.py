"""`minimoe finetune`: fine-tune a student (or a teacher) on a task, with optional logit KD.

The run lives in the library (training/finetuning.py), where `minimoe study` reaches it too.
"""

from __future__ import annotations

from minimoe.training.finetuning import FinetuneConfig, run_finetuning


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tune into cfg.train.output_dir: the best dev checkpoint under best/, results.json; the results."""
    return run_finetuning(cfg)
