"""Task heads on the MiniMoE encoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from minimoe.modeling.config import MiniMoEConfig
from minimoe.modeling.encoder import MiniMoEModel, MiniMoEPreTrainedModel
from minimoe.modeling.moe import with_balance_loss


@dataclass
class MiniMoESequenceClassifierOutput(ModelOutput):
    """`loss` includes router_aux_loss_coef x aux_loss when labels are given."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None
    aux_loss: torch.FloatTensor | None = None


class MiniMoEForSequenceClassification(MiniMoEPreTrainedModel):
    """[CLS] -> Linear -> Tanh (the pooler) -> Dropout -> Linear, as in BERT and the paper.

    `num_labels = 1` is regression (MSE); otherwise cross-entropy. A distilled student has neither pooler nor
    classifier: they start fresh, as every fine-tuning expects, so loading reports no missing weights.
    """

    _keys_to_ignore_on_load_missing = [r"(^|\.)pooler\.", r"^classifier\."]

    def __init__(self, config: MiniMoEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.minimoe = MiniMoEModel(config, add_pooling_layer=True)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> MiniMoESequenceClassifierOutput:
        """input_ids [B, T] -> logits [B, num_labels]; a tuple with return_dict=False (as transformers models)."""
        out = self.minimoe(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            output_aux_loss=True if labels is not None else None,
        )
        logits = self.classifier(self.dropout(out.pooler_output))  # [B, num_labels]
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
            loss = with_balance_loss(loss, out.aux_loss, self.config.router_aux_loss_coef)
        return MiniMoESequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            router_logits=out.router_logits,
            aux_loss=out.aux_loss,
        )
