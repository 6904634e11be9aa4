"""Tokenisation of task examples into an unpadded torch dataset, and the padding collator shared with the corpus."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase
from transformers.utils import to_py_obj

from minimoe.data.tasks import Example
from minimoe.errors import MiniMoEError


class TaskDataset(Dataset):
    """Tokenised examples, each a dict of input_ids / token_type_ids / attention_mask lists plus `labels`."""

    def __init__(self, features: list[dict[str, list[int] | int | float]]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, list[int] | int | float]:
        return self.features[index]


def encode_task(examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, max_length: int = 128) -> TaskDataset:
    """Tokenise examples (single texts or pairs, truncated to `max_length`) without padding; batch with `pad_collator`."""
    if not examples:
        raise MiniMoEError("no examples to encode")
    columns = [list(column) for column in zip(*(example.texts for example in examples), strict=True)]
    encoded = tokenizer(*columns, truncation=True, max_length=max_length)
    return TaskDataset(
        [
            {key: values[i] for key, values in encoded.items()} | {"labels": example.label}
            for i, example in enumerate(examples)
        ]
    )


class PadCollator:
    """Pads a batch to its longest sequence exactly as transformers' `DataCollatorWithPadding` does (the tokenizer's
    pad id, pad token type and padding side; attention_mask added; `label` renamed `labels`), with one numpy scatter
    per padded field instead of Python lists per item.

    `DataCollatorWithPadding` turns every item into Python lists first: 126 ms for 1,024 corpus pairs of <= 128
    tokens against 6 ms here (`python benchmarks/loader.py` on 2 busy cores, docs/performance.md), which decides
    whether the loader can feed a GPU. tests/data/test_encode.py checks the outputs against it.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if tokenizer.pad_token_id is None:
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise MiniMoEError(f"tokenizer {name} has no padding token (pad_token), so batches cannot be padded")
        self.pad_values = {
            "input_ids": tokenizer.pad_token_id,
            "token_type_ids": tokenizer.pad_token_type_id,
            "attention_mask": 0,
            "special_tokens_mask": 1,
        }
        self.left = tokenizer.padding_side == "left"
        self.add_mask = "attention_mask" in tokenizer.model_input_names

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = np.fromiter((len(f["input_ids"]) for f in features), dtype=np.int64, count=len(features))  # [B]
        positions = np.arange(lengths.max(initial=0))  # [T]
        filled = positions >= len(positions) - lengths[:, None] if self.left else positions < lengths[:, None]  # [B, T]
        keys = [*features[0], *(["attention_mask"] if self.add_mask and "attention_mask" not in features[0] else [])]
        batch = {}
        for key in keys:
            if key not in self.pad_values:  # one value per item: labels, teacher logits
                batch[key] = torch.tensor(to_py_obj([f[key] for f in features]))
                continue
            padded = np.full(filled.shape, self.pad_values[key], dtype=np.int64)  # [B, T]
            if key == "attention_mask" and key not in features[0]:
                padded[filled] = 1
            else:
                padded[filled] = np.concatenate([np.asarray(f[key], dtype=np.int64) for f in features])
            batch[key] = torch.from_numpy(padded)
        if "label" in batch:
            batch["labels"] = batch.pop("label")
        return batch


def pad_collator(tokenizer: PreTrainedTokenizerBase) -> PadCollator:
    """Collate function padding each batch to its longest sequence, with attention_mask (float labels for regression)."""
    return PadCollator(tokenizer)
