"""Parsers of the raw packaged files, run on small files in the real layouts."""

from __future__ import annotations

import bz2
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minimoe.assets import parse
from minimoe.data import load_task
from minimoe.data.sources import read_documents
from minimoe.errors import MiniMoEError


def test_parse_snli_drops_unlabelled_pairs_and_tabs(tmp_path: Path, snli_lines: list[str]):
    rows = list(parse.parse_snli(snli_lines, "snli.jsonl"))
    assert rows == [
        ("This church choir sings to the masses.", "The church has cracks in the ceiling.", "neutral"),
        ('A man says "hi".', "Nobody speaks.", "contradiction"),
        ("A dog runs.", "An animal moves.", "entailment"),
    ]
    parse.write_tsv(tmp_path / "dev.tsv", ("sentence1", "sentence2", "label"), rows)
    assert (tmp_path / "dev.tsv").read_text(encoding="utf-8").splitlines()[:3] == [
        "sentence1\tsentence2\tlabel",
        "This church choir sings to the masses.\tThe church has cracks in the ceiling.\tneutral",
        'A man says "hi".\tNobody speaks.\tcontradiction',
    ]
    examples = load_task("snli", tmp_path, "dev")
    assert [e.label for e in examples] == [1, 2, 0]  # entailment, neutral, contradiction


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "snli.jsonl:2: not an SNLI JSON record"),
        ('{"sentence1": "a", "sentence2": "b", "gold_label": "maybe"}', "snli.jsonl:2: unknown gold_label 'maybe'"),
    ],
)
def test_parse_snli_names_line_of_bad_record(line: str, message: str, snli_lines: list[str]):
    with pytest.raises(MiniMoEError, match=message):
        list(parse.parse_snli([snli_lines[0], line], "snli.jsonl"))


def test_parse_movie_snippets_binarises_by_sign(tmp_path: Path, movie_snippets: str):
    path = tmp_path / "movieReviewSnippets_GroundTruth.txt"
    path.write_bytes(movie_snippets.encode("utf-8"))
    with path.open(encoding="utf-8") as f:
        rows = list(parse.parse_movie_snippets(f, str(path)))
    assert rows == [
        ("The Rock is destined to be the 21st Century's new ''Conan''.", 1),
        ("Effective but too tepid biopic", 0),
        ("In Imax 3 D, the clichés disappear.", 1),
        ("Her fans walked out muttering words like ''horrible''.", 0),
    ]


def test_parse_movie_snippets_rejects_bad_rating():
    with pytest.raises(MiniMoEError, match=r"movie.txt:1: expected 'id<TAB>rating<TAB>text'"):
        list(parse.parse_movie_snippets(["7\tgood\tA film.\n"], "movie.txt"))


def test_dev_split_is_pinned_the_same_in_every_process_and_about_ten_percent():
    texts = [f"review number {i}" for i in range(2000)]
    dev = [i for i, t in enumerate(texts) if parse.is_dev(t)]
    assert dev[:8] == [7, 11, 12, 33, 46, 52, 63, 72]  # a changed split would silently mix train and dev
    assert 150 < len(dev) < 250
    script = "from minimoe.assets import parse; print([i for i in range(2000) if parse.is_dev(f'review number {i}')])"
    for seed in ("1", "2"):  # str hashes differ per process unless the split uses a real digest
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        assert out.stdout.strip() == str(dev)


def test_wiki_summaries_to_documents(tmp_path: Path):
    summaries = {
        "Beowulf": {
            "title": "Beowulf",
            "description": "Old English epic poem",
            "topic": "literature",
            "extract": "Beowulf is an Old English poem. It is one of the most important works. \n"
            "The story is set in pagan Scandinavia.",
        },
        "Carnatic music": {
            "title": "Carnatic music",
            "description": "",
            "topic": "music",
            "extract": "Carnatic music is a system of music.",
        },
    }
    path = tmp_path / "summaries_en-us.json"
    path.write_text(json.dumps(summaries), encoding="utf-8")
    with path.open("rb") as f:
        documents = list(parse.parse_wiki_summaries(f, str(path)))
    assert documents == [
        [
            "Beowulf is an Old English poem.",
            "It is one of the most important works.",
            "The story is set in pagan Scandinavia.",
        ],
        ["Carnatic music is a system of music."],
    ]
    out = tmp_path / "wiki.txt"
    assert parse.write_documents(out, documents) == 2
    assert read_documents(out) == documents


def test_wiki_summaries_rejects_other_json(tmp_path: Path):
    path = tmp_path / "summaries.json"
    path.write_text('["just", "a", "list"]', encoding="utf-8")
    with path.open("rb") as f, pytest.raises(MiniMoEError, match="summaries.json: expected a JSON object"):
        list(parse.parse_wiki_summaries(f, str(path)))


def test_wiki_xml_keeps_articles_only(tmp_path: Path, enwiki_xml: str):
    path = tmp_path / "enwiki.xml.bz2"
    path.write_bytes(bz2.compress(enwiki_xml.encode("utf-8")))
    with path.open("rb") as f:
        assert list(parse.parse_wiki_xml(f, str(path))) == [["Anarchism is a political philosophy.", "It is old."]]


def test_wiki_xml_rejects_non_bz2(tmp_path: Path, enwiki_xml: str):
    path = tmp_path / "enwiki.xml.bz2"
    path.write_bytes(enwiki_xml.encode("utf-8"))
    with path.open("rb") as f, pytest.raises(MiniMoEError, match="enwiki.xml.bz2: not a bz2 MediaWiki XML dump"):
        list(parse.parse_wiki_xml(f, str(path)))


def test_write_documents_refuses_empty_output(tmp_path: Path):
    with pytest.raises(MiniMoEError, match="no documents"):
        parse.write_documents(tmp_path / "empty.txt", [[], []])
