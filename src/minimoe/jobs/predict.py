"""`minimoe predict`: label texts with a fine-tuned model, one JSON line per input, in input order.

A text file or stdin is split at \\n and \\r\\n only, so every input line gets exactly one output line; a blank
line (or a JSON null / blank text column) gets a line marked `"empty": true` instead of a prediction.
Inputs are tokenised once, truncated to the model's length, and batched by length (longest first), so a
batch pads to similar lengths.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, replace

import torch
from accelerate import Accelerator

from minimoe.data.encode import encode_task, pad_collator
from minimoe.data.tasks import Example, read_texts
from minimoe.errors import MiniMoEError
from minimoe.evaluation import load_classifier
from minimoe.files import atomic_write_text
from minimoe.inference import device_batches, eval_mode
from minimoe.lengths import fit_max_length, token_limit


@dataclass
class PredictConfig:
    """Labelling texts with a fine-tuned model (`minimoe predict`)."""

    model: str = ""
    """a fine-tuned model directory (a student or any HF sequence classifier), or a hub name"""
    input: str = "-"
    """CSV/TSV/JSONL (read text_columns), any other file (one text per line), or - for stdin"""
    text_columns: list[str] = field(default_factory=lambda: ["sentence"])
    """the 1 or 2 text columns of CSV/TSV/JSONL"""
    output: str = "-"
    """the predictions, one JSON line per input; - = stdout"""
    batch_size: int = 64
    """sequences per forward pass"""
    max_length: int = 128
    """tokens per example (longer ones are truncated)"""
    bf16: bool = False
    """bfloat16 autocast on the model's device (faster on recent CPUs and GPUs)"""

    def __post_init__(self) -> None:
        if not self.input or not self.output:
            raise MiniMoEError("input and output must name a file, or - for stdin / stdout")
        if not 1 <= len(self.text_columns) <= 2:
            raise MiniMoEError(f"text_columns must name 1 or 2 columns, got {self.text_columns}")
        if self.batch_size < 1:
            raise MiniMoEError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_length < 8:
            raise MiniMoEError(f"max_length must be at least 8, got {self.max_length}")


def is_empty(texts: tuple[str | None, ...]) -> bool:
    """An input with nothing to classify: a blank line, or a null or blank text column."""
    return any(text is None or not text.strip() for text in texts)


def prediction(texts: tuple[str | None, ...], logits: torch.Tensor | None, id2label: dict[int, str]) -> dict:
    """One output line: the texts, then the label and its probabilities, or the score of a regression model;
    an empty input (no logits) gets a null label (or score) and `"empty": true`.
    """
    line = {"text": texts[0]} | ({"text_pair": texts[1]} if len(texts) > 1 else {})
    if logits is None:
        return line | {"score" if len(id2label) == 1 else "label": None, "empty": True}
    if logits.numel() == 1:
        return line | {"score": round(float(logits), 6)}
    probs = logits.float().softmax(-1)  # [C]
    return line | {
        "label": id2label[int(probs.argmax())],
        "probabilities": {id2label[i]: round(float(p), 6) for i, p in enumerate(probs)},
    }


@torch.no_grad()
def predict(model, tokenizer, texts: list[tuple[str, ...]], batch_size: int, max_length: int, bf16: bool) -> list:
    """Logits [C] of every input, in input order; batches are formed longest first."""
    if not texts:
        return []
    data = encode_task([Example(t, 0) for t in texts], tokenizer, max_length)
    order = sorted(range(len(data)), key=lambda i: -len(data[i]["input_ids"]))
    collate, device = pad_collator(tokenizer), next(model.parameters()).device
    results: list = [None] * len(data)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    collated = (collate([data[i] for i in batch_ids]) for batch_ids in batches)
    with eval_mode(model), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for batch_ids, batch in zip(batches, device_batches(collated, device, desc="predict", total=len(batches))):
            logits = model(**batch).logits.float().cpu()  # [B, C]
            for i, row in zip(batch_ids, logits):
                results[i] = row
    return results


def run(cfg: PredictConfig) -> dict:
    """Predict every input; write the JSON lines to the output (stdout by default) and return a summary."""
    if not cfg.model:
        raise MiniMoEError("predict needs --model (a fine-tuned model directory or a hub name)")
    model, tokenizer = load_classifier(cfg.model)
    cfg = replace(cfg, max_length=fit_max_length(cfg, token_limit(model.config, tokenizer=tokenizer), cfg.model))
    texts = read_texts(cfg.input, cfg.text_columns, sys.stdin.buffer if cfg.input == "-" else None)
    if not texts:
        raise MiniMoEError(f"{'stdin' if cfg.input == '-' else cfg.input}: no texts to predict")
    model.to(Accelerator().device)
    full = [i for i, t in enumerate(texts) if not is_empty(t)]
    start = time.perf_counter()
    found = predict(model, tokenizer, [texts[i] for i in full], cfg.batch_size, cfg.max_length, cfg.bf16)
    seconds = time.perf_counter() - start
    logits = dict(zip(full, found))
    id2label = model.config.id2label
    lines = "".join(json.dumps(prediction(t, logits.get(i), id2label)) + "\n" for i, t in enumerate(texts))
    if cfg.output == "-":
        sys.stdout.write(lines)
        sys.stdout.flush()
    else:
        atomic_write_text(cfg.output, lines)
    return {
        "model": cfg.model,
        "examples": len(texts),
        "empty": len(texts) - len(full),
        "output": cfg.output,
        "seconds": round(seconds, 2),
        "examples_per_second": round(len(full) / seconds, 1) if full else 0.0,
    }
