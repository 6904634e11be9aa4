"""`minimoe finetune`: fine-tune a student (or a teacher) on a task, with optional logit KD.

KD teacher logits are computed once per training example and cached on disk (distill/teacher_cache.py),
so the teacher never runs inside the training loop and several students can share one pass.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import minimoe  # noqa: F401  (registers MiniMoE with the Auto classes)
from minimoe.assets.fetch import PACKAGED_TASKS, fetch_task
from minimoe.assets.resolve import load_pretrained, resolve_model
from minimoe.data.encode import TaskDataset, encode_task, pad_collator
from minimoe.data.tasks import TaskSpec, custom_task, get_task, load_hf_task, load_task
from minimoe.distill.objectives import TaskObjective
from minimoe.distill.teacher_cache import check_same_tokenizer, teacher_logits
from minimoe.distill.trainer import TrainConfig, Trainer, make_accelerator
from minimoe.errors import MiniMoEError
from minimoe.files import atomic_write_text, save_model
from minimoe.recipe import dump_recipe
from minimoe.report import plot_curves


@dataclass
class FinetuneConfig:
    """Fine-tuning a student or a teacher on a task, with optional logit KD (`minimoe finetune`)."""

    model: str = ""  # a MiniMoE student directory, or any HF encoder (a teacher's own score)
    task: str = "movie-sentiment"  # a GLUE task, a packaged task (snli, movie-sentiment), or a name for your files
    data_dir: str = ""  # GLUE-layout directory; empty = the packaged task's cache; hub = the datasets library
    train_file: str = ""  # your own CSV/TSV/JSONL training file (with dev_file, text_columns, label_column, labels)
    dev_file: str = ""  # your own dev file; empty = evaluate on the training file
    text_columns: list[str] = field(default_factory=lambda: ["sentence"])  # the 1 or 2 text columns of your files
    label_column: str = "label"  # the label column of your files
    labels: list[str] = field(default_factory=list)  # label values of your files; empty = regression
    teacher: str = ""  # a fine-tuned teacher directory for logit KD; empty = no KD
    kd_alpha: float = 0.5  # weight of the KD loss (the rest is the task loss)
    kd_temperature: float = 1.0  # softmax temperature of the KD loss
    max_length: int = 128  # tokens per example
    max_train_examples: int = 0  # a fixed random subset of the training set; 0 = all
    max_eval_examples: int = 0  # a fixed random subset of the dev set; 0 = all
    metric_for_best: str = ""  # dev metric that picks the best checkpoint; empty = the task's main score
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            output_dir="runs/finetune", lr=5e-5, warmup_ratio=0.1, epochs=3.0, grad_clip=1.0, save_every=0
        )
    )

    def __post_init__(self) -> None:
        if not 0 <= self.kd_alpha <= 1:
            raise MiniMoEError(f"kd_alpha must be between 0 and 1, got {self.kd_alpha}")
        if not self.kd_temperature > 0:
            raise MiniMoEError(f"kd_temperature must be positive, got {self.kd_temperature}")
        if self.max_length < 8:
            raise MiniMoEError(f"max_length must be at least 8, got {self.max_length}")
        for name in ("max_train_examples", "max_eval_examples"):
            if getattr(self, name) < 0:
                raise MiniMoEError(f"{name} must not be negative, got {getattr(self, name)}")


def _subsample(examples: list, limit: int) -> list:
    """A fixed (seed 0) random subset, the same for every run and seed, or all examples."""
    return random.Random(0).sample(examples, limit) if 0 < limit < len(examples) else examples


def load_splits(cfg: FinetuneConfig) -> tuple[TaskSpec, list, list]:
    """The task spec and its train/dev examples, from files, the packaged cache or the hub."""
    if cfg.train_file:
        spec = custom_task(
            cfg.task,
            {"train": cfg.train_file, "dev": cfg.dev_file or cfg.train_file},
            cfg.text_columns,
            cfg.label_column,
            cfg.labels or None,
        )
        train, dev = load_task(spec, "/", "train"), load_task(spec, "/", "dev")
    elif cfg.data_dir == "hub":
        spec = get_task(cfg.task)
        train, dev = load_hf_task(cfg.task, "train"), load_hf_task(cfg.task, "dev")
    else:
        spec = get_task(cfg.task)
        if cfg.data_dir:
            data_dir = Path(cfg.data_dir)
        elif cfg.task in PACKAGED_TASKS:
            data_dir = fetch_task(cfg.task)
        else:
            raise MiniMoEError(f"task {cfg.task!r} needs --data_dir (its GLUE TSV directory) or --data_dir hub")
        train, dev = load_task(spec, data_dir, "train"), load_task(spec, data_dir, "dev")
    return spec, _subsample(train, cfg.max_train_examples), _subsample(dev, cfg.max_eval_examples)


def load_task_model(path: str, spec: TaskSpec) -> nn.Module:
    """Any HF encoder (MiniMoE included) with a fresh or matching classification head for the task."""
    labels = spec.labels or ("score",)
    return load_pretrained(
        AutoModelForSequenceClassification,
        path,
        num_labels=spec.num_labels,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )


def make_evaluator(accelerator, spec: TaskSpec, data: TaskDataset, collate, batch_size: int):
    """evaluate(objective) -> the task's dev metrics, gathered across processes."""
    loader = accelerator.prepare(DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate))

    @torch.no_grad()
    def evaluate(objective: nn.Module) -> dict:
        preds, labels = [], []
        for batch in loader:
            logits = objective(**batch)["logits"]
            logits, gold = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
            preds.append(logits.cpu())
            labels.append(gold.cpu())
        return spec.score(torch.cat(preds).numpy(), torch.cat(labels).numpy())

    return evaluate


def run(cfg: FinetuneConfig) -> dict:
    """Fine-tune, keep the best dev checkpoint under output_dir/best, write results.json; return it."""
    if not cfg.model:
        raise MiniMoEError("finetune needs --model (a student directory, a packaged teacher name, or a hub name)")
    out = Path(cfg.train.output_dir)
    spec, train, dev = load_splits(cfg)
    model_path = resolve_model(cfg.model)
    tokenizer = load_pretrained(AutoTokenizer, model_path)
    collate = pad_collator(tokenizer)
    train_data, dev_data = encode_task(train, tokenizer, cfg.max_length), encode_task(dev, tokenizer, cfg.max_length)

    accelerator = make_accelerator(cfg.train)
    if cfg.teacher:
        check_same_tokenizer(tokenizer, load_pretrained(AutoTokenizer, cfg.teacher), cfg.teacher)
        with accelerator.main_process_first():
            logits = teacher_logits(
                cfg.teacher, spec.labels, train_data, collate, cfg.train.batch_size * 2, accelerator
            )
        if logits.shape != (len(train_data), spec.num_labels):
            raise MiniMoEError(
                f"KD teacher {cfg.teacher} gives {logits.shape[1]} outputs; task {spec.name} has {spec.num_labels}"
            )
        train_data = TaskDataset([f | {"teacher_logits": lg.tolist()} for f, lg in zip(train_data.features, logits)])

    objective = TaskObjective(load_task_model(model_path, spec), spec.labels is None, cfg.kd_alpha, cfg.kd_temperature)
    evaluate = make_evaluator(accelerator, spec, dev_data, collate, cfg.train.batch_size * 2)
    best_metric = cfg.metric_for_best or "score"
    best_file = out / "best" / "dev_metrics.json"

    def on_best(objective: TaskObjective, metrics: dict) -> None:
        save_model(objective.model, tokenizer, out / "best")
        atomic_write_text(best_file, json.dumps(metrics))

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(dump_recipe(cfg))
    trainer = Trainer(
        cfg.train,
        objective,
        train_data,
        collate,
        evaluate=evaluate,
        best_metric=best_metric,
        on_best=on_best,
        accelerator=accelerator,
        run_config=asdict(cfg),
    )
    result = trainer.train()
    final = {k.removeprefix("eval/"): round(v, 4) for k, v in result.last_metrics.items() if k.startswith("eval/")}
    summary = {
        "task": spec.name,
        "model": cfg.model,
        "kd_teacher": cfg.teacher or None,
        "train_examples": len(train_data),
        "dev_examples": len(dev_data),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "best": {k: round(v, 4) for k, v in json.loads(best_file.read_text()).items()}
        if best_file.is_file()
        else final,
        "final": final,
        "best_dir": str(out / "best"),
    }
    if accelerator.is_main_process:
        atomic_write_text(out / "results.json", json.dumps(summary, indent=2))
        plot_curves(out / "metrics.jsonl", out / "curves.png", ("train/loss", "train/balance", "eval/score"))
    return summary
