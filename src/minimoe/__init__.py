"""MiniMoE: distil language models into mixture-of-minimal-experts students.

Importing the package registers the model with transformers' Auto classes.
"""

from importlib.metadata import version

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from minimoe.errors import MiniMoEError
from minimoe.modeling import MiniMoEConfig, MiniMoEForSequenceClassification, MiniMoEModel

AutoConfig.register("minimoe", MiniMoEConfig, exist_ok=True)
AutoModel.register(MiniMoEConfig, MiniMoEModel, exist_ok=True)
AutoModelForSequenceClassification.register(MiniMoEConfig, MiniMoEForSequenceClassification, exist_ok=True)

__version__ = version("minimoe")
__all__ = [
    "MiniMoEConfig",
    "MiniMoEError",
    "MiniMoEForSequenceClassification",
    "MiniMoEModel",
]
