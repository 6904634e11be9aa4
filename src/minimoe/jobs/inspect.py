"""`minimoe inspect`: does a MiniMoE model use its experts? Diagnostics per layer on real text.

Load per expert, router confidence, expert similarity (and distance from the moefy init when the distill run
is known), the change of the output when every token is forced to one expert, and each expert's top tokens:
a table on stdout, inspect.json and inspect.png. `minimoe distill` runs this on its student at the end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.data import Dataset
from transformers import AutoModel, AutoTokenizer

from minimoe.assets.fetch import fetch_corpus
from minimoe.assets.resolve import load_pretrained, resolve_task
from minimoe.data.encode import encode_task, pad_collator
from minimoe.data.sources import read_documents
from minimoe.data.tasks import Example
from minimoe.diagnostics import inspect_model
from minimoe.errors import MiniMoEError
from minimoe.evaluation import read_split
from minimoe.lengths import fit_max_length, token_limit
from minimoe.modeling import MiniMoEConfig, init_student
from minimoe.textfiles import read_lines, read_text

DEFAULT_CORPUS = "wiki-summaries"


@dataclass
class InspectConfig:
    """Expert diagnostics of a MiniMoE model on real text (`minimoe inspect`)."""

    model: str = ""
    """a MiniMoE model directory: a distilled student (run/student) or a fine-tuned one"""
    texts: str = ""
    """a text file, one text per line; empty = the packaged wiki-summaries corpus (or --task)"""
    task: list[str] = field(default_factory=list)
    """tasks whose dev texts to route instead (packaged, or GLUE)"""
    data_root: str = ""
    """GLUE-style tasks live in DATA_ROOT/TASK; empty = packaged tasks"""
    run_dir: str = ""
    """the distill run (its recipe.yaml rebuilds the moefy init); empty = the model's parent if it is one"""
    max_texts: int = 256
    """texts routed (a fixed seeded sample)"""
    max_length: int = 128
    """tokens per text"""
    batch_size: int = 32
    """texts per forward"""
    top_tokens: int = 8
    """tokens listed per expert"""
    output_dir: str = ""
    """where inspect.json and inspect.png go; empty = the model directory"""

    def __post_init__(self) -> None:
        for name in ("max_texts", "batch_size", "top_tokens"):
            if getattr(self, name) < 1:
                raise MiniMoEError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length < 8:
            raise MiniMoEError(f"max_length must be at least 8, got {self.max_length}")


def load_texts(cfg: InspectConfig, tokenizer) -> Dataset:
    """The texts to route, tokenised: a file, the dev sets of tasks, or the packaged corpus' sentences."""
    rng = random.Random(0)
    if cfg.task:
        examples = []
        for task in cfg.task:
            data_dir = str(Path(cfg.data_root) / task) if cfg.data_root else ""
            spec, where = resolve_task(task, data_dir, {}, [], "", None)
            dev = read_split(spec, where, "dev")
            examples += rng.sample(dev, min(len(dev), max(1, cfg.max_texts // len(cfg.task))))
        return encode_task(examples, tokenizer, cfg.max_length)
    if cfg.texts:
        if not Path(cfg.texts).is_file():
            raise MiniMoEError(f"--texts {cfg.texts}: no such file")
        lines = [line.strip() for line in read_lines(cfg.texts) if line.strip()]
    else:
        lines = [sentence for doc in read_documents(fetch_corpus(DEFAULT_CORPUS)) for sentence in doc]
    if not lines:
        raise MiniMoEError(f"--texts {cfg.texts}: the file holds no text")
    lines = rng.sample(lines, min(len(lines), cfg.max_texts))
    return encode_task([Example((line,), 0) for line in lines], tokenizer, cfg.max_length)


def distill_run_dir(cfg: InspectConfig) -> Path | None:
    """The distill run the model came from: --run_dir, or the model's parent when it holds a distill recipe."""
    if cfg.run_dir:
        if not (Path(cfg.run_dir) / "recipe.yaml").is_file():
            raise MiniMoEError(f"--run_dir {cfg.run_dir} holds no recipe.yaml (give a `minimoe distill` output_dir)")
        return Path(cfg.run_dir)
    recipe = Path(cfg.model).parent / "recipe.yaml"
    is_distill = recipe.is_file() and "student" in (yaml.safe_load(read_text(recipe)) or {})
    return recipe.parent if is_distill else None


def initial_student(model_dir: str, run_dir: Path) -> nn.Module:
    """The student a distill run started from: the saved config, with the recipe's seed and expert init."""
    recipe = yaml.safe_load(read_text(run_dir / "recipe.yaml")) or {}
    seed, init = recipe.get("train", {}).get("seed", 0), recipe.get("student", {}).get("init", "moefy")
    return init_student(load_pretrained(MiniMoEConfig, model_dir), seed, init)


def run(cfg: InspectConfig) -> dict:
    """Load the model and texts, diagnose, write the files; return a short summary."""
    if not cfg.model:
        raise MiniMoEError("inspect needs --model (a MiniMoE student directory)")
    model = load_pretrained(AutoModel, cfg.model)
    if getattr(model.config, "num_experts", 2) < 2:
        raise MiniMoEError(f"{cfg.model} is a dense student (num_experts = 1): it has no experts or router to inspect")
    tokenizer = load_pretrained(AutoTokenizer, cfg.model)
    cfg = replace(cfg, max_length=fit_max_length(cfg, token_limit(model.config, tokenizer=tokenizer), cfg.model))
    run_dir = distill_run_dir(cfg)
    init = initial_student(cfg.model, run_dir) if run_dir else None
    out = Path(cfg.output_dir or cfg.model)
    with torch.inference_mode():
        report = inspect_model(
            model,
            tokenizer,
            load_texts(cfg, tokenizer),
            pad_collator(tokenizer),
            out,
            init=init,
            batch_size=cfg.batch_size,
            top_tokens=cfg.top_tokens,
        )
    layers = report["layers"]
    return {
        "model": cfg.model,
        "sequences": report["sequences"],
        "tokens": report["tokens"],
        "mean top prob": round(sum(x["top_prob"] for x in layers) / len(layers), 3),
        "mean forced change": round(
            sum(sum(x["forced_change"]) / len(x["forced_change"]) for x in layers) / len(layers), 3
        ),
        "moefy init": str(run_dir) if run_dir else "unknown (no distill run)",
        "json": str(out / "inspect.json"),
        "png": str(out / "inspect.png"),
    }
