"""The trainable side of each job as one `nn.Module`: a batch in, a dict of losses out (the trainer's contract).

Frozen teachers are held as plain attributes, not submodules, so DDP never wraps them and checkpoints
never hold them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from minimoe.distill.losses import StudentQKVProjection, logit_kd_loss, relation_kl
from minimoe.distill.teachers import Teacher
from minimoe.modeling import MiniMoEModel, with_balance_loss

RelationSource = Literal["head", "last_layer"]
"""Where the student's relations come from: the extra Q/K/V projection (the paper) or its last layer's own Q/K/V."""


class RelationDistillation(nn.Module):
    """Task-agnostic distillation: student (+ the paper's relation head) vs the teacher's Q/K/V relations."""

    def __init__(
        self,
        student: MiniMoEModel,
        teacher: Teacher,
        relation_heads: int,
        teacher_layer: int,
        source: RelationSource,
        relation_dropout: float = 0.0,
    ):
        super().__init__()
        self.student = student
        # named relation_head (the paper's word) in the state dict, so checkpoints of earlier runs still resume
        self.relation_head = StudentQKVProjection(student.config.hidden_size) if source == "head" else None
        object.__setattr__(self, "teacher", teacher)
        self.relation_heads, self.teacher_layer, self.relation_dropout = relation_heads, teacher_layer, relation_dropout

    def forward(self, input_ids, attention_mask, token_type_ids=None, teacher_qkv=None) -> dict[str, torch.Tensor]:
        """One batch -> losses; `teacher_qkv` [B, T, 3, H] comes from the teacher cache when one is used."""
        if teacher_qkv is None:
            with torch.no_grad():
                t_qkv = self.teacher.qkv(input_ids, attention_mask, token_type_ids, layer=self.teacher_layer)
        else:
            t_qkv = teacher_qkv.float().unbind(dim=2)  # 3 x [B, T, H]
        out = self.student(input_ids, attention_mask, token_type_ids, output_qkv=self.relation_head is None)
        s_qkv = out.qkv[-1] if self.relation_head is None else self.relation_head(out.last_hidden_state)
        dropout = self.relation_dropout if self.training else 0.0
        rel = relation_kl(t_qkv, s_qkv, attention_mask, self.relation_heads, dropout)  # each qkv [B, T, H]
        losses = {
            "loss": with_balance_loss(rel, out.aux_loss, self.student.config.router_aux_loss_coef),
            "relation_kl": rel,
        }
        return losses if out.aux_loss is None else losses | {"balance": out.aux_loss}


class TaskObjective(nn.Module):
    """A sequence-classification model -> loss dict (CE/MSE, or KD against cached teacher logits).

    For MiniMoE models the router balance loss is added with the model's own coefficient.
    """

    def __init__(self, model: nn.Module, regression: bool, kd_alpha: float, kd_temperature: float):
        super().__init__()
        self.model, self.regression = model, regression
        self.kd_alpha, self.kd_temperature = kd_alpha, kd_temperature

    def forward(self, labels, teacher_logits=None, **inputs) -> dict[str, torch.Tensor]:
        out = self.model(**inputs)
        logits = out.logits  # [B, C]
        alpha = self.kd_alpha if teacher_logits is not None else 0.0
        teacher = teacher_logits if teacher_logits is not None else logits.detach()
        task_loss = logit_kd_loss(logits, teacher, labels, alpha, self.kd_temperature, self.regression)
        aux = getattr(out, "aux_loss", None)
        coef = getattr(self.model.config, "router_aux_loss_coef", 0.0)
        result = {"loss": with_balance_loss(task_loss, aux, coef), "task_loss": task_loss, "logits": logits}
        return result if aux is None else result | {"balance": aux}
