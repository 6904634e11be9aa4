"""The MiniMoE model: config, encoder, mixture-of-minimal-experts FFN, heads, moefy.

config, dispatch, moe, loading, encoder and heads are joined into a saved model's remote code (portable.py): they
import nothing of minimoe but each other and minimoe.errors, and config.py imports no other module of them (it
becomes configuration_minimoe.py, loaded on its own).
"""

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
