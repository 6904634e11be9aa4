"""Tokenising task examples and padding batches dynamically."""

from __future__ import annotations

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
