"""The MiniMoE model: config, encoder, mixture-of-minimal-experts FFN, heads, moefy."""

from minimoe.modeling.config import MiniMoEConfig
from minimoe.modeling.encoder import MiniMoEModel, MiniMoEModelOutput, MiniMoEPreTrainedModel
from minimoe.modeling.heads import MiniMoEForSequenceClassification, MiniMoESequenceClassifierOutput
from minimoe.modeling.moe import MoEFeedForward, load_balance_loss, with_balance_loss
from minimoe.modeling.moefy import expert_neurons, init_student, moefy, moefy_layer_, moefy_random_init_

__all__ = [
    "MiniMoEConfig",
    "MiniMoEForSequenceClassification",
    "MiniMoEModel",
    "MiniMoEModelOutput",
    "MiniMoEPreTrainedModel",
    "MiniMoESequenceClassifierOutput",
    "MoEFeedForward",
    "expert_neurons",
    "init_student",
    "load_balance_loss",
    "moefy",
    "moefy_layer_",
    "moefy_random_init_",
    "with_balance_loss",
]
