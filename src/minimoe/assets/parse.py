"""Converters from the raw files shipped in registry packages to our task TSVs and corpus text files.

Every parser takes an already-open stream plus a `source` label (e.g. ``archive.tar.gz:member``) used
in error messages, so the same code serves the fetcher (archive members) and the tests (small files).
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from minimoe.data.tasks import NLI_LABELS
from minimoe.data.text import Document, split_sentences, strip_wikitext
from minimoe.errors import MiniMoEError


def _clean(text: str) -> str:
    """Collapse all whitespace (tabs, newlines) to single spaces so a field fits on one TSV line."""
    return " ".join(text.split())


def parse_snli(lines: Iterable[str], source: str) -> Iterator[tuple[str, str, str]]:
    """Yield (sentence1, sentence2, gold_label) from SNLI JSONL, dropping pairs without a gold label ("-")."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            first, second, label = row["sentence1"], row["sentence2"], row["gold_label"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise MiniMoEError(
                f"{source}:{lineno}: not an SNLI JSON record with sentence1/sentence2/gold_label ({exc})"
            ) from exc
        if label == "-":
            continue
        if label not in NLI_LABELS:
            raise MiniMoEError(f"{source}:{lineno}: unknown gold_label {label!r}, expected one of {NLI_LABELS} or '-'")
        yield _clean(first), _clean(second), label


def parse_movie_snippets(lines: Iterable[str], source: str) -> Iterator[tuple[str, int]]:
    """Yield (text, label) from VADER's `id<TAB>mean rating<TAB>text` lines: 1 if rating > 0, 0 if < 0, rating 0 dropped."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\r\n").split("\t")
        try:
            _, rating_text, text = fields
            rating = float(rating_text)
        except ValueError as exc:
            raise MiniMoEError(
                f"{source}:{lineno}: expected 'id<TAB>rating<TAB>text' with a numeric rating, got {line[:80]!r}"
            ) from exc
        if rating != 0:
            yield _clean(text), int(rating > 0)


def is_dev(text: str, dev_percent: int = 10) -> bool:
    """Put about `dev_percent`% of texts in dev, by a hash of the text: deterministic, and duplicates share a split."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % 100 < dev_percent


def parse_wiki_summaries(stream: BinaryIO, source: str) -> Iterator[Document]:
    """Yield one sentence-split document per article of the ovos summaries JSON (``{title: {"extract": ...}}``)."""
    try:
        articles = json.load(stream)
        extracts = [article["extract"] for article in articles.values()]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise MiniMoEError(
            f"{source}: expected a JSON object mapping titles to objects with an 'extract' field ({exc})"
        ) from exc
    for extract in extracts:
        yield [sentence for paragraph in extract.splitlines() for sentence in split_sentences(_clean(paragraph))]


def parse_wiki_xml(stream: BinaryIO, source: str) -> Iterator[Document]:
    """Yield one markup-free document per article (namespace 0, not a redirect) of a bz2 MediaWiki XML dump."""
    try:
        with bz2.open(stream) as xml:
            for _, element in ET.iterparse(xml):
                if element.tag.rpartition("}")[2] != "page":
                    continue
                fields = {child.tag.rpartition("}")[2]: child for child in element.iter()}
                if fields["ns"].text == "0" and "redirect" not in fields:
                    paragraphs = strip_wikitext(fields["text"].text or "")
                    yield [sentence for paragraph in paragraphs for sentence in split_sentences(paragraph)]
                element.clear()
    except (ET.ParseError, OSError, EOFError, KeyError) as exc:
        raise MiniMoEError(f"{source}: not a bz2 MediaWiki XML dump with <page><ns>/<text> elements ({exc})") from exc


def write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """Write a GLUE-style TSV (header line, tab-separated, no quoting) and return the number of data rows."""
    count = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def write_documents(path: Path, documents: Iterable[Document]) -> int:
    """Write documents one sentence per line, blank-line separated (as `corpus.read_documents` reads); return the count."""
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for document in documents:
            if document:
                f.write(("\n" if count else "") + "\n".join(document) + "\n")
                count += 1
    if not count:
        raise MiniMoEError(f"{path}: no documents to write (the source held no usable text)")
    return count
