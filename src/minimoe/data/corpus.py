"""Task-agnostic distillation corpus: BERT-style segment pairs, built once per (tokenizer, length, source) and memmapped.

Pairs follow BERT's create_pretraining_data without masking and without random next sentences: a
document's consecutive sentences are grouped into chunks that fit `max_length`, and each chunk is split
at a sentence boundary into segment A (first half of its sentences) and segment B (the rest), both from
the same document. A one-sentence chunk (a short document's only sentence, or a sentence longer than the
budget, then truncated) becomes a single segment. Segments are encoded by the tokenizer's own pair
encoding, so special tokens and token types are right for each family: `[CLS] A [SEP] B [SEP]` with
types 0/1 for BERT, `<s> A </s></s> B </s>` with all-zero types for RoBERTa/MPNet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset
from transformers import PreTrainedTokenizerBase

from minimoe.cache import cache_dir, sha256_of
from minimoe.data.text import Document, split_sentences
from minimoe.errors import MiniMoEError
from minimoe.files import atomic_path

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the pairing or the storage layout changes
_DOCUMENTS_PER_BATCH = 1000
_ARRAYS = ("input_ids", "token_type_ids", "offsets")


def read_documents(path: str | Path) -> list[Document]:
    """Read a text file of blank-line-separated documents, one sentence per line (no blank line = one document)."""
    path = Path(path)
    if not path.is_file():
        raise MiniMoEError(f"{path}: corpus file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MiniMoEError(f"{path}: corpus file is not UTF-8 text ({exc})") from exc
    blocks = (block.splitlines() for block in re.split(r"\n[ \t\r]*\n", text))
    documents = [doc for doc in ([line.strip() for line in block if line.strip()] for block in blocks) if doc]
    if not documents or not re.search(r"[^\W_]", text):  # no letter or digit: NUL bytes, a binary file
        raise MiniMoEError(f"{path}: corpus file holds no text (no letters or digits)")
    return documents


def documents_from_texts(texts: Sequence[str]) -> list[Document]:
    """Treat each text (e.g. a row of a HF dataset's text column) as one document and split it into sentences."""
    documents = [[s for line in text.splitlines() for s in split_sentences(line.strip())] for text in texts if text]
    return [doc for doc in documents if doc]


def plan_pairs(lengths: Sequence[int], budget: int) -> list[tuple[range, range]]:
    """Group a document's sentences (by token count) into chunks of <= `budget` tokens; return each chunk's (A, B) ranges."""
    chunks, start, total = [], 0, 0
    for i, length in enumerate(lengths):
        if total and total + length > budget:
            chunks.append(range(start, i))
            start, total = i, 0
        total += length
    chunks.append(range(start, len(lengths)))
    middles = [chunk.start + max(1, len(chunk) // 2) for chunk in chunks]
    return [
        (range(chunk.start, middle), range(middle, chunk.stop)) for chunk, middle in zip(chunks, middles, strict=True)
    ]


def _tokenize(tokenizer: PreTrainedTokenizerBase, max_length: int, *texts: list[str]) -> tuple[list, list]:
    if not texts[0]:
        return [], []
    encoded = tokenizer(*texts, truncation=True, max_length=max_length, return_token_type_ids=True)
    return encoded["input_ids"], encoded["token_type_ids"]


def _encode(
    documents: Sequence[Document], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode every document's pairs; return concatenated token ids, token types, and pair offsets (n + 1 of them)."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if budget < 2:
        raise MiniMoEError(f"max_length {max_length} leaves no room for text after the special tokens")
    ids: list[int] = []
    types: list[int] = []
    sizes: list[int] = []
    for first in range(0, len(documents), _DOCUMENTS_PER_BATCH):
        batch = documents[first : first + _DOCUMENTS_PER_BATCH]
        counts = [len(x) for x in tokenizer([s for doc in batch for s in doc], add_special_tokens=False)["input_ids"]]
        segments, position = [], 0
        for doc in batch:
            for a, b in plan_pairs(counts[position : position + len(doc)], budget):
                segments.append((" ".join(doc[i] for i in a), " ".join(doc[i] for i in b)))
            position += len(doc)
        pairs = [(a, b) for a, b in segments if b]
        singles = [a for a, b in segments if not b]
        paired = _tokenize(tokenizer, max_length, [a for a, _ in pairs], [b for _, b in pairs])
        for group_ids, group_types in (paired, _tokenize(tokenizer, max_length, singles)):
            ids.extend(chain.from_iterable(group_ids))
            types.extend(chain.from_iterable(group_types))
            sizes.extend(map(len, group_ids))
    return (
        np.asarray(ids, dtype=np.int32),
        np.asarray(types, dtype=np.uint8),
        np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
    )


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash what decides the ids: tokenizer class, vocabulary, a probe pair's encoding (normalisation, specials)."""
    probe = tokenizer("Héllo, WORLD!", "Second segment.", return_token_type_ids=True)
    vocab = sorted(tokenizer.get_vocab().items())
    payload = [type(tokenizer).__name__, vocab, probe["input_ids"], probe["token_type_ids"]]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()


def _digest(parts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _source(source: Any, text_column: str) -> tuple[str, Callable[[], list[Document]]]:
    """Content hash of the source, and a function that reads its documents (called only when the cache misses)."""
    if isinstance(source, (str, Path)):
        source = [source]
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
        missing = [p for p in paths if not p.is_file()]
        if missing or not paths:
            raise MiniMoEError(f"{missing[0] if missing else '(no path)'}: corpus file not found")
        return _digest(sha256_of(p) for p in paths), lambda: [doc for p in paths for doc in read_documents(p)]
    columns = getattr(source, "column_names", None)
    if columns is None or text_column not in columns:
        raise MiniMoEError(
            f"corpus source must be text file path(s) or a datasets.Dataset with a {text_column!r} column, "
            f"got columns {columns}"
        )
    texts = source[text_column]

    def load() -> list[Document]:
        documents = documents_from_texts(texts)
        if not documents:
            raise MiniMoEError(f"dataset column {text_column!r} holds no text")
        return documents

    return _digest(texts), load


class PairCorpus(Dataset):
    """Segment pairs memory-mapped from a cache directory written by `build_corpus`; batch them with `pad_collator`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.input_ids, self.token_type_ids, self.offsets = (
            np.load(self.directory / f"{name}.npy", mmap_mode="r") for name in _ARRAYS
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        start, end = self.offsets[index], self.offsets[index + 1]
        return {
            "input_ids": self.input_ids[start:end].astype(np.int64),
            "token_type_ids": self.token_type_ids[start:end].astype(np.int64),
        }


def build_corpus(
    source: str | Path | Sequence[str | Path] | Any,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 128,
    *,
    text_column: str = "text",
    cache_root: str | Path | None = None,
) -> PairCorpus:
    """Return the pair corpus of text file(s) or a HF dataset for this tokenizer, built once and cached atomically on disk.

    The cache key covers the cache format, the tokenizer fingerprint, `max_length` and the sources' content,
    so editing a source or switching tokenizer builds a new entry; the default root is <cache>/corpus-cache.
    """
    digest, load_documents = _source(source, text_column)
    fingerprint = tokenizer_fingerprint(tokenizer)
    settings = {"format": CACHE_FORMAT, "tokenizer": fingerprint, "max_length": max_length, "source": digest}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
    directory = Path(cache_root or cache_dir() / "corpus-cache") / f"pairs-{key}"
    if not directory.exists():
        documents = load_documents()
        logger.info("building distillation pairs from %d documents into %s", len(documents), directory)
        arrays = _encode(documents, tokenizer, max_length)
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            for name, array in zip(_ARRAYS, arrays, strict=True):
                np.save(tmp / f"{name}.npy", array)
    return PairCorpus(directory)


def load_corpus(sources: list[str | Path], tokenizer, max_length: int, limit: int = 0) -> Dataset:
    """Segment pairs from text files or `hf:NAME` datasets (train split); packaged corpus names are resolved to
    their files first (minimoe.assets.resolve.resolve_corpus)."""
    resolved = []
    for source in sources:
        if str(source).startswith("hf:"):
            import datasets

            resolved.append(datasets.load_dataset(str(source)[3:], split="train"))
        elif Path(source).is_file():
            resolved.append(Path(source))
        else:
            raise MiniMoEError(f"corpus {source!r} is neither a packaged corpus, a file, nor hf:NAME")
    datasets_ = [build_corpus(s, tokenizer, max_length) for s in resolved]
    data = datasets_[0] if len(datasets_) == 1 else ConcatDataset(datasets_)
    return Subset(data, range(limit)) if 0 < limit < len(data) else data
