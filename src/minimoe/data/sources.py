"""Where corpus documents come from: text or JSONL files (plain or compressed), directories, globs, and datasets.

A source streams its documents (lists of sentences) in a fixed order, holding one document at a time, and
has a stamp that changes when its content does (a file's path, size and mtime; a dataset's fingerprint or
revision), so a cache keyed on it is found again without reading the source. Text files hold blank-line-
separated documents, one sentence per line; a JSONL record's text field, or a dataset row's, is one document
of running text, split into sentences. A document longer than MAX_DOCUMENT_CHARS is cut at a sentence
boundary, so even a file without blank lines is read in bounded memory.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import json
import lzma
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import zstandard

from minimoe.data.text import Document, split_sentences
from minimoe.errors import MiniMoEError

MAX_DOCUMENT_CHARS = 1 << 20
RECORD_SUFFIXES = (".jsonl", ".ndjson")  # one JSON object a line; anything else is read as text


DECOMPRESSORS = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw),
    ".bz2": bz2.BZ2File,
    ".xz": lzma.LZMAFile,
    ".lzma": lzma.LZMAFile,
    ".zst": lambda raw: zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True),
    ".zstd": lambda raw: zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True),
}
CORRUPT = (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError)  # what truncated or corrupt compressed data raises


def text_sentences(text: str) -> list[str]:
    """Running text (paragraphs on lines) as sentences."""
    return [s for line in text.splitlines() for s in split_sentences(line.strip())]


_TEXT = re.compile(r"[^\W_]")  # a letter or a digit, in any script


def _assemble(sentences: Iterable[str | None]) -> Iterator[Document]:
    """Documents from a stream of sentences where None ends a document; a long one is cut after MAX_DOCUMENT_CHARS.

    A "sentence" without a letter or digit (NUL bytes, a ruler of dashes, binary junk) is not text and is left out,
    so a file of nothing else holds no documents and is refused."""
    document: Document = []
    size = 0
    for sentence in sentences:
        if sentence is not None and _TEXT.search(sentence):
            document.append(sentence)
            size += len(sentence)
        if document and (sentence is None or size >= MAX_DOCUMENT_CHARS):
            yield document
            document, size = [], 0
    if document:
        yield document


def _line_sentences(lines: Iterable[str]) -> Iterator[str | None]:
    """A text file's lines: each non-blank line a sentence, a blank (spaces and tabs only) line a document's end."""
    for line in lines:
        if line.strip(" \t\r\n"):
            yield from (s for piece in line.splitlines() if (s := piece.strip()))
        else:
            yield None


def _record_sentences(lines: Iterable[str], path: Path, column: str) -> Iterator[str | None]:
    """A JSONL file's records: the `column` text of each is one document."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)[column]
        except json.JSONDecodeError as exc:
            raise MiniMoEError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
        except (KeyError, TypeError):
            raise MiniMoEError(f"{path}:{number}: the record has no {column!r} text field") from None
        if not isinstance(text, str):
            raise MiniMoEError(f"{path}:{number}: the {column!r} field is not text")
        yield from text_sentences(text)
        yield None


class FileSource:
    """Text or JSONL files, each plain or compressed (.gz .bz2 .xz .zst), read in order; position = bytes read."""

    unit = "B"

    def __init__(self, paths: Sequence[Path], text_column: str = "text", name: str = "") -> None:
        self.paths = list(paths)
        self.text_column = text_column
        self.name = name or ", ".join(map(str, self.paths))
        stats = [p.stat() for p in self.paths]
        self.sizes = [s.st_size for s in stats]
        self.stamp = [
            [str(p.resolve()), s.st_size, s.st_mtime_ns] + ([text_column] if _is_records(p) else [])
            for p, s in zip(self.paths, stats)
        ]
        self.total = sum(self.sizes)
        self.position = 0

    def documents(self) -> Iterator[Document]:
        done = 0
        for path, size in zip(self.paths, self.sizes):
            decompress = DECOMPRESSORS.get(path.suffix.lower())
            with path.open("rb") as raw, io.TextIOWrapper(decompress(raw) if decompress else raw, "utf-8") as lines:
                sentences = (
                    _record_sentences(lines, path, self.text_column) if _is_records(path) else _line_sentences(lines)
                )
                try:
                    for document in _assemble(sentences):
                        self.position = done + raw.tell()
                        yield document
                except UnicodeDecodeError as exc:
                    raise MiniMoEError(f"{path}: corpus file is not UTF-8 text ({exc})") from None
                except CORRUPT as exc:
                    raise MiniMoEError(f"{path}: cannot read the corpus file ({exc})") from None
            done += size
            self.position = done


def _is_records(path: Path) -> bool:
    """Whether a file holds JSONL records (by its suffix, under any compression suffix)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in DECOMPRESSORS:
        suffixes.pop()
    return bool(suffixes) and suffixes[-1] in RECORD_SUFFIXES


class DatasetSource:
    """Rows of a `datasets` Dataset or IterableDataset (streamed), each row's `text_column` one document."""

    unit = "doc"

    def __init__(self, dataset: Any, text_column: str, name: str, stamp: list, total: int | None) -> None:
        columns = dataset.column_names
        if columns is not None and text_column not in columns:
            raise MiniMoEError(f"{name}: corpus dataset has no {text_column!r} column, got columns {columns}")
        self.dataset, self.text_column, self.name = dataset, text_column, name
        self.stamp, self.total, self.position = stamp + [text_column], total, 0

    def documents(self) -> Iterator[Document]:
        rows = self.dataset.select_columns([self.text_column]).iter(batch_size=1000)
        for batch in rows:
            for text in batch[self.text_column]:
                self.position += 1
                yield from _assemble([*text_sentences(text), None] if text else [])


Source = FileSource | DatasetSource


def _hub_source(spec: str, text_column: str) -> DatasetSource:
    """`hf:NAME[:CONFIG]`: the train split of a hub (or local-script) dataset, streamed, stamped by its revision."""
    import datasets

    name, _, config = spec[3:].partition(":")
    try:
        builder = datasets.load_dataset_builder(name, config or None)
        stream = builder.as_streaming_dataset(split="train")
    except (OSError, ValueError) as exc:
        raise MiniMoEError(f"{spec}: cannot open the dataset's train split ({exc})") from None
    splits = builder.info.splits or {}
    total = splits["train"].num_examples if "train" in splits else None
    return DatasetSource(stream, text_column, spec, ["hf", name, builder.config_id, builder.hash], total or None)


def _saved_dataset_source(path: Path, text_column: str) -> DatasetSource:
    """A directory written by `save_to_disk`: its train split (of a DatasetDict) or the Dataset itself."""
    import datasets

    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        if "train" not in data:
            raise MiniMoEError(f"{path}: the saved dataset has no train split (splits: {', '.join(data)})")
        data = data["train"]
    return DatasetSource(data, text_column, str(path), ["disk", data._fingerprint], len(data))


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _files(spec: str | Path) -> list[Path]:
    """The files a path, directory (all files below it, sorted, hidden ones skipped) or glob names."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(
            p for p in path.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(path).parts)
        )
    if glob.has_magic(str(spec)):
        return sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
    raise MiniMoEError(f"{spec}: corpus file not found (nor a directory, a glob, a saved dataset or hf:NAME)")


def open_source(spec: Any, text_column: str = "text") -> Source:
    """A source from a path, directory, glob, list of them, saved-dataset directory, `hf:NAME[:CONFIG]` or Dataset."""
    if isinstance(spec, str) and spec.startswith("hf:"):
        return _hub_source(spec, text_column)
    if hasattr(spec, "column_names"):  # a datasets.Dataset built in Python
        return DatasetSource(spec, text_column, "dataset", ["dataset", spec._fingerprint], len(spec))
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if len(specs) == 1 and Path(specs[0]).is_dir() and _is_saved_dataset(Path(specs[0])):
        return _saved_dataset_source(Path(specs[0]), text_column)
    paths = [p for s in specs for p in _files(s)]
    if not paths:
        raise MiniMoEError(f"{', '.join(map(str, specs)) or '(no path)'}: corpus source holds no files")
    return FileSource(paths, text_column, ", ".join(map(str, specs)))


def read_documents(path: str | Path) -> list[Document]:
    """All documents of a (possibly compressed) text file of blank-line-separated documents, one sentence a line."""
    documents = list(open_source(path).documents())
    if not documents:
        raise MiniMoEError(f"{path}: corpus file holds no text")
    return documents
