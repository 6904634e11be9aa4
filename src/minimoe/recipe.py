"""Dataclass configs for every job: loaded from YAML, overridden by CLI flags derived from the fields.

A recipe YAML mirrors the dataclass; nested dataclasses are nested mappings, and the flag for a nested
field joins the names with a dot: `--train.lr 1e-4`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from minimoe.errors import MiniMoEError


@dataclass
class TrainConfig:
    """The optimisation loop shared by distillation and fine-tuning."""

    output_dir: str = "runs/minimoe"
    seed: int = 42
    batch_size: int = 32  # per process
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.01  # not applied to biases and LayerNorm
    warmup_ratio: float = 0.01
    epochs: float = 1.0
    max_steps: int = 0  # > 0 overrides epochs
    grad_clip: float = 5.0
    mixed_precision: str = "no"  # no | bf16 | fp16
    log_every: int = 10
    save_every: int = 100  # optimizer steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0 = once per epoch (fine-tuning) / never (distillation)
    resume: bool = False
    threads: int = 0  # torch intra-op threads per process; 0 = torch's default


@dataclass
class StudentConfig:
    """Student shape; vocabulary and special tokens come from the teacher."""

    layers: int = 3
    hidden: int = 384
    heads: int = 0  # 0 = hidden / 32, the paper's head size
    experts: int = 4  # 1 = a dense (MiniLM-style) student
    intermediate: int = 0  # per-expert FFN width; 0 = 4 x hidden
    router_noise: float = 0.1
    router_aux_loss_coef: float = 0.01
    dropout: float = 0.1  # hidden and attention dropout


@dataclass
class DistillConfig:
    """Task-agnostic MiniLMv2 relation distillation (`minimoe distill`)."""

    teacher: str = "all-MiniLM-L6-v2"  # a packaged teacher name, a hub name or a local directory
    corpus: list[str] = field(default_factory=lambda: ["wiki-summaries"])  # packaged names, text files, hf:NAME
    max_length: int = 128
    max_sequences: int = 0  # cap on corpus segment pairs; 0 = all
    teacher_layer: int = -1
    relation_heads: int = 32  # the largest divisor of both widths not above this
    relation_source: str = "head"  # head (the paper's extra Q/K/V head) | last_layer (student's own Q/K/V)
    cache_teacher: bool = False  # run the teacher once over the corpus and reuse its Q/K/V (many students)
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/distill"))


@dataclass
class FinetuneConfig:
    """Fine-tuning a student or a teacher on a task, with optional logit KD (`minimoe finetune`)."""

    model: str = ""  # a MiniMoE student directory, or any HF encoder (to get a teacher's own score)
    task: str = "movie-sentiment"  # a GLUE task, a packaged task (snli, movie-sentiment), or a name for your files
    data_dir: str = ""  # GLUE-layout directory; empty = the packaged task's cache; "hub" = the datasets library
    train_file: str = ""  # your own CSV/TSV/JSONL (with dev_file, text_columns, label_column, labels)
    dev_file: str = ""
    text_columns: list[str] = field(default_factory=lambda: ["sentence"])
    label_column: str = "label"
    labels: list[str] = field(default_factory=list)  # label values of your files; empty = regression
    teacher: str = ""  # a fine-tuned teacher directory for KD; empty = no KD
    kd_alpha: float = 0.5
    kd_temperature: float = 1.0
    max_length: int = 128
    max_train_examples: int = 0  # 0 = all
    max_eval_examples: int = 0
    metric_for_best: str = ""  # empty = the task's main score
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(output_dir="runs/finetune", lr=5e-5, warmup_ratio=0.1,
                                            epochs=3.0, grad_clip=1.0, save_every=0)
    )


def _field_type(tp):
    """The scalar type argparse should parse a field with (list[str] -> str with nargs)."""
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return typing.get_args(tp)[0], "+"
    if origin in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None)), None
    return tp, None


def _walk(cls, prefix=""):
    """(dotted name, field, resolved type) for every leaf field of a dataclass, nested ones included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _walk(tp, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, tp


def add_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One `--dotted.name` flag per leaf field, defaulting to None so only given flags override."""
    parser.add_argument("--config", help="a recipe YAML; flags override its values")
    for name, f, tp in _walk(cls):
        scalar, nargs = _field_type(tp)
        if scalar is bool:
            parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None)
        else:
            parser.add_argument(f"--{name}", type=scalar, nargs=nargs, default=None, metavar=name.split(".")[-1].upper())


def _build(cls, values: dict, source: str):
    """A dataclass from a nested mapping, naming unknown keys and wrongly typed values."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise MiniMoEError(f"{source}: unknown field(s) {sorted(unknown)} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {}
    for key, value in values.items():
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise MiniMoEError(f"{source}: field {key} must be a mapping, got {value!r}")
            kwargs[key] = _build(tp, value, f"{source} [{key}]")
            continue
        scalar, nargs = _field_type(tp)
        try:
            if nargs:
                kwargs[key] = [scalar(v) for v in (value if isinstance(value, list) else [value])]
            elif scalar is bool and not isinstance(value, bool):
                raise ValueError
            else:
                kwargs[key] = scalar(value) if value is not None else None
        except (TypeError, ValueError):
            raise MiniMoEError(f"{source}: field {key} must be {getattr(scalar, '__name__', scalar)}, got {value!r}") from None
    return cls(**kwargs)


def load_recipe(cls, path: str | Path | None = None, overrides: dict | None = None):
    """A job config: dataclass defaults, then the YAML at `path`, then dotted `overrides`."""
    values: dict = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise MiniMoEError(f"recipe {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise MiniMoEError(f"recipe {path} is not valid YAML: {err}") from None
        if not isinstance(values, dict):
            raise MiniMoEError(f"recipe {path} must hold a mapping of fields")
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return _build(cls, values, str(path) if path else "flags")


def recipe_from_args(cls, args: argparse.Namespace):
    """The config given by `--config` and the flags `add_flags` made."""
    given = {name: getattr(args, name) for name, _, _ in _walk(cls) if getattr(args, name, None) is not None}
    return load_recipe(cls, args.config, given)


def dump_recipe(config) -> str:
    """The config as YAML, saved beside every run so it can be repeated."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
