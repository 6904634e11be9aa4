"""Saved tiny classifiers for the evaluate / predict tests."""

import pytest
import torch
from transformers import AutoTokenizer

from minimoe import MiniMoEConfig, MiniMoEForSequenceClassification
from minimoe.files import save_model


@pytest.fixture(scope="session")
def save_classifier(tiny_teacher_dir, tmp_path_factory):
    """save_classifier(labels) -> a saved random MiniMoE classifier (the tiny teacher's tokenizer); [] = regression."""

    def make(labels: list[str]):
        torch.manual_seed(0)
        names = labels or ["score"]
        config = MiniMoEConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32,
            num_experts=2, max_position_embeddings=64, num_labels=len(names),
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        )  # fmt: skip
        path = tmp_path_factory.mktemp("classifier")
        tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
        return save_model(MiniMoEForSequenceClassification(config), tokenizer, path / "model")

    return make
