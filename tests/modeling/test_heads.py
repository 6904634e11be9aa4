"""Transformers conventions of the MiniMoE models: tuples, re-heading, strict kwargs, a quiet load."""

import pytest
import torch
import transformers
from transformers import AutoModel, AutoModelForSequenceClassification

from minimoe import MiniMoEForSequenceClassification, MiniMoEModel


def test_return_dict_false_gives_tuples(tiny_config, batch):
    ids, mask = batch
    model = MiniMoEForSequenceClassification(tiny_config(num_labels=3)).eval()
    as_dict = model(ids, mask)
    as_tuple = model(ids, mask, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], as_dict.logits)
    loss, logits = model(ids, mask, labels=torch.tensor([0, 1, 2]), return_dict=False)[:2]
    assert loss.ndim == 0 and logits.shape == (3, 3)
    base = MiniMoEModel(tiny_config()).eval()
    assert torch.equal(base(ids, mask, return_dict=False)[0], base(ids, mask).last_hidden_state)


def test_unknown_forward_arguments_raise(tiny_config, batch):
    ids, mask = batch
    with pytest.raises(TypeError, match="attention_maks"):
        MiniMoEForSequenceClassification(tiny_config(num_labels=2))(ids, attention_maks=mask)
    with pytest.raises(TypeError, match="labels"):
        MiniMoEModel(tiny_config())(ids, mask, labels=torch.tensor([0, 1, 0]))


def test_ignore_mismatched_sizes_reheads_a_classifier(tiny_config, tmp_path):
    MiniMoEForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=5, ignore_mismatched_sizes=True)
    assert model.classifier.weight.shape == (5, 32) and model.config.num_labels == 5
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path, dtype="auto").dtype == torch.float32
    with pytest.raises(Exception, match="num_labels"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=5)


def test_loading_a_distilled_student_shows_no_weight_table(tiny_config, tmp_path, capfd):
    MiniMoEModel(tiny_config(), add_pooling_layer=False).save_pretrained(tmp_path / "student")
    MiniMoEForSequenceClassification(tiny_config(num_labels=2)).save_pretrained(tmp_path / "tuned")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    try:
        capfd.readouterr()
        classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student", num_labels=2)
        AutoModel.from_pretrained(tmp_path / "tuned")  # a fine-tuned checkpoint's head is not the encoder's
        captured = capfd.readouterr()
    finally:
        transformers.logging.set_verbosity(verbosity)
    assert "LOAD REPORT" not in captured.err + captured.out and "MISSING" not in captured.err
    assert classifier.minimoe.pooler.dense.weight.abs().sum() > 0  # still initialised, just not reported
