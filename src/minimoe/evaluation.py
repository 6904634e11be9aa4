"""Scoring sequence classifiers on a task's splits: the evaluator finetune and evaluate share, so a model scores
the same in both; classifier loading (PyTorch or an ONNX export) and label checks."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from minimoe.assets.resolve import load_pretrained, resolve_model
from minimoe.data.encode import TaskDataset
from minimoe.data.tasks import Example, TaskSpec, load_hf_task, load_task
from minimoe.errors import MiniMoEError
from minimoe.modeling.loading import WEIGHTS_FILE, checkpoint_shapes


def read_split(spec: TaskSpec, where: str, split: str) -> list[Example]:
    """One split of a resolved task (see resolve_task)."""
    return load_hf_task(spec.name, split) if where == "hub" else load_task(spec, where, split)


def eval_splits(spec: TaskSpec) -> list[str]:
    """The splits a task is scored on: dev, then any other dev_* (MNLI's mismatched) and test."""
    return [s for s in spec.splits if s.startswith("dev") or s == "test"]


def split_key(metric: str, split: str) -> str:
    """Metric names: the dev split's are plain (`accuracy`, `score`), others suffixed (`accuracy_mismatched`)."""
    return metric if split == "dev" else f"{metric}_{split.removeprefix('dev_')}"


def make_evaluator(accelerator: Accelerator, spec: TaskSpec, splits: dict[str, TaskDataset], collate, batch_size: int):
    """evaluate(model) -> the task's metrics on every split, gathered across processes.

    `model(**batch)["logits"]` may be a sequence classifier or the finetune objective wrapping one.
    """
    loaders = {
        split: accelerator.prepare(DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate))
        for split, data in splits.items()
    }

    @torch.no_grad()
    def evaluate(model) -> dict[str, float]:
        metrics = {}
        for split, loader in loaders.items():
            preds, labels = [], []
            for batch in loader:
                logits = model(**batch)["logits"]  # [B, C]
                logits, gold = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
                preds.append(logits.cpu())
                labels.append(gold.cpu())
            scores = spec.score(torch.cat(preds).numpy(), torch.cat(labels).numpy())
            metrics |= {split_key(k, split): v for k, v in scores.items()}
        return metrics

    return evaluate


def model_labels(config) -> tuple[str, ...] | None:
    """The label names a classifier was saved with; None for regression or transformers' LABEL_i defaults."""
    names = tuple(config.id2label[i] for i in range(config.num_labels))
    if config.num_labels == 1 or names == tuple(f"LABEL_{i}" for i in range(config.num_labels)):
        return None
    return names


def check_labels(spec: TaskSpec, config, model: str) -> None:
    """The model must have one output per task label, and (if it names them) the task's names, in order."""
    if config.num_labels != spec.num_labels:
        raise MiniMoEError(
            f"model {model} has {config.num_labels} outputs; task {spec.name} has {spec.num_labels} "
            f"({', '.join(spec.names)})"
        )
    names = model_labels(config)
    if names is not None and names not in (spec.names, spec.labels):
        raise MiniMoEError(
            f"model {model} was trained with labels {list(names)}, task {spec.name} has {list(spec.names)}: "
            "pass --labels in the model's order"
        )


def load_classifier(name: str):
    """A fine-tuned sequence classifier and its tokenizer; a local model without head weights (a distilled
    student, a sentence-embedding teacher) is refused, as its scores would be chance.
    """
    path = resolve_model(name)
    weights = Path(path) / WEIGHTS_FILE
    if weights.is_file() and not any("classifier" in key for key in checkpoint_shapes(Path(path))):
        raise MiniMoEError(
            f"{name} has no classification head ({weights} has no classifier weights): fine-tune it first"
        )
    return load_pretrained(AutoModelForSequenceClassification, path), load_pretrained(AutoTokenizer, path)


def onnx_classifier(path: str):
    """model(**batch) -> {"logits": [B, C]} for an ONNX export of the classifier, run in onnxruntime.

    The model directory still supplies the tokenizer and the label names; the export's outputs must be logits.
    """
    from minimoe.exporting import onnx_session, run_onnx

    if not Path(path).is_file():
        raise MiniMoEError(f"--onnx {path}: no such file (write one with minimoe export)")
    session = onnx_session(path)
    if [o.name for o in session.get_outputs()] != ["logits"]:
        raise MiniMoEError(f"--onnx {path} is not a classifier export (its output is not logits)")

    def forward(input_ids, attention_mask, token_type_ids=None, **_):
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        return {"logits": run_onnx(session, (input_ids, attention_mask, token_type_ids))}

    return forward
