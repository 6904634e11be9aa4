"""The training loop: it learns, an interrupted run resumes to the same weights, NaN stops cleanly."""

import json

import pytest
import torch
from torch.utils.data import Dataset

from minimoe.distill.objectives import RelationDistillation
from minimoe.distill.teachers import load_teacher
from minimoe.distill.trainer import TrainConfig, Trainer, latest_checkpoint, param_groups
from minimoe.errors import MiniMoEError
from minimoe.jobs.distill import StudentConfig, build_student


class RandomIds(Dataset):
    """Random token sequences with some padding; can simulate a kill after `die_after` items."""

    def __init__(self, n=48, vocab=60, length=12, die_after=None):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, vocab, (n, length), generator=g)
        self.lengths = torch.randint(4, length + 1, (n,), generator=g)
        self.die_after, self.served = die_after, 0

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        self.served += 1
        if self.die_after is not None and self.served > self.die_after:
            raise KeyboardInterrupt  # what a Ctrl-C or a kill mid-epoch looks like to the loop
        mask = (torch.arange(self.ids.shape[1]) < self.lengths[i]).long()
        return {"input_ids": self.ids[i] * mask, "attention_mask": mask}


def collate(items):
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def objective(teacher_dir, experts=4):
    teacher = load_teacher(teacher_dir)
    student = build_student(
        teacher, StudentConfig(layers=2, hidden=32, heads=4, experts=experts, intermediate=32), seed=0
    )
    return RelationDistillation(student, teacher, relation_heads=4, teacher_layer=-1, source="head")


def config(tmp_path, **kw):
    fields = dict(
        output_dir=str(tmp_path),
        batch_size=8,
        lr=2e-3,
        max_steps=12,
        warmup_ratio=0.1,
        log_every=1,
        save_every=4,
        threads=1,
    )
    fields.update(kw)
    return TrainConfig(**fields)


def test_distillation_loss_goes_down(tiny_teacher_dir, tmp_path):
    result = Trainer(config(tmp_path, max_steps=30), objective(tiny_teacher_dir), RandomIds(), collate).train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/relation_kl"] for r in records if "train/relation_kl" in r]
    assert result.steps == 30 and len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert any((tmp_path / "tensorboard").rglob("events.out.tfevents*"))
    assert latest_checkpoint(tmp_path).name == "step-30"


def test_killed_run_resumes_to_the_same_weights(tiny_teacher_dir, tmp_path):
    straight = objective(tiny_teacher_dir)
    Trainer(config(tmp_path / "a"), straight, RandomIds(), collate).train()

    with pytest.raises(KeyboardInterrupt):  # dies in step 7, after the step-4 checkpoint
        Trainer(config(tmp_path / "b"), objective(tiny_teacher_dir), RandomIds(die_after=52), collate).train()
    assert latest_checkpoint(tmp_path / "b").name == "step-4"
    resumed_obj = objective(tiny_teacher_dir)
    result = Trainer(config(tmp_path / "b", resume=True), resumed_obj, RandomIds(), collate).train()
    assert result.resumed_from == 4 and result.steps == 12
    for (name, p), q in zip(straight.named_parameters(), resumed_obj.parameters()):
        torch.testing.assert_close(p, q, msg=name)


def test_nan_loss_is_a_clear_error(tiny_teacher_dir, tmp_path):
    obj = objective(tiny_teacher_dir)
    with torch.no_grad():
        obj.student.embeddings.word_embeddings.weight.fill_(float("nan"))
    with pytest.raises(MiniMoEError, match="loss became nan at step 1"):
        Trainer(config(tmp_path), obj, RandomIds(), collate).train()


def test_no_weight_decay_on_bias_and_layernorm(tiny_teacher_dir):
    decay, no_decay = param_groups(objective(tiny_teacher_dir, experts=1), 0.01)
    assert all(p.ndim >= 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) > 0
