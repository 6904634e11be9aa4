"""Distillation losses: MiniLMv2 self-attention relation KL and plain logit KD for fine-tuning."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from minimoe.errors import MiniMoEError

SMOOTHING = 1e-7  # added to both distributions before the log, as in the MiniMoE code


def relations(x: torch.Tensor, mask: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Log-probabilities [B, R, T, T] of scaled dot products of `x` [B, T, H] with itself per relation head.

    Computed in float32 (safe under autocast); padded keys (mask == 0) get probability exactly 0.
    """
    batch, length, width = x.shape
    if num_heads < 1 or width % num_heads:
        raise MiniMoEError(f"hidden size {width} cannot be split into {num_heads} relation heads")
    head_size = width // num_heads
    heads = x.float().reshape(batch, length, num_heads, head_size).transpose(1, 2)  # [B, R, T, d_r]
    with torch.autocast(device_type=x.device.type, enabled=False):
        scores = heads @ heads.transpose(-1, -2) / math.sqrt(head_size)  # [B, R, T, T]
    padded_keys = ~mask.bool()[:, None, None, :]  # [B, 1, 1, T]
    # float32's minimum rather than -inf keeps all-padding rows finite (uniform) instead of NaN.
    scores = scores.masked_fill(padded_keys, torch.finfo(torch.float32).min)
    return scores.log_softmax(dim=-1)  # [B, R, T, T]


def relation_kl(
    teacher_qkv: tuple[torch.Tensor, ...] | list[torch.Tensor],
    student_qkv: tuple[torch.Tensor, ...] | list[torch.Tensor],
    mask: torch.Tensor,
    num_heads: int,
    student_dropout: float = 0.0,
) -> torch.Tensor:
    """MiniLMv2 loss: mean over Q-Q, K-K, V-V of KL(teacher || student) per valid query row.

    As in the MiniMoE code, KL((p_t + eps) || (p_s + eps)) summed over keys and averaged over the
    non-padding query rows of every relation head (`batchmean` over rows). Teacher and student
    widths may differ; both are split into `num_heads` relation heads. Gradients reach the student only.
    `student_dropout` > 0 drops student relation probabilities, as the authors' release does in training.
    """
    if len(teacher_qkv) != len(student_qkv):
        raise MiniMoEError(f"relation_kl got {len(teacher_qkv)} teacher but {len(student_qkv)} student tensors")
    valid_rows = mask.bool()[:, None, :]  # [B, 1, T]
    num_rows = (valid_rows.sum() * num_heads).clamp(min=1)
    losses = []
    for teacher, student in zip(teacher_qkv, student_qkv):
        if teacher.shape[:2] != student.shape[:2] or teacher.shape[:2] != mask.shape:
            raise MiniMoEError(
                f"teacher {tuple(teacher.shape)} and student {tuple(student.shape)} states do not "
                f"match the mask {tuple(mask.shape)} in batch and sequence length"
            )
        p_teacher = relations(teacher.detach(), mask, num_heads).exp() + SMOOTHING  # [B, R, T, T]
        p_student = F.dropout(relations(student, mask, num_heads).exp(), student_dropout) + SMOOTHING  # [B, R, T, T]
        per_row = (p_teacher * (p_teacher.log() - p_student.log())).sum(dim=-1)  # [B, R, T]
        losses.append(per_row.masked_fill(~valid_rows, 0.0).sum() / num_rows)
    return torch.stack(losses).mean()


def choose_relation_heads(teacher_hidden: int, student_hidden: int, preferred: int = 32) -> int:
    """The largest number of relation heads <= `preferred` that divides both hidden sizes."""
    if min(teacher_hidden, student_hidden, preferred) < 1:
        raise MiniMoEError(
            f"relation heads need positive sizes, got teacher {teacher_hidden}, "
            f"student {student_hidden}, preferred {preferred}"
        )
    common = math.gcd(teacher_hidden, student_hidden)
    return max(n for n in range(1, min(common, preferred) + 1) if common % n == 0)


def logit_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
    regression: bool,
) -> torch.Tensor:
    """(1 - alpha) * task loss + alpha * distillation loss; alpha = 0 is plain CE (or MSE).

    Classification: CE(student, labels) and T^2 * KL(softmax(t / T) || softmax(s / T)) (batchmean).
    Regression: MSE(student, labels) and MSE(student, teacher).
    """
    if not 0.0 <= alpha <= 1.0:
        raise MiniMoEError(f"distillation alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise MiniMoEError(f"distillation temperature must be positive, got {temperature}")
    teacher_logits = teacher_logits.detach()
    if regression:
        student = student_logits.reshape(-1)  # [B]
        task = F.mse_loss(student, labels.reshape(-1).to(student.dtype))
        distill = F.mse_loss(student, teacher_logits.reshape(-1).to(student.dtype))
    else:
        task = F.cross_entropy(student_logits, labels)
        distill = (
            F.kl_div(
                F.log_softmax(student_logits / temperature, dim=-1),  # [B, C]
                F.log_softmax(teacher_logits / temperature, dim=-1),  # [B, C]
                reduction="batchmean",
                log_target=True,
            )
            * temperature**2
        )
    return (1.0 - alpha) * task + alpha * distill


class StudentQKVProjection(nn.Module):
    """The paper's extra Q/K/V projections of the student's last hidden states (hidden -> hidden each), whose
    relations are split into `relation_heads` heads like the teacher's; used only while distilling, then dropped.

    Initialised as in the release (BERT's init): weights N(0, std), biases zero.
    """

    def __init__(self, hidden_size: int, std: float = 0.02):
        super().__init__()
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        for linear in (self.query, self.key, self.value):
            nn.init.normal_(linear.weight, std=std)
            nn.init.zeros_(linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V projections, each [B, T, H], of hidden states [B, T, H]."""
        return self.query(hidden_states), self.key(hidden_states), self.value(hidden_states)
