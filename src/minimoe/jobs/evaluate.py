"""`minimoe evaluate`: a fine-tuned model's metrics on a task's dev (or test) files, as finetune computes them
(the evaluator is `minimoe.evaluation`'s, shared with finetune)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from accelerate import Accelerator
from transformers import AutoConfig, AutoTokenizer

from minimoe.assets.resolve import load_pretrained, resolve_task
from minimoe.data.encode import encode_task, pad_collator
from minimoe.data.tasks import subsample
from minimoe.errors import MiniMoEError
from minimoe.evaluation import (
    check_labels,
    eval_splits,
    load_classifier,
    make_evaluator,
    model_labels,
    onnx_classifier,
    read_split,
    split_key,
)
from minimoe.files import atomic_write_text
from minimoe.inference import eval_mode
from minimoe.lengths import fit_max_length, token_limit
from minimoe.report import markdown_rows


@dataclass
class EvaluateConfig:
    """Scoring a fine-tuned model (student or teacher) on a task's labelled files (`minimoe evaluate`)."""

    model: str = ""
    """a fine-tuned model directory (a student or any HF sequence classifier), or a hub name"""
    task: str = ""
    """a GLUE or packaged task; with --dev_file/--test_file only a name (default: the file's)"""
    data_dir: str = ""
    """GLUE-layout directory; empty = the packaged task's cache; hub = the datasets library"""
    dev_file: str = ""
    """your own labelled dev file (CSV/TSV/JSONL), read with text_columns and label_column"""
    test_file: str = ""
    """your own labelled test file (CSV/TSV/JSONL), scored as the split "test" """
    text_columns: list[str] = field(default_factory=lambda: ["sentence"])
    """the 1 or 2 text columns of your files"""
    label_column: str = "label"
    """the label column of your files"""
    labels: list[str] = field(default_factory=list)
    """label values of your files; empty = the model's label names"""
    max_length: int = 128
    """tokens per example"""
    max_eval_examples: int = 0
    """a fixed random subset of each split; 0 = all"""
    batch_size: int = 64
    """sequences per forward pass"""
    output: str = "eval_results.json"
    """the metrics JSON file written"""
    onnx: str = ""
    """score this ONNX export of the model (minimoe export, e.g. --int8) in onnxruntime instead"""

    def __post_init__(self) -> None:
        if not self.output:
            raise MiniMoEError("output must name the metrics JSON file to write")
        if not 1 <= len(self.text_columns) <= 2:
            raise MiniMoEError(f"text_columns must name 1 or 2 columns, got {self.text_columns}")
        if self.max_length < 8:
            raise MiniMoEError(f"max_length must be at least 8, got {self.max_length}")
        if self.batch_size < 1:
            raise MiniMoEError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_eval_examples < 0:
            raise MiniMoEError(f"max_eval_examples must not be negative, got {self.max_eval_examples}")


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
    cfg = replace(cfg, max_length=fit_max_length(cfg, token_limit(config, tokenizer=tokenizer), cfg.model))
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
