"""`minimoe distill`: task-agnostic MiniLMv2 relation distillation of a teacher into a MiniMoE student."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, Subset
from transformers import AutoTokenizer

from minimoe.data.corpus import build_corpus
from minimoe.data.fetch import CORPORA, cache_dir, fetch_corpus
from minimoe.data.encode import pad_collator
from minimoe.distill.losses import RelationHead, choose_relation_heads, relation_kl
from minimoe.distill.teacher_cache import CachedTeacherCorpus, build_teacher_cache, cache_key, cached_collate
from minimoe.distill.teachers import Teacher, check_tokenizer, load_teacher
from minimoe.distill.trainer import Trainer, make_accelerator
from minimoe.errors import MiniMoEError
from minimoe.io import atomic_write_text, save_model
from minimoe.modeling import MiniMoEModel, moefy_random_init_, student_config_from_teacher
from minimoe.resolve import load_pretrained, resolve_model
from minimoe.recipe import DistillConfig, StudentConfig, dump_recipe

RELATION_SOURCES = ("head", "last_layer")


class RelationDistillation(nn.Module):
    """The trainable side of distillation: student (+ the paper's relation head) -> loss dict.

    The teacher is held as a plain attribute, not a submodule, so DDP never wraps it and checkpoints
    never hold it.
    """

    def __init__(self, student: MiniMoEModel, teacher: Teacher, relation_heads: int, teacher_layer: int, source: str):
        super().__init__()
        if source not in RELATION_SOURCES:
            raise MiniMoEError(f"relation_source must be one of {RELATION_SOURCES}, got {source!r}")
        self.student = student
        self.relation_head = RelationHead(student.config.hidden_size) if source == "head" else None
        object.__setattr__(self, "teacher", teacher)
        self.relation_heads, self.teacher_layer = relation_heads, teacher_layer
        self.aux_coef = student.config.router_aux_loss_coef

    def forward(self, input_ids, attention_mask, token_type_ids=None, teacher_qkv=None) -> dict[str, torch.Tensor]:
        """One batch -> losses; `teacher_qkv` [B, T, 3, H] comes from the teacher cache when one is used."""
        if teacher_qkv is None:
            with torch.no_grad():
                t_qkv = self.teacher.qkv(input_ids, attention_mask, token_type_ids, layer=self.teacher_layer)
        else:
            t_qkv = teacher_qkv.float().unbind(dim=2)  # 3 x [B, T, H]
        out = self.student(input_ids, attention_mask, token_type_ids, output_qkv=self.relation_head is None)
        s_qkv = out.qkv[-1] if self.relation_head is None else self.relation_head(out.last_hidden_state)
        rel = relation_kl(t_qkv, s_qkv, attention_mask, self.relation_heads)  # each qkv [B, T, H]
        if out.aux_loss is None:
            return {"loss": rel, "relation_kl": rel}
        return {"loss": rel + self.aux_coef * out.aux_loss, "relation_kl": rel, "balance": out.aux_loss}


def build_student(teacher: Teacher, shape: StudentConfig, seed: int) -> MiniMoEModel:
    """A randomly initialised student of the given shape, experts moefied as in the paper."""
    config = student_config_from_teacher(
        teacher.config,
        num_hidden_layers=shape.layers,
        hidden_size=shape.hidden,
        num_attention_heads=shape.heads or None,
        num_experts=shape.experts,
        intermediate_size=shape.intermediate or None,
        router_noise=shape.router_noise,
        router_aux_loss_coef=shape.router_aux_loss_coef,
        hidden_dropout_prob=shape.dropout,
        attention_probs_dropout_prob=shape.dropout,
    )
    torch.manual_seed(seed)
    student = MiniMoEModel(config, add_pooling_layer=False)
    moefy_random_init_(student, generator=torch.Generator().manual_seed(seed))
    return student


def load_corpus(sources: list[str], tokenizer, max_length: int, limit: int = 0) -> Dataset:
    """Segment pairs from packaged corpus names, text files, or `hf:NAME` datasets (train split)."""
    resolved = []
    for source in sources:
        if source in CORPORA:
            resolved.append(fetch_corpus(source))
        elif source.startswith("hf:"):
            import datasets

            resolved.append(datasets.load_dataset(source[3:], split="train"))
        elif Path(source).is_file():
            resolved.append(Path(source))
        else:
            raise MiniMoEError(f"corpus {source!r} is neither a packaged corpus ({', '.join(CORPORA)}), a file, nor hf:NAME")
    datasets_ = [build_corpus(s, tokenizer, max_length) for s in resolved]
    data = datasets_[0] if len(datasets_) == 1 else ConcatDataset(datasets_)
    return Subset(data, range(limit)) if 0 < limit < len(data) else data


def run_distill(cfg: DistillConfig) -> dict:
    """Distil, export the student (without the relation head) and return a summary dict."""
    out = Path(cfg.train.output_dir)
    teacher_path = resolve_model(cfg.teacher)
    teacher = load_teacher(teacher_path)
    tokenizer = load_pretrained(AutoTokenizer, teacher_path)
    check_tokenizer(tokenizer, teacher)
    student = build_student(teacher, cfg.student, cfg.train.seed)
    heads = choose_relation_heads(teacher.hidden_size, student.config.hidden_size, cfg.relation_heads)
    objective = RelationDistillation(student, teacher, heads, cfg.teacher_layer, cfg.relation_source)

    accelerator = make_accelerator(cfg.train, find_unused_parameters=cfg.relation_source == "last_layer")
    teacher.to(accelerator.device)
    collate = pad_collator(tokenizer)
    with accelerator.main_process_first():
        data = load_corpus(cfg.corpus, tokenizer, cfg.max_length, cfg.max_sequences)
        if cfg.cache_teacher:
            directory = cache_dir() / "teacher-qkv" / cache_key(teacher_path, cfg.teacher_layer, data)
            build_teacher_cache(teacher, data, collate, cfg.teacher_layer, directory, cfg.train.batch_size * 2)
            data, collate = CachedTeacherCorpus(data, directory), cached_collate(collate)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(dump_recipe(cfg))
    trainer = Trainer(cfg.train, objective, data, collate, accelerator=accelerator, run_config=asdict(cfg))
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
        save_model(accelerator.unwrap_model(trainer.model).student, tokenizer, out / "student")
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    return summary
