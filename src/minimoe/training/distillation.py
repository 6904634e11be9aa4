"""Task-agnostic MiniLMv2 relation distillation of a teacher into a MiniMoE student: the run behind `minimoe distill`
and every distillation stage of `minimoe study`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from torch.utils.data import Subset
from transformers import AutoTokenizer

from minimoe.assets.resolve import load_pretrained, resolve_corpus, resolve_model
from minimoe.cache import cache_dir
from minimoe.card import CardInfo, measure_cost
from minimoe.data.corpus import load_corpus
from minimoe.data.encode import pad_collator
from minimoe.diagnostics import inspect_model
from minimoe.distill.losses import choose_relation_heads
from minimoe.distill.teachers import Teacher, check_tokenizer, load_teacher
from minimoe.errors import MiniMoEError
from minimoe.files import atomic_write_text
from minimoe.lengths import fit_max_length, token_limit
from minimoe.modeling import MiniMoEConfig, init_student
from minimoe.modeling.moefy import ExpertInit
from minimoe.recipe import dump_recipe
from minimoe.report import plot_curves
from minimoe.saving import save_model
from minimoe.training.objectives import RelationDistillation, RelationSource
from minimoe.training.run_dir import RunDirectory, run_directory
from minimoe.training.teacher_cache import CachedTeacherCorpus, build_teacher_cache, cache_key, cached_collate
from minimoe.training.trainer import TrainConfig, Trainer, make_accelerator


@dataclass
class StudentConfig:
    """Student shape (the `student:` section); vocabulary and special tokens come from the teacher."""

    layers: int = 3
    """transformer layers"""
    hidden: int = 384
    """hidden size"""
    heads: int = 0
    """attention heads; 0 = hidden / 32, the paper's head size"""
    experts: int = 4
    """FFN experts per layer; 1 = a dense (MiniLM-style) student"""
    intermediate: int = 0
    """FFN width of one expert; 0 = 4 x hidden"""
    router_noise: float = 0.1
    """uniform noise on the router logits in training (the paper's eps)"""
    router_aux_loss_coef: float = 0.01
    """weight of the load-balance loss"""
    dropout: float = 0.1
    """hidden and attention dropout"""
    init: ExpertInit = "moefy"
    """moefy (experts split from one random dense FFN, as the paper) | independent (each drawn alone)"""

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "experts"):
            if getattr(self, name) < 1:
                raise MiniMoEError(f"student.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("heads", "intermediate", "router_noise", "router_aux_loss_coef"):
            if getattr(self, name) < 0:
                raise MiniMoEError(f"student.{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise MiniMoEError(f"student.dropout must be in [0, 1), got {self.dropout}")


@dataclass
class DistillConfig:
    """Task-agnostic MiniLMv2 relation distillation (`minimoe distill`)."""

    teacher: str = "all-MiniLM-L6-v2"
    """a packaged teacher name, a hub name or a local directory"""
    corpus: list[str] = field(default_factory=lambda: ["wiki-summaries"])
    """packaged corpus names, text or JSONL files (or .gz .bz2 .xz .zst), directories, globs, saved datasets,
    hf:NAME[:CONFIG] (streamed)"""
    corpus_text_column: str = "text"
    """the text field of JSONL records and dataset rows"""
    corpus_workers: int = 0
    """processes tokenising the corpus when its cache is built; 0 = one per core"""
    max_length: int = 128
    """tokens per segment pair"""
    max_sequences: int = 0
    """cap on corpus segment pairs; 0 = all"""
    teacher_layer: int = -1
    """teacher layer whose Q/K/V relations are distilled (-1 = last)"""
    relation_heads: int = 32
    """relation heads: the largest divisor of both widths not above this"""
    relation_source: RelationSource = "head"
    """head (the paper's extra Q/K/V head) | last_layer (the student's own Q/K/V)"""
    relation_dropout: float = 0.0
    """dropout on the student's relation probabilities (the release's; not in the paper)"""
    cache_teacher: bool = False
    """run the teacher once over the corpus and reuse its Q/K/V (many students)"""
    inspect_sequences: int = 256
    """corpus segment pairs the end-of-run expert diagnostics route (inspect.json/png); 0 = none"""
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/distill"))

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise MiniMoEError(f"max_length must be at least 8, got {self.max_length}")
        if self.relation_heads < 1:
            raise MiniMoEError(f"relation_heads must be at least 1, got {self.relation_heads}")
        for name in ("max_sequences", "corpus_workers"):
            if getattr(self, name) < 0:
                raise MiniMoEError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.relation_dropout < 1:
            raise MiniMoEError(f"relation_dropout must be in [0, 1), got {self.relation_dropout}")


def student_config(teacher: Teacher, shape: StudentConfig) -> MiniMoEConfig:
    """The student's model config: its shape, with vocabulary and special tokens from the teacher."""
    return MiniMoEConfig.for_student(
        shape.layers,
        shape.hidden,
        shape.experts,
        shape.heads,
        shape.intermediate,
        teacher=teacher.config,
        router_noise=shape.router_noise,
        router_aux_loss_coef=shape.router_aux_loss_coef,
        hidden_dropout_prob=shape.dropout,
        attention_probs_dropout_prob=shape.dropout,
    )


def run_distillation(cfg: DistillConfig) -> dict:
    """Distil in cfg.train.output_dir, save the student (without the relation head) and summary.json; return the
    summary."""
    accelerator = make_accelerator(cfg.train, find_unused_parameters=cfg.relation_source == "last_layer")
    with run_directory(cfg.train, accelerator, outputs=("student", "summary.json")) as run:
        return distil(cfg, run)


def distil(cfg: DistillConfig, run: RunDirectory) -> dict:
    """The job in its run directory: load the teacher and corpus, train, save the student and the summary."""
    out, accelerator = run.path, run.accelerator
    teacher_path = resolve_model(cfg.teacher)
    teacher = load_teacher(teacher_path)
    tokenizer = load_pretrained(AutoTokenizer, teacher_path)
    check_tokenizer(tokenizer, teacher)
    cfg = replace(cfg, max_length=fit_max_length(cfg, token_limit(teacher.config, tokenizer=tokenizer), cfg.teacher))
    student = init_student(student_config(teacher, cfg.student), cfg.train.seed, cfg.student.init)
    heads = choose_relation_heads(teacher.hidden_size, student.config.hidden_size, cfg.relation_heads)
    objective = RelationDistillation(
        student, teacher, heads, cfg.teacher_layer, cfg.relation_source, cfg.relation_dropout
    )

    teacher.to(accelerator.device)
    collate = pad_collator(tokenizer)
    # every rank calls these: the first to take a cache's lock builds it, the others wait and then read it
    data = corpus = load_corpus(
        [resolve_corpus(source) for source in cfg.corpus],
        tokenizer,
        cfg.max_length,
        cfg.max_sequences,
        text_column=cfg.corpus_text_column,
        workers=cfg.corpus_workers,
    )
    if cfg.cache_teacher:
        key = cache_key(teacher_path, cfg.teacher_layer, data, accelerator.mixed_precision)
        directory = cache_dir() / "teacher-qkv" / key
        batch = cfg.train.batch_size * 2
        build_teacher_cache(teacher, data, collate, cfg.teacher_layer, directory, batch, accelerator.autocast)
        data, collate = CachedTeacherCorpus(data, directory), cached_collate(collate)
    trainer = Trainer(run, objective, data, collate, config=cfg)
    result = trainer.train()

    summary = {
        "teacher": cfg.teacher,
        "student_dir": str(out / "student"),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "sequences": len(data),
        "relation_heads": heads,
        "final": {k: round(v, 5) for k, v in result.last_metrics.items()},
    }
    if accelerator.is_main_process:
        card = CardInfo(
            teacher=cfg.teacher,
            datasets=list(cfg.corpus),
            recipe=dump_recipe(cfg),
            how=f"distilled from {cfg.teacher} by MiniLMv2 relation distillation ({result.steps} steps)",
        )
        trained = accelerator.unwrap_model(trainer.model).student
        card.cost = measure_cost(trained)
        with run.writing(out / "student"):
            save_model(trained, tokenizer, out / "student", card)
        if cfg.inspect_sequences and cfg.student.experts > 1:  # written before summary.json, which marks the run done
            sample = Subset(corpus, range(min(cfg.inspect_sequences, len(corpus))))
            init = init_student(trained.config, cfg.train.seed, cfg.student.init).to(accelerator.device)
            inspect_model(trained, tokenizer, sample, pad_collator(tokenizer), out, init=init)
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
        plot_curves(out / "metrics.jsonl", out / "curves.png", ("train/loss", "train/relation_kl", "train/balance"))
    accelerator.wait_for_everyone()
    return summary
