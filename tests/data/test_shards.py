"""Shards: cut by size in source order, written once each (in worker processes or not), merged by streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minimoe.data.shards import build_shards, cut, merge_shards, write_shard
from minimoe.data.sources import open_source
from minimoe.errors import MiniMoEError


def encode(documents: list[list[str]]) -> dict[str, np.ndarray]:
    """A stand-in encoder: one sequence per sentence, its tokens the characters' code points."""
    sentences = [s for doc in documents for s in doc]
    if "boom." in sentences:
        raise MiniMoEError("boom: a bad document")
    ids = [ord(c) for s in sentences for c in s]
    return {
        "input_ids": np.array(ids, np.int32),
        "token_type_ids": np.zeros(len(ids), np.uint8),
        "lengths": np.array([len(s) for s in sentences], np.int64),
    }


@pytest.fixture
def source(tmp_path: Path):
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(f"doc {i}.\nmore {i}." for i in range(10)) + "\n")
    return open_source(path)


def test_shards_are_cut_by_size_in_source_order(source):
    shards = list(cut(source, shard_chars=26))
    assert [s.name for s in shards] == [f"shard-{i:012d}-{i + 2:012d}.npz" for i in range(0, 10, 2)]
    assert [len(s.documents) for s in shards] == [2] * 5 and shards[0].documents[1] == ["doc 1.", "more 1."]
    positions = [s.position for s in shards]
    assert positions == sorted(positions) and positions[-1] == source.total


@pytest.mark.parametrize("workers", [1, 2])
def test_build_skips_the_shards_on_disk_and_the_merge_concatenates_in_order(tmp_path: Path, source, workers: int):
    work = tmp_path / "work"
    work.mkdir()
    first = next(cut(source, shard_chars=26))
    sentinel = {"input_ids": np.array([7], np.int32), "token_type_ids": np.ones(1, np.uint8), "lengths": np.ones(1)}
    write_shard(lambda documents: sentinel, first.documents, work / first.name)  # left by a killed build

    paths = build_shards(source, encode, work, workers, shard_chars=26)
    merge_shards(paths, tmp_path)
    ids, types, offsets = (
        np.load(tmp_path / f"{n}.npy", mmap_mode="r") for n in ("input_ids", "token_type_ids", "offsets")
    )
    rest = encode([doc for shard in list(cut(source, 26))[1:] for doc in shard.documents])
    assert ids.tolist() == [7, *rest["input_ids"].tolist()] and types.tolist()[:2] == [1, 0]
    assert offsets.tolist() == [0, 1, *(1 + np.cumsum(rest["lengths"])).tolist()]
    assert isinstance(ids, np.memmap) and ids.dtype == np.int32 and offsets.dtype == np.int64


def test_a_workers_error_reaches_the_caller(tmp_path: Path):
    path = tmp_path / "docs.txt"
    path.write_text("fine.\n\nboom.\n\nfine again.\n")
    with pytest.raises(MiniMoEError, match="boom: a bad document"):
        build_shards(open_source(path), encode, tmp_path / "work", 2, shard_chars=1)
    assert not list((tmp_path / "work").glob("shard-000000000001-*"))  # no shard of the bad document
