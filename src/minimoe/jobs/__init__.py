"""One module per `minimoe` command that runs a job: its config dataclass and its `run(config)`.

distill (task-agnostic relation distillation), finetune (task fine-tuning with optional KD), study (the
capacity-gap grid), demo (the embedded default end to end), inspect (expert diagnostics).
"""
