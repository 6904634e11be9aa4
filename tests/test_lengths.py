"""The token limit of a model (position table, RoBERTa-style offset, tokenizer) and max_length fitted to it.

Every job applies it before tokenising: tests/jobs/* and tests/test_cli.py run each one on a 64-position model.
"""

from types import SimpleNamespace

import pytest
from transformers import BertConfig, RobertaConfig

from minimoe.errors import MiniMoEError
from minimoe.jobs.predict import PredictConfig
from minimoe.lengths import fit_max_length, token_limit
from minimoe.modeling import MiniMoEConfig


def test_token_limit_reads_positions_offsets_and_the_tokenizer():
    bert, roberta = BertConfig(max_position_embeddings=64), RobertaConfig(max_position_embeddings=514, pad_token_id=1)
    assert token_limit(bert) == 64
    assert token_limit(roberta) == 512  # positions start after the padding index
    assert MiniMoEConfig.for_student(1, 32, teacher=roberta).max_position_embeddings == 512  # the student counts from 0
    assert token_limit(bert, roberta) == 64  # a model and its KD teacher: both must take it
    assert token_limit(bert, tokenizer=SimpleNamespace(model_max_length=32)) == 32
    assert token_limit(bert, tokenizer=SimpleNamespace(model_max_length=int(1e30))) == 64  # "no limit" declared
    assert token_limit(SimpleNamespace()) is None


def test_the_default_is_lowered_with_a_notice_and_an_explicit_length_refused(capsys):
    assert fit_max_length(PredictConfig(), 64, "tiny") == 64
    assert capsys.readouterr().err == (
        "minimoe: max_length 128 (the default) is more than the 64 tokens tiny takes; using 64\n"
    )
    assert fit_max_length(PredictConfig(max_length=32), 64, "tiny") == 32
    assert fit_max_length(PredictConfig(), None, "tiny") == 128
    assert capsys.readouterr().err == ""
    with pytest.raises(MiniMoEError, match="^--max_length 100 is more than the 64 tokens tiny takes .* 64 or less$"):
        fit_max_length(PredictConfig(max_length=100), 64, "tiny")
