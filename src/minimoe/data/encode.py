"""Tokenisation of task examples into an unpadded torch dataset, and the padding collator shared with the corpus."""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

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


def pad_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    """Collate function padding each batch to its longest sequence, with attention_mask (float labels for regression)."""
    return DataCollatorWithPadding(tokenizer, return_tensors="pt")
