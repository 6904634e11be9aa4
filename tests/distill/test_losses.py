"""Relation KL (MiniLMv2), logit KD and relation-head sizing."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minimoe.distill.losses import (
    StudentQKVProjection,
    choose_relation_heads,
    logit_kd_loss,
    relation_kl,
    relations,
)
from minimoe.errors import MiniMoEError

B, T, R = 3, 6, 4
TEACHER_H, STUDENT_H = 32, 16


@pytest.fixture
def mask() -> torch.Tensor:
    """[B, T]: full, two padded, four padded."""
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, 2:] = 0
    return mask


def _qkv(width: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, width, generator=generator) for _ in range(3)]


def _loop_relation_kl(teacher_qkv, student_qkv, mask, heads) -> float:
    """The paper's loss written plainly: per pair, example, head and valid query row, over valid keys."""
    eps = 1e-7
    pair_losses = []
    for t_x, s_x in zip(teacher_qkv, student_qkv):
        total, rows = 0.0, 0
        for b in range(B):
            valid = [j for j in range(T) if mask[b, j]]
            for h in range(heads):
                t_d, s_d = t_x.shape[-1] // heads, s_x.shape[-1] // heads
                t_head = t_x[b, valid, h * t_d : (h + 1) * t_d].double()
                s_head = s_x[b, valid, h * s_d : (h + 1) * s_d].double()
                for i in range(len(valid)):
                    p_t = torch.softmax(t_head @ t_head[i] / math.sqrt(t_d), dim=0) + eps
                    p_s = torch.softmax(s_head @ s_head[i] / math.sqrt(s_d), dim=0) + eps
                    total += float((p_t * (p_t.log() - p_s.log())).sum())
                    rows += 1
        pair_losses.append(total / rows)
    return sum(pair_losses) / 3


def test_relations_are_log_probabilities_over_valid_keys(mask):
    x = _qkv(TEACHER_H, 0)[0]
    log_p = relations(x, mask, R)
    assert log_p.shape == (B, R, T, T)
    probs = log_p.exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(B, R, T))
    assert torch.all(probs[2, :, :, 2:] == 0)
    with pytest.raises(MiniMoEError, match="cannot be split into 5 relation heads"):
        relations(x, mask, 5)


def test_relations_of_an_all_padding_row_stay_finite():
    x = torch.randn(1, 3, 8)
    assert torch.isfinite(relations(x, torch.zeros(1, 3), 2)).all()


def test_relation_kl_zero_for_identical_and_positive_otherwise(mask):
    teacher = _qkv(TEACHER_H, 0)
    assert relation_kl(teacher, teacher, mask, R).item() == 0.0
    assert relation_kl(teacher, _qkv(TEACHER_H, 1), mask, R).item() > 0
    assert relation_kl(teacher, _qkv(STUDENT_H, 1), mask, R).item() > 0


def test_relation_kl_matches_a_direct_loop(mask):
    teacher, student = _qkv(TEACHER_H, 0), _qkv(STUDENT_H, 1)
    got = relation_kl(teacher, student, mask, R).item()
    assert got == pytest.approx(_loop_relation_kl(teacher, student, mask, R), rel=1e-5)


def test_relation_kl_ignores_padded_positions(mask):
    teacher, student = _qkv(TEACHER_H, 0), _qkv(STUDENT_H, 1)
    before = relation_kl(teacher, student, mask, R)
    padded = ~mask.bool()
    changed_teacher = [x.masked_fill(padded[..., None], 50.0) for x in teacher]
    changed_student = [x + 7.0 * torch.randn_like(x) * padded[..., None] for x in student]
    torch.testing.assert_close(relation_kl(changed_teacher, changed_student, mask, R), before)


def test_relation_kl_gradient_reaches_the_student_only(mask):
    teacher = [x.requires_grad_() for x in _qkv(TEACHER_H, 0)]
    student = [x.requires_grad_() for x in _qkv(STUDENT_H, 1)]
    relation_kl(teacher, student, mask, R).backward()
    assert all(x.grad is None for x in teacher)
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in student)
    assert all(torch.all(x.grad[~mask.bool()] == 0) for x in student)


def test_relation_kl_rejects_mismatched_lengths(mask):
    with pytest.raises(MiniMoEError, match="do not match the mask"):
        relation_kl(_qkv(TEACHER_H, 0), [x[:, :-1] for x in _qkv(STUDENT_H, 1)], mask, R)


@pytest.mark.parametrize(
    ("teacher", "student", "preferred", "expected"),
    [
        (384, 384, 32, 32),
        (768, 384, 32, 32),
        (312, 384, 32, 24),
        (1024, 384, 32, 32),
        (768, 312, 12, 12),
        (30, 49, 32, 1),
    ],
)
def test_choose_relation_heads(teacher, student, preferred, expected):
    assert choose_relation_heads(teacher, student, preferred) == expected


def test_choose_relation_heads_rejects_non_positive_sizes():
    with pytest.raises(MiniMoEError, match="positive"):
        choose_relation_heads(384, 0)


def test_logit_kd_alpha_zero_is_cross_entropy():
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    labels = torch.tensor([0, 2, 1, 1, 0])
    got = logit_kd_loss(student, teacher, labels, alpha=0.0, temperature=2.0, regression=False)
    torch.testing.assert_close(got, F.cross_entropy(student, labels))


def test_logit_kd_mixes_ce_and_temperature_scaled_kl():
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    labels = torch.tensor([0, 2, 1, 1, 0])
    temp = 3.0
    p_t = torch.softmax(teacher / temp, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(student / temp, -1))).sum() / 5
    expected = 0.25 * F.cross_entropy(student, labels) + 0.75 * temp**2 * kl
    got = logit_kd_loss(student, teacher, labels, alpha=0.75, temperature=temp, regression=False)
    torch.testing.assert_close(got, expected)
    assert logit_kd_loss(teacher, teacher, labels, alpha=1.0, temperature=temp, regression=False).abs() < 1e-6


def test_logit_kd_regression_uses_mse():
    student, teacher = torch.randn(4, 1, requires_grad=True), torch.randn(4, 1, requires_grad=True)
    labels = torch.randn(4)
    got = logit_kd_loss(student, teacher, labels, alpha=0.3, temperature=5.0, regression=True)
    expected = 0.7 * F.mse_loss(student.view(-1), labels) + 0.3 * F.mse_loss(student.view(-1), teacher.view(-1))
    torch.testing.assert_close(got, expected)
    got.backward()
    assert teacher.grad is None and student.grad is not None
    plain = logit_kd_loss(student, teacher, labels, alpha=0.0, temperature=1.0, regression=True)
    torch.testing.assert_close(plain, F.mse_loss(student.view(-1), labels))


@pytest.mark.parametrize(("alpha", "temperature", "message"), [(1.5, 1.0, "alpha"), (0.5, 0.0, "temperature")])
def test_logit_kd_rejects_bad_settings(alpha, temperature, message):
    with pytest.raises(MiniMoEError, match=message):
        logit_kd_loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), alpha, temperature, False)


def test_relation_head_projects_to_qkv_of_the_same_width(mask):
    head = StudentQKVProjection(STUDENT_H)
    hidden = torch.randn(B, T, STUDENT_H)
    q, k, v = head(hidden)
    assert q.shape == k.shape == v.shape == (B, T, STUDENT_H)
    torch.testing.assert_close(q, head.query(hidden))
    relation_kl(_qkv(TEACHER_H, 0), (q, k, v), mask, R).backward()
    assert all(p.grad is not None for p in head.parameters())


def test_relation_head_is_initialised_as_in_the_release():
    torch.manual_seed(0)
    head = StudentQKVProjection(384)
    for linear in (head.query, head.key, head.value):
        assert abs(linear.weight.std().item() - 0.02) < 0.001 and abs(linear.weight.mean().item()) < 0.001
        assert torch.count_nonzero(linear.bias) == 0


def test_relation_dropout_is_optional_and_only_in_training(tiny_teacher_dir):
    from minimoe.distill.teachers import load_teacher
    from minimoe.modeling import init_student
    from minimoe.training.distillation import DistillConfig, StudentConfig, student_config
    from minimoe.training.objectives import RelationDistillation

    assert DistillConfig().relation_dropout == 0.0  # the paper does not drop relations; the release does
    teacher = load_teacher(tiny_teacher_dir)
    shape = StudentConfig(layers=1, hidden=32, heads=4, intermediate=32, dropout=0.0, router_noise=0.0)
    ids = torch.randint(5, 60, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)

    def loss(dropout, train=True):
        torch.manual_seed(0)
        objective = RelationDistillation(
            init_student(student_config(teacher, shape), 0), teacher, 4, -1, "head", dropout
        )
        torch.manual_seed(1)
        return objective.train(train)(ids, mask)["relation_kl"]

    assert not torch.allclose(loss(0.3), loss(0.0))
    torch.testing.assert_close(loss(0.3, train=False), loss(0.0, train=False))
