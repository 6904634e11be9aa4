"""Saved tiny classifiers for the evaluate / predict tests."""

import pytest
import torch
from transformers import AutoTokenizer

from minimoe import MiniMoEConfig, MiniMoEForSequenceClassification
from minimoe.saving import save_model


@pytest.fixture(scope="session")
def save_classifier(tiny_teacher_dir, tmp_path_factory):
    """save_classifier(labels, experts=2) -> a saved random MiniMoE classifier (the tiny teacher's tokenizer);
    labels [] = regression, experts 1 = a dense student."""

    def make(labels: list[str], experts: int = 2):
        torch.manual_seed(0)
        names = labels or ["score"]
        config = MiniMoEConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32,
            num_experts=experts, max_position_embeddings=64, num_labels=len(names),
            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
        )  # fmt: skip
        path = tmp_path_factory.mktemp("classifier")
        tokenizer = AutoTokenizer.from_pretrained(tiny_teacher_dir)
        return save_model(MiniMoEForSequenceClassification(config), tokenizer, path / "model")

    return make


SENTENCES = ["the film was new", "people found the album", "the team played music", "a river in the north"]
NLI = ("entailment", "neutral", "contradiction")


@pytest.fixture
def mnli_dir(tmp_path):
    """MNLI in its GLUE layout (train, dev_matched, dev_mismatched), 12 pairs each, in the tiny teacher's words."""
    rows = [f"{a}\t{b}\t{NLI[i % 3]}" for i, (a, b) in enumerate(zip(SENTENCES * 3, SENTENCES[::-1] * 3))]
    directory = tmp_path / "MNLI"
    directory.mkdir()
    for name in ("train", "dev_matched", "dev_mismatched"):
        (directory / f"{name}.tsv").write_text("sentence1\tsentence2\tgold_label\n" + "\n".join(rows) + "\n")
    return directory
