"""Integration: the real packaged teacher (all-MiniLM-L6-v2) through adapters, losses and a short run."""

import json

import pytest
import torch
from transformers import AutoTokenizer

from minimoe.distill.losses import relation_kl
from minimoe.distill.teachers import check_tokenizer, load_teacher
from minimoe.training.distillation import DistillConfig, StudentConfig
from minimoe.training.distillation import run_distillation as run_distill
from minimoe.training.trainer import TrainConfig

pytestmark = pytest.mark.integration


def test_real_teacher_relations(packaged_teacher):
    teacher = load_teacher(packaged_teacher)
    tokenizer = AutoTokenizer.from_pretrained(packaged_teacher)
    check_tokenizer(tokenizer, teacher)
    batch = tokenizer(["The river flows north through the city.", "A short one."], padding=True, return_tensors="pt")
    q, k, v = teacher.qkv(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert q.shape == (2, batch["input_ids"].shape[1], 384) and teacher.num_layers == 6
    assert relation_kl((q, k, v), (q, k, v), batch["attention_mask"], 32) == 0
    assert relation_kl((q, k, v), (k, q, v), batch["attention_mask"], 32) > 0


def test_short_distillation_from_the_real_teacher(packaged_teacher, tmp_path):
    cfg = DistillConfig(
        teacher=str(packaged_teacher),
        corpus=["wiki-summaries"],
        max_length=32,
        max_sequences=16,
        student=StudentConfig(layers=1, hidden=64, heads=2, experts=4),
        # one batch of 16 every step: the loss must fall on it (across different batches it is noise at 6 steps)
        train=TrainConfig(output_dir=str(tmp_path), batch_size=16, max_steps=6, lr=1e-3, log_every=1, save_every=0),
    )
    summary = run_distill(cfg)
    assert summary["steps"] == 6 and summary["sequences"] == 16 and summary["relation_heads"] == 32
    losses = [json.loads(line)["train/relation_kl"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
