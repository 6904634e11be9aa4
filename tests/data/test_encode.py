"""Tokenising task examples and padding batches dynamically."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from minimoe.data import Example, encode_task, pad_collator
from minimoe.errors import MiniMoEError


def test_pairs_are_encoded_truncated_and_padded_per_batch(bert_tokenizer):
    examples = [Example(("the cat sat", "a dog ran"), 2), Example(("red", "blue bird sang on the big tree house"), 0)]
    dataset = encode_task(examples, bert_tokenizer, max_length=8)
    assert [bert_tokenizer.convert_ids_to_tokens(item["input_ids"]) for item in dataset] == [
        ["[CLS]", "the", "cat", "[SEP]", "a", "dog", "ran", "[SEP]"],  # longest-first truncation
        ["[CLS]", "red", "[SEP]", "blue", "bird", "sang", "on", "[SEP]"],
    ]
    assert dataset[0]["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1, 1]
    batch = pad_collator(bert_tokenizer)([dataset[0], dataset[1]])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape == (2, 8)
    assert batch["labels"].tolist() == [2, 0] and batch["labels"].dtype == torch.long


def test_single_texts_with_float_labels_pad_to_longest(bert_tokenizer):
    dataset = encode_task([Example(("the cat",), 0.5), Example(("the cat sat on a mat",), 4.0)], bert_tokenizer)
    batch = pad_collator(bert_tokenizer)([dataset[0], dataset[1]])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0, 0], [1] * 8]
    assert batch["labels"].dtype == torch.float32


def test_nothing_to_encode(bert_tokenizer):
    with pytest.raises(MiniMoEError, match="no examples to encode"):
        encode_task([], bert_tokenizer)


def reference_collate(tokenizer, items):
    """What transformers' own padding collator makes of `items` (the outputs ours must equal)."""
    from transformers import DataCollatorWithPadding

    return dict(DataCollatorWithPadding(tokenizer, return_tensors="pt")(copy.deepcopy(items)))


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_padding_equals_transformers_collator(bert_tokenizer, roberta_tokenizer, family, side):
    tokenizer = copy.deepcopy(bert_tokenizer if family == "bert" else roberta_tokenizer)
    tokenizer.padding_side = side
    texts = [("the cat sat on a mat", "it was red"), ("dog", "big blue bird sang"), ("sun rain tree house", "alpha")]
    encoded = tokenizer(*map(list, zip(*texts)), return_token_type_ids=True, return_special_tokens_mask=True)
    rows = [{k: v[i] for k, v in encoded.items()} for i in range(len(texts))]
    cases = [
        [r | {"labels": i} for i, r in enumerate(rows)],  # lists of ints, class labels
        [r | {"label": 0.5 * i, "teacher_logits": [0.1 * i, -0.2]} for i, r in enumerate(rows)],  # `label` renamed
        [{"input_ids": np.array(r["input_ids"]), "token_type_ids": np.array(r["token_type_ids"])} for r in rows],
        [{"input_ids": r["input_ids"]} for r in rows[:1]],  # one sequence: nothing to pad
    ]
    collate = pad_collator(tokenizer)
    for items in cases:
        ours, theirs = collate(copy.deepcopy(items)), reference_collate(tokenizer, items)
        assert list(ours) == list(theirs)
        for key, expected in theirs.items():
            assert ours[key].dtype == expected.dtype and torch.equal(ours[key], expected), (family, side, key)


def test_padding_needs_a_pad_token(bert_tokenizer):
    tokenizer = copy.deepcopy(bert_tokenizer)
    tokenizer.pad_token = None
    with pytest.raises(MiniMoEError, match="no padding token"):
        pad_collator(tokenizer)
