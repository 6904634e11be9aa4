"""`minimoe evaluate`: a fine-tuned model's metrics on a task's dev (or test) files, as finetune computes them.

Task resolution (GLUE / packaged / your files) and the evaluator live here and are shared with finetune, so
a model scores the same in both.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

import minimoe  # noqa: F401  (registers MiniMoE with the Auto classes)
from minimoe.assets.fetch import PACKAGED_TASKS, fetch_task
from minimoe.assets.resolve import load_pretrained, resolve_model
from minimoe.data.encode import TaskDataset, encode_task, pad_collator
from minimoe.data.tasks import (
    Example,
    TaskSpec,
    custom_task,
    custom_task_name,
    get_task,
    load_hf_task,
    load_task,
    read_labels,
)
from minimoe.errors import MiniMoEError
from minimoe.files import atomic_write_text
from minimoe.latency import eval_mode
from minimoe.modeling.loading import WEIGHTS_FILE, checkpoint_shapes
from minimoe.report import markdown_rows


@dataclass
class EvaluateConfig:
    """Scoring a fine-tuned model (student or teacher) on a task's labelled files (`minimoe evaluate`)."""

    model: str = ""  # a fine-tuned model directory (a student or any HF sequence classifier), or a hub name
    task: str = ""  # a GLUE or packaged task; with --dev_file/--test_file only a name (default: the file's)
    data_dir: str = ""  # GLUE-layout directory; empty = the packaged task's cache; hub = the datasets library
    dev_file: str = ""  # your own labelled dev file (CSV/TSV/JSONL), read with text_columns and label_column
    test_file: str = ""  # your own labelled test file (CSV/TSV/JSONL), scored as the split "test"
    text_columns: list[str] = field(default_factory=lambda: ["sentence"])  # the 1 or 2 text columns of your files
    label_column: str = "label"  # the label column of your files
    labels: list[str] = field(default_factory=list)  # label values of your files; empty = the model's label names
    max_length: int = 128  # tokens per example
    max_eval_examples: int = 0  # a fixed random subset of each split; 0 = all
    batch_size: int = 64  # sequences per forward pass
    output: str = "eval_results.json"  # the metrics JSON file written
    onnx: str = ""  # score this ONNX export of the model (minimoe export, e.g. --int8) in onnxruntime instead


def subsample(examples: list, limit: int) -> list:
    """A fixed (seed 0) random subset, the same for every run and seed, or all examples."""
    return random.Random(0).sample(examples, limit) if 0 < limit < len(examples) else examples


def resolve_task(
    task: str,
    data_dir: str,
    files: dict[str, str],
    text_columns: list[str],
    label_column: str,
    labels: list[str] | tuple[str, ...] | None,
    regression: bool = False,
) -> tuple[TaskSpec, str]:
    """The task spec and where its splits are read from: a directory, "/" (your files' absolute paths) or "hub".

    Your files make a custom task named `task` (or after the first file, never a registered task's name);
    without `labels` its label set is read from the first file (sorted; fractional numbers = regression);
    `regression` makes its labels scores whatever they look like (integer ratings).
    """
    if files:
        first = next(iter(files.values()))
        spec = custom_task(task or custom_task_name(first), files, text_columns, label_column, None)
        if regression and labels:
            raise MiniMoEError(f"labels {list(labels)} were given for a regression task: drop --labels or --regression")
        found = None if regression else tuple(labels) if labels else read_labels(spec, next(iter(files)))
        return custom_task(spec.name, files, text_columns, label_column, found), "/"
    if not task:
        raise MiniMoEError("name a --task (a GLUE or packaged task) or give your own files (--train_file/--dev_file)")
    spec = get_task(task)
    if data_dir:
        return spec, data_dir if data_dir == "hub" else str(Path(data_dir))
    if task in PACKAGED_TASKS:
        return spec, str(fetch_task(task))
    raise MiniMoEError(f"task {task!r} needs --data_dir (its GLUE TSV directory) or --data_dir hub")


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
    from minimoe.jobs.export import onnx_session, run_onnx

    if not Path(path).is_file():
        raise MiniMoEError(f"--onnx {path}: no such file (write one with minimoe export)")
    session = onnx_session(path)
    if [o.name for o in session.get_outputs()] != ["logits"]:
        raise MiniMoEError(f"--onnx {path} is not a classifier export (its output is not logits)")

    def forward(input_ids, attention_mask, token_type_ids=None, **_):
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        return {"logits": run_onnx(session, (input_ids, attention_mask, token_type_ids))}

    return forward


def run(cfg: EvaluateConfig) -> dict:
    """Score the model on every evaluation split; write the metrics JSON, print a table, return the summary."""
    if not cfg.model:
        raise MiniMoEError("evaluate needs --model (a fine-tuned model directory or a hub name)")
    if cfg.onnx:  # the export is the model; the directory gives the tokenizer and the label names
        model, config = onnx_classifier(cfg.onnx), load_pretrained(AutoConfig, cfg.model)
        tokenizer = load_pretrained(AutoTokenizer, cfg.model)
    else:
        model, tokenizer = load_classifier(cfg.model)
        config = model.config
    files = {split: path for split, path in (("dev", cfg.dev_file), ("test", cfg.test_file)) if path}
    labels = cfg.labels or (model_labels(config) if files else None)
    regression = config.num_labels == 1  # a regression model scores numbers, integer or not
    spec, where = resolve_task(cfg.task, cfg.data_dir, files, cfg.text_columns, cfg.label_column, labels, regression)
    check_labels(spec, config, cfg.model)

    examples = {split: subsample(read_split(spec, where, split), cfg.max_eval_examples) for split in eval_splits(spec)}
    data = {split: encode_task(ex, tokenizer, cfg.max_length) for split, ex in examples.items()}
    accelerator = Accelerator(cpu=bool(cfg.onnx))  # onnxruntime reads host tensors
    evaluate = make_evaluator(accelerator, spec, data, pad_collator(tokenizer), cfg.batch_size)
    if cfg.onnx:
        metrics = evaluate(model)
    else:
        with eval_mode(model.to(accelerator.device)):
            metrics = evaluate(model)
    metrics = {k: round(v, 4) for k, v in metrics.items()}

    names = [*spec.metrics, "score"]  # what TaskSpec.score returns
    rows = [[split, len(examples[split])] + [metrics[split_key(m, split)] for m in names] for split in examples]
    print(markdown_rows(["split", "examples", *names], rows))
    summary = {"model": cfg.model, "task": spec.name, "examples": {s: len(e) for s, e in examples.items()}, **metrics}
    summary |= {"onnx": cfg.onnx} if cfg.onnx else {}
    atomic_write_text(cfg.output, json.dumps(summary, indent=2))
    return summary | {"output": cfg.output}
