"""A study's recipe: the grid's axes, and the job configs its stages start from as sections.

`distill:`, `finetune:` and `teacher_finetune:` are the very configs of `minimoe distill` and `minimoe finetune`
(same fields, same YAML), with the study's defaults. The grid fills in what each stage owns (the teacher, the
student's shape, the model, the task, the seed, the directory); a variant is a named set of dotted overrides of the
sections, applied by the recipe loader the CLI uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import ClassVar

from minimoe.errors import MiniMoEError
from minimoe.recipe import apply_overrides, leaf_values
from minimoe.training.distillation import DistillConfig
from minimoe.training.finetuning import FinetuneConfig
from minimoe.training.trainer import TrainConfig

# Section fields the grid sets for every stage: a recipe that sets them names the study field that does.
OWNED = {
    "distill": {
        "teacher": "teachers",
        "student.layers": "sizes",
        "student.hidden": "sizes",
        "student.experts": "experts",
        "train.seed": "seeds",
        "train.output_dir": "output_dir",
        "train.resume": "the study (a stage resumes when its directory exists)",
    },
    "finetune": {
        "model": "the grid (each student's distilled directory)",
        "task": "tasks",
        "teacher": "finetune.kd_alpha (> 0: KD from the fine-tuned teacher)",
        "data_dir": "data_root",
        "train_file": "tasks and data_root",
        "dev_file": "tasks and data_root",
        "train.seed": "seeds",
        "train.output_dir": "output_dir",
        "train.resume": "the study (a stage resumes when its directory exists)",
    },
}
OWNED["teacher_finetune"] = OWNED["finetune"]
# Fields a dense student ignores: a dense student of a variant that sets only these is the base one (run once).
MOE_ONLY = {"distill.student.router_noise", "distill.student.router_aux_loss_coef", "distill.student.init"}
BATCH_HELP = (
    "sequences a step over all processes (the study splits it among them, so results do not depend on how many)"
)


def study_train(**settings) -> TrainConfig:
    """A stage's training section: the study logs every 10 steps."""
    return TrainConfig(log_every=10, **settings)


def study_finetune(**train) -> FinetuneConfig:
    """A fine-tuning section: 64 tokens, 6,000 training and 2,000 dev examples, no KD, 10% warmup, clip 1."""
    return FinetuneConfig(
        kd_alpha=0.0,
        max_length=64,
        max_train_examples=6000,
        max_eval_examples=2000,
        train=study_train(warmup_ratio=0.1, grad_clip=1.0, save_every=0, **train),
    )


@dataclass
class FinetuneGrid:
    """The students' fine-tuning grid (the `finetune_grid:` section): every lr x batch x epochs point runs, the best
    dev score is kept."""

    lr: list[float] = field(default_factory=list)
    """learning rates; empty = finetune.train.lr"""
    batch_size: list[int] = field(default_factory=list)
    """batch sizes (over all processes); empty = finetune.train.batch_size"""
    epochs: list[float] = field(default_factory=list)
    """epochs; empty = finetune.train.epochs"""


@dataclass
class StudyConfig:
    """Teachers x student sizes x experts x seeds (`minimoe study`): distil, fine-tune, tabulate, plot."""

    # the help of these flags: a study's batch sizes are global, a job's are per process
    FLAG_HELP: ClassVar[dict[str, str]] = {
        f"{section}.train.batch_size": BATCH_HELP for section in ("distill", "finetune", "teacher_finetune")
    }

    output_dir: str = "runs/study"
    """where every stage writes its run directory, and the table and plot"""
    teachers: list[str] = field(default_factory=lambda: ["all-MiniLM-L6-v2", "all-mpnet-base-v2"])
    """teachers compared"""
    sizes: list[str] = field(default_factory=lambda: ["2L-128H", "4L-192H"])
    """student sizes, LAYERSL-HIDDENH"""
    experts: list[int] = field(default_factory=lambda: [1, 4])
    """experts per student; 1 = dense (MiniLM-style)"""
    seeds: list[int] = field(default_factory=lambda: [1, 2])
    """seeds of every student (distillation and fine-tuning); the teachers use the first"""
    tasks: list[str] = field(default_factory=lambda: ["movie-sentiment", "snli"])
    """fine-tuning tasks"""
    data_root: str = ""
    """GLUE-style tasks live in DATA_ROOT/TASK; hub = GLUE through the `datasets` library; empty = packaged tasks"""
    measure_latency: bool = True
    """time every model at batch 32 x 128 for the table (once the grid is done, the models taking turns)"""
    distill: DistillConfig = field(
        default_factory=lambda: DistillConfig(
            max_length=64,
            max_sequences=9600,
            cache_teacher=True,
            train=study_train(lr=0.0005, warmup_ratio=0.05, max_steps=300),
        )
    )
    finetune: FinetuneConfig = field(default_factory=lambda: study_finetune(lr=0.0002, epochs=3.0))
    finetune_grid: FinetuneGrid = field(default_factory=FinetuneGrid)
    teacher_finetune: FinetuneConfig = field(default_factory=lambda: study_finetune(lr=5e-05, epochs=1.0))
    variants: dict[str, dict] = field(default_factory=dict)
    """ablations run beside the base grid: NAME: {dotted distill./finetune. field: value, ...}"""


def parse_size(size: str) -> tuple[int, int]:
    """ "4L-192H" -> (4, 192)."""
    try:
        layers, hidden = size.upper().split("-")
        return int(layers.rstrip("L")), int(hidden.rstrip("H"))
    except ValueError:
        raise MiniMoEError(f"student size {size!r} must look like 4L-192H") from None


def check_owned(cfg: StudyConfig) -> None:
    """A section field the grid sets for every stage must keep its default: say which study field sets it."""
    default = StudyConfig()
    for section, owned in OWNED.items():
        given, base = leaf_values(getattr(cfg, section)), leaf_values(getattr(default, section))
        for name, owner in owned.items():
            if given[name] != base[name]:
                raise MiniMoEError(f"{section}.{name} is set by the study, per stage, from {owner}: leave it out")


def variants(cfg: StudyConfig) -> list[tuple[str, StudyConfig, set[str]]]:
    """(name, config, overridden fields) of the base grid ("", cfg, {}) and of every variant, checked."""
    out = [("", cfg, set())]
    for name, overrides in cfg.variants.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", str(name)):
            raise MiniMoEError(f"variant {name!r}: a name is letters, digits and _.+- (it names run directories)")
        if not isinstance(overrides, dict) or not overrides:
            raise MiniMoEError(
                f"variant {name}: give a mapping of dotted fields to values, e.g. {{distill.student.router_noise: 0}}"
            )
        for key in overrides:
            if not str(key).startswith(("distill.", "finetune.")):
                raise MiniMoEError(f"variant {name}: {key} is not a distill. or finetune. field")
        variant = apply_overrides(replace(cfg, variants={}), overrides, f"variant {name}")
        check_owned(variant)
        if replace(variant, variants={}) == replace(cfg, variants={}):
            raise MiniMoEError(f"variant {name} changes nothing from the base grid")
        out.append((str(name), variant, set(map(str, overrides))))
    return out


def check(cfg: StudyConfig) -> list[tuple[str, StudyConfig, set[str]]]:
    """The grid's settings, checked before hours of teacher fine-tuning; its `variants`."""
    for size in cfg.sizes:
        parse_size(size)
    for name in ("teachers", "sizes", "experts", "seeds", "tasks"):
        if not getattr(cfg, name):
            raise MiniMoEError(f"{name} needs at least one value")
    check_owned(cfg)
    return variants(cfg)
