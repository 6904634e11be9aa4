"""Corpus sources: every kind yields the same documents in order, with a stamp that follows its content."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
from pathlib import Path

import datasets
import pytest
import zstandard

from minimoe.data import sources
from minimoe.data.sources import FileSource, open_source, read_documents
from minimoe.errors import MiniMoEError

TEXT = "The cat sat.\nIt was red.\n\nA dog ran.\n \t \nBig blue bird.\nIt sang.\nTrees.\n"
DOCUMENTS = [["The cat sat.", "It was red."], ["A dog ran."], ["Big blue bird.", "It sang.", "Trees."]]
RECORDS = ["The cat sat. It was red.", "A dog ran.", "Big blue bird. It sang.\nTrees."]  # running text
COMPRESSORS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": lambda data: (
        zstandard.ZstdCompressor().compress(data[:20]) + zstandard.ZstdCompressor().compress(data[20:])
    ),
}


def documents(spec, text_column: str = "text") -> list[list[str]]:
    return list(open_source(spec, text_column).documents())


def jsonl(records: list[str], column: str = "text") -> bytes:
    return "".join(json.dumps({column: r, "id": i}) + "\n" for i, r in enumerate(records)).encode()


@pytest.mark.parametrize("suffix", ["", *COMPRESSORS])
def test_text_and_jsonl_files_plain_or_compressed(tmp_path: Path, suffix: str):
    compress = COMPRESSORS.get(suffix, lambda data: data)
    (tmp_path / f"docs.txt{suffix}").write_bytes(compress(TEXT.encode()))
    (tmp_path / f"docs.jsonl{suffix}").write_bytes(compress(jsonl(RECORDS, "body")))
    assert documents(tmp_path / f"docs.txt{suffix}") == DOCUMENTS
    assert documents(str(tmp_path / f"docs.jsonl{suffix}"), "body") == DOCUMENTS
    source = open_source(tmp_path / f"docs.txt{suffix}")
    list(source.documents())
    assert source.unit == "B" and source.position == source.total == (tmp_path / f"docs.txt{suffix}").stat().st_size


def test_directories_globs_and_lists_read_files_in_sorted_order(tmp_path: Path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("Second doc.\n")
    (tmp_path / "a.txt").write_text("First doc.\n\nFirst again.\n")
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(jsonl(["Third doc."])))
    (tmp_path / ".hidden.txt").write_text("Never read.\n")
    expected = [["First doc."], ["First again."], ["Second doc."], ["Third doc."]]
    assert documents(tmp_path) == expected
    assert documents(str(tmp_path / "**" / "*.txt")) == expected[:3]
    assert documents([tmp_path / "b" / "2.txt", str(tmp_path / "a.txt")]) == [expected[2], *expected[:2]]


def test_datasets_in_memory_saved_and_streamed(tmp_path: Path):
    rows = {"text": [*RECORDS, ""], "id": [1, 2, 3, 4]}  # an empty row is no document
    dataset = datasets.Dataset.from_dict(rows)
    assert documents(dataset) == DOCUMENTS
    dataset.save_to_disk(tmp_path / "saved")
    datasets.DatasetDict({"train": dataset}).save_to_disk(tmp_path / "saved-dict")
    assert documents(tmp_path / "saved") == documents(str(tmp_path / "saved-dict")) == DOCUMENTS
    (tmp_path / "hub").mkdir()  # a dataset repository layout, read as hf:NAME is (streaming=True)
    (tmp_path / "hub" / "train.jsonl").write_bytes(jsonl(RECORDS))
    streamed = open_source(f"hf:{tmp_path / 'hub'}")
    assert isinstance(streamed.dataset, datasets.IterableDataset)
    assert list(streamed.documents()) == DOCUMENTS and streamed.unit == "doc" and streamed.position == 3


def test_stamps_follow_the_content(tmp_path: Path):
    path = tmp_path / "docs.txt"
    path.write_text(TEXT)
    first = open_source(path).stamp
    assert open_source(str(path)).stamp == first
    os.utime(path, ns=(1, 1))
    assert open_source(path).stamp != first
    assert open_source(path, "body").stamp == open_source(path).stamp  # a text file has no text field
    (tmp_path / "r.jsonl").write_bytes(jsonl(RECORDS))
    assert open_source(tmp_path / "r.jsonl", "body").stamp != open_source(tmp_path / "r.jsonl").stamp
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "train.jsonl").write_bytes(jsonl(RECORDS))
    hub = open_source(f"hf:{tmp_path / 'hub'}").stamp
    (tmp_path / "hub" / "train.jsonl").write_bytes(jsonl(RECORDS[:2]))
    assert open_source(f"hf:{tmp_path / 'hub'}").stamp != hub
    assert (
        open_source(datasets.Dataset.from_dict({"text": ["a"]})).stamp
        != open_source(datasets.Dataset.from_dict({"text": ["b"]})).stamp
    )


def test_blank_lines_end_documents(tmp_path: Path):
    path = tmp_path / "one.txt"
    path.write_text("First sentence.\r\nSecond sentence.\n   \n\n", encoding="utf-8")
    assert read_documents(path) == [["First sentence.", "Second sentence."]]
    path.write_text("A.\n\x0c\nB.\n\t\nC.\n\n\n\nD.", encoding="utf-8")  # a form feed is no blank line
    assert read_documents(path) == [["A.", "B."], ["C."], ["D."]]


def test_a_long_document_is_cut_so_memory_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sources, "MAX_DOCUMENT_CHARS", 10)
    path = tmp_path / "long.txt"
    path.write_text("aaaa.\nbbbb.\ncccc.\ndddd.\n")
    assert read_documents(path) == [["aaaa.", "bbbb."], ["cccc.", "dddd."]]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "missing.txt: corpus file not found"),
        ("bad.txt", b"ok\n\xff\xfe", "bad.txt: corpus file is not UTF-8 text"),
        ("cut.txt.gz", gzip.compress(TEXT.encode())[:-12], "cut.txt.gz: cannot read the corpus file"),
        ("bad.jsonl", b'{"text": "a"}\n{"text": \n', "bad.jsonl:2: not a JSON line"),
        ("bad.jsonl", b'{"text": "a"}\n{"body": "b"}\n', "bad.jsonl:2: the record has no 'text' text field"),
        ("bad.jsonl", b'{"text": 3}\n', "bad.jsonl:1: the 'text' field is not text"),
    ],
)
def test_bad_files_are_named_in_one_line(tmp_path: Path, name: str, content: bytes | None, message: str):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(MiniMoEError, match=message):
        documents(tmp_path / name)


def test_bad_datasets_and_globs_are_reported(tmp_path: Path):
    with pytest.raises(MiniMoEError, match=r"\*.txt: corpus source holds no files"):
        open_source(str(tmp_path / "*.txt"))
    with pytest.raises(MiniMoEError, match="has no 'body' column"):
        open_source(datasets.Dataset.from_dict({"text": ["a"]}), "body")
    datasets.DatasetDict({"dev": datasets.Dataset.from_dict({"text": ["a"]})}).save_to_disk(tmp_path / "d")
    with pytest.raises(MiniMoEError, match="no train split \\(splits: dev\\)"):
        open_source(tmp_path / "d")
    with pytest.raises(MiniMoEError, match="hf:.*nowhere: cannot open the dataset's train split"):
        open_source(f"hf:{tmp_path / 'nowhere'}")
    assert isinstance(open_source(tmp_path / "d" / "dataset_dict.json"), FileSource)  # a plain file is text
