"""Model cards: front matter a hub reads, the measured cost, provenance a derived model can read back."""

import torch
from transformers import BertConfig, BertForSequenceClassification

from minimoe import MiniMoEModel
from minimoe.card import CardInfo, measure_cost, model_card, read_card_meta, write_card


def test_student_card_front_matter_and_sections(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = MiniMoEModel(tiny_config(), add_pooling_layer=False)
    info = CardInfo(teacher="all-MiniLM-L6-v2", datasets=["wiki-summaries"], recipe="train:\n  lr: 0.0001\n")
    info.cost = measure_cost(model)
    write_card(tmp_path, model, info, "runs/x/student")
    meta = read_card_meta(tmp_path)
    assert meta == {
        "library_name": "transformers",
        "pipeline_tag": "feature-extraction",
        "base_model": "all-MiniLM-L6-v2",
        "datasets": ["wiki-summaries"],
        "tags": ["minimoe", "mixture-of-experts", "distillation"],
    }
    text = (tmp_path / "README.md").read_text()
    for section in ("## Architecture", "## Cost", "## Training", "## Recipe", "## How to load"):
        assert section in text
    assert "| experts per FFN (top-1) | 4 |" in text and "active parameters per token" in text
    assert 'from_pretrained("runs/x/student", trust_remote_code=True)' in text and "lr: 0.0001" in text


def test_classifier_card_has_scores_labels_and_pipeline(tmp_path):
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
    )  # fmt: skip
    info = CardInfo(teacher="bert-tiny", task="movie-sentiment", scores={"accuracy": 0.81, "score": 0.81})
    text = model_card(BertForSequenceClassification(config), info, "tuned")
    assert "pipeline_tag: text-classification" in text and "metrics:\n- accuracy" in text
    assert "tags:\n- minimoe\n" in text and "mixture-of-experts" not in text  # a dense teacher
    assert "| labels | negative, positive |" in text and "| accuracy | 0.8100 |" in text
    assert 'pipeline("text-classification", model="tuned", trust_remote_code=True)' in text
    assert read_card_meta(tmp_path) == {}
