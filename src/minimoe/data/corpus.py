"""Task-agnostic distillation corpus: BERT-style segment pairs, built once per (tokenizer, length, source) and memmapped.

Pairs follow BERT's create_pretraining_data without masking and without random next sentences: a
document's consecutive sentences are grouped into chunks that fit `max_length`, and each chunk is split
at a sentence boundary into segment A (first half of its sentences) and segment B (the rest), both from
the same document. A one-sentence chunk (a short document's only sentence, or a sentence longer than the
budget, then truncated) becomes a single segment. Segments are encoded by the tokenizer's own pair
encoding, so special tokens and token types are right for each family: `[CLS] A [SEP] B [SEP]` with
types 0/1 for BERT, `<s> A </s></s> B </s>` with all-zero types for RoBERTa/MPNet. The pairs are stored
in document order. The build streams the source and encodes it in parallel shards (`data/shards.py`), so
its memory does not grow with the corpus, and a killed build resumes from its finished shards.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset
from transformers import PreTrainedTokenizerBase

from minimoe.cache import build_once, cache_dir, content_key
from minimoe.data.shards import TOKEN_ARRAYS, Encoder, build_shards, default_workers, merge_shards
from minimoe.data.sources import Source, open_source
from minimoe.data.text import Document
from minimoe.errors import MiniMoEError
from minimoe.files import atomic_path

CACHE_FORMAT = 2  # bump when the pairing, the order or the storage layout changes (2: document order, manifest)
SHARD_CHARS = 1 << 20  # characters of text a shard holds (~250k tokens): the unit of work, of memory and of resume
_ARRAYS = (*TOKEN_ARRAYS, "offsets")  # the .npy files of an entry, beside manifest.json


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


def encode_documents(
    documents: Sequence[Document], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> dict[str, np.ndarray]:
    """Encode documents' pairs, in document order: flat token ids and types, and each pair's length."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    sentences = [s for doc in documents for s in doc]
    counts = [len(x) for x in tokenizer(sentences, add_special_tokens=False)["input_ids"]]
    segments, position = [], 0
    for doc in documents:
        for a, b in plan_pairs(counts[position : position + len(doc)], budget):
            segments.append((" ".join(doc[i] for i in a), " ".join(doc[i] for i in b)))
        position += len(doc)
    ids: list[list[int]] = [[] for _ in segments]
    types: list[list[int]] = [[] for _ in segments]
    for pair in (True, False):  # pairs and single segments are encoded apart, then put back in order
        indices = [i for i, (_, b) in enumerate(segments) if bool(b) == pair]
        texts = [[segments[i][0] for i in indices]] + ([[segments[i][1] for i in indices]] if pair else [])
        if indices:
            encoded = tokenizer(*texts, truncation=True, max_length=max_length, return_token_type_ids=True)
            for i, x, t in zip(indices, encoded["input_ids"], encoded["token_type_ids"], strict=True):
                ids[i], types[i] = x, t
    lengths = np.fromiter(map(len, ids), np.int64, len(ids))
    tokens = int(lengths.sum())
    return {
        "input_ids": np.fromiter(chain.from_iterable(ids), np.int32, tokens),
        "token_type_ids": np.fromiter(chain.from_iterable(types), np.uint8, tokens),
        "lengths": lengths,
    }


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash what decides the ids: tokenizer class, vocabulary, a probe pair's encoding (normalisation, specials)."""
    probe = tokenizer("Héllo, WORLD!", "Second segment.", return_token_type_ids=True)
    vocab = sorted(tokenizer.get_vocab().items())
    payload = [type(tokenizer).__name__, vocab, probe["input_ids"], probe["token_type_ids"]]
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False).encode("utf-8")).hexdigest()


class PairCorpus(Dataset):
    """Segment pairs memory-mapped from a cache directory written by `build_corpus`; batch them with `pad_collator`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.input_ids, self.token_type_ids, self.offsets = (
            np.load(self.directory / f"{name}.npy", mmap_mode="r") for name in _ARRAYS
        )

    def __getstate__(self) -> dict:
        """Pickled as its directory (DataLoader workers started by spawn map the arrays again, never copy them)."""
        return {"directory": self.directory}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        start, end = self.offsets[index], self.offsets[index + 1]
        return {
            "input_ids": self.input_ids[start:end].astype(np.int64),
            "token_type_ids": self.token_type_ids[start:end].astype(np.int64),
        }


def build_corpus(
    source: Any,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 128,
    *,
    text_column: str = "text",
    cache_root: str | Path | None = None,
    workers: int = 0,
    shard_chars: int = SHARD_CHARS,
) -> PairCorpus:
    """Return the pair corpus of a source for this tokenizer, built once into the cache and memory-mapped.

    `source`: text or JSONL file(s), plain or compressed, a directory, a glob, a saved-dataset directory,
    `hf:NAME[:CONFIG]` (streamed) or a `datasets.Dataset` (see `data/sources.py`). The cache key covers the
    cache format, the tokenizer fingerprint, `max_length` and the source's stamp, so a changed source or
    tokenizer builds a new entry; the default root is <cache>/corpus-cache. A built entry costs only a check
    that it exists; a missing one is built by `workers` processes (0 = one per core), once per filesystem
    (a lock file makes other processes wait, then read it), resuming from the shards a killed build left.
    """
    source = open_source(source, text_column)
    if max_length - tokenizer.num_special_tokens_to_add(pair=True) < 2:
        raise MiniMoEError(f"max_length {max_length} leaves no room for text after the special tokens")
    settings = {
        "format": CACHE_FORMAT,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        "source": source.stamp,
    }
    directory = Path(cache_root or cache_dir() / "corpus-cache") / f"pairs-{content_key(settings)}"
    encode = partial(encode_documents, tokenizer=tokenizer, max_length=max_length)
    build = partial(_build, source, encode, directory, settings, workers or default_workers(), shard_chars)
    build_once(directory, f"the distillation corpus of {source.name}", build)
    return PairCorpus(directory)


def _build(source: Source, encode: Encoder, directory: Path, settings: dict, workers: int, shard_chars: int) -> None:
    """Shards in a work directory beside the entry (kept if killed, to resume), merged into the entry atomically."""
    work = directory.with_name(f".{directory.name}.partial")
    try:
        paths = build_shards(source, encode, work, workers, shard_chars)
        if not paths:
            raise MiniMoEError(f"{source.name}: corpus source holds no text")
    except MiniMoEError:  # a bad source: nothing worth resuming
        shutil.rmtree(work, ignore_errors=True)
        raise
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        counts = merge_shards(paths, tmp)
        manifest = {**settings, "source_name": source.name, **counts}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(work)


def load_corpus(
    sources: Sequence[str | Path],
    tokenizer,
    max_length: int,
    limit: int = 0,
    *,
    text_column: str = "text",
    workers: int = 0,
) -> Dataset:
    """Segment pairs of `build_corpus` sources, each its own cache entry, concatenated; packaged corpus names are
    resolved to their files first (minimoe.assets.resolve.resolve_corpus)."""
    corpora = [build_corpus(s, tokenizer, max_length, text_column=text_column, workers=workers) for s in sources]
    data = corpora[0] if len(corpora) == 1 else ConcatDataset(corpora)
    return Subset(data, range(limit)) if 0 < limit < len(data) else data
