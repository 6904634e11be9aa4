"""The segment-pair corpus: pair layout per tokenizer family, the on-disk cache (its key, fast path, resume and
independence of the worker count), and the padding collator."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from minimoe.data import PairCorpus, build_corpus, load_corpus, pad_collator
from minimoe.data import corpus as corpus_module
from minimoe.data.corpus import plan_pairs
from minimoe.data.sources import FileSource
from minimoe.errors import MiniMoEError

MARKERS = ("alpha", "beta", "gamma", "delta")  # one per document, to see that a pair never mixes documents
BODIES = ("the cat sat on a mat", "it was red and small", "dog ran far away", "big blue bird sang", "tree house")


def write_corpus(path: Path) -> Path:
    """Four 7-sentence documents, a one-sentence document, and one whose only sentence is too long for a pair."""
    documents = [
        "\n".join(f"{marker} {BODIES[(i + j) % len(BODIES)]} ." for j in range(7)) for i, marker in enumerate(MARKERS)
    ]
    documents += ["sun rain .", " ".join(["rain"] * 40) + " ."]
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return path


def many_documents(path: Path, count: int) -> Path:
    """`count` documents of 2-4 sentences over the test vocabulary, deterministic."""
    documents = [
        "\n".join(f"{MARKERS[(i + j) % 4]} {BODIES[(i * j) % len(BODIES)]} ." for j in range(2 + i % 3))
        for i in range(count)
    ]
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return path


def entry_files(directory: Path) -> dict[str, bytes]:
    """Every file of a cache entry by name, as bytes."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def leftovers(cache: Path) -> list[str]:
    """What a cache root holds besides built entries and lock files (temporary or partial directories)."""
    return [p.name for p in cache.iterdir() if not p.name.startswith("pairs-") and not p.name.endswith(".lock")]


@pytest.fixture
def counted_encode(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count how often the corpus builds (reads and tokenises) its sources."""
    calls: list[int] = []
    real = corpus_module.build_shards

    def build(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus_module, "build_shards", build)
    return calls


def test_plan_pairs_splits_chunks_at_sentence_boundaries():
    assert plan_pairs([3, 3, 3, 3], budget=7) == [(range(0, 1), range(1, 2)), (range(2, 3), range(3, 4))]
    assert plan_pairs([2, 2, 2, 9, 1], budget=8) == [
        (range(0, 1), range(1, 3)),
        (range(3, 4), range(4, 4)),
        (range(4, 5), range(5, 5)),
    ]


def test_bert_pairs_fit_and_are_well_formed(tmp_path: Path, bert_tokenizer):
    corpus = build_corpus(
        write_corpus(tmp_path / "docs.txt"), bert_tokenizer, max_length=16, cache_root=tmp_path / "cache"
    )
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    markers = {bert_tokenizer.convert_tokens_to_ids(m) for m in MARKERS}
    segment_counts = []
    for item in corpus:
        ids, types = item["input_ids"].tolist(), item["token_type_ids"].tolist()
        assert len(ids) <= 16 and ids[0] == cls and ids[-1] == sep
        first_sep = ids.index(sep)
        assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
        assert ids.count(sep) == 1 + (first_sep < len(ids) - 1)
        assert len(markers.intersection(ids)) <= 1
        segment_counts.append(ids.count(sep))
    assert 1 in segment_counts and 2 in segment_counts
    assert max(len(item["input_ids"]) for item in corpus) == 16  # the 41-token sentence, truncated
    assert isinstance(corpus.input_ids, np.memmap) and len(corpus) == len(segment_counts)
    first_tokens = [bert_tokenizer.convert_ids_to_tokens(item["input_ids"][1].item()) for item in corpus]
    assert first_tokens == sorted(first_tokens[:-2], key=MARKERS.index) + ["sun", "rain"]  # in document order


def test_roberta_pairs_use_its_special_tokens(tmp_path: Path, roberta_tokenizer):
    path = tmp_path / "docs.txt"
    path.write_text("the cat sat .\nit was red .\n", encoding="utf-8")
    (item,) = build_corpus(path, roberta_tokenizer, max_length=32, cache_root=tmp_path / "cache")
    tokens = roberta_tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
    assert tokens[0] == "<s>" and tokens[-1] == "</s>"
    assert [i for i, t in enumerate(tokens) if t == "</s>"] == [
        tokens.index("</s>"),
        tokens.index("</s>") + 1,
        len(tokens) - 1,
    ]
    assert set(item["token_type_ids"].tolist()) == {0}


def test_cache_is_reused_and_invalidated_by_source_tokenizer_and_length(
    tmp_path: Path, bert_tokenizer, roberta_tokenizer, counted_encode: list[int]
):
    source, cache = write_corpus(tmp_path / "docs.txt"), tmp_path / "cache"
    first = build_corpus(source, bert_tokenizer, max_length=16, cache_root=cache)
    again = build_corpus(str(source), bert_tokenizer, max_length=16, cache_root=cache)
    assert len(counted_encode) == 1 and again.directory == first.directory and len(again) == len(first)
    source.write_text(source.read_text(encoding="utf-8") + "\nsun .\n", encoding="utf-8")
    changed = build_corpus(source, bert_tokenizer, max_length=16, cache_root=cache)
    longer = build_corpus(source, bert_tokenizer, max_length=32, cache_root=cache)
    other_tokenizer = build_corpus(source, roberta_tokenizer, max_length=16, cache_root=cache)
    assert len(counted_encode) == 4
    assert len({first.directory, changed.directory, longer.directory, other_tokenizer.directory}) == 4
    assert len(changed) == len(first) + 1 and not leftovers(cache)  # no temporary or partial directories


def test_a_built_corpus_costs_only_a_manifest_check(tmp_path: Path, bert_tokenizer, monkeypatch: pytest.MonkeyPatch):
    source = write_corpus(tmp_path / "docs.txt")
    built = build_corpus(source, bert_tokenizer, max_length=16, cache_root=tmp_path / "c")
    manifest = json.loads((built.directory / "manifest.json").read_text())
    assert manifest["documents"] == 6 and manifest["sequences"] == len(built) == len(built.offsets) - 1
    assert manifest["tokens"] == len(built.input_ids) and manifest["source_name"] == str(source)

    def untouchable(*args, **kwargs):
        raise AssertionError("the source was read again")

    monkeypatch.setattr(FileSource, "documents", untouchable)
    monkeypatch.setattr(corpus_module, "build_shards", untouchable)
    again = build_corpus(source, bert_tokenizer, max_length=16, cache_root=tmp_path / "c")
    assert again.directory == built.directory and len(again) == len(built)


def test_output_does_not_depend_on_workers_or_shard_size(tmp_path: Path, bert_tokenizer):
    source = many_documents(tmp_path / "docs.txt", 60)
    entries = [
        build_corpus(
            source, bert_tokenizer, max_length=16, cache_root=tmp_path / name, workers=w, shard_chars=n
        ).directory
        for name, w, n in (("whole", 1, 1 << 22), ("one", 1, 100), ("two", 2, 100), ("two-coarse", 2, 700))
    ]
    reference = entry_files(entries[0])
    assert set(reference) == {"input_ids.npy", "token_type_ids.npy", "offsets.npy", "manifest.json"}
    assert all(entry_files(e) == reference for e in entries[1:])
    assert json.loads(reference["manifest.json"])["documents"] == 60


BUILD_SCRIPT = """
import sys
from transformers import AutoTokenizer
from minimoe.data.corpus import build_corpus
tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
build_corpus(sys.argv[1], tokenizer, 16, cache_root=sys.argv[3], workers=1, shard_chars=60)
"""


@pytest.mark.slow
def test_a_killed_build_resumes_at_its_unfinished_shards_and_ends_byte_identical(
    tmp_path: Path, bert_tokenizer, monkeypatch: pytest.MonkeyPatch
):
    source = many_documents(tmp_path / "docs.txt", 1200)
    bert_tokenizer.save_pretrained(tmp_path / "tok")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    killed = tmp_path / "killed"
    build = subprocess.Popen(
        [sys.executable, "-c", BUILD_SCRIPT, str(source), str(tmp_path / "tok"), str(killed)],
        start_new_session=True,  # its own process group: the kill takes its worker too
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(list(killed.glob(".pairs-*.partial/shard-*.npz"))) < 5 and time.monotonic() < deadline:
        assert build.poll() is None, "the build ended before it could be killed"
        time.sleep(0.005)
    os.killpg(build.pid, signal.SIGKILL)
    build.wait()
    (partial,) = killed.glob(".pairs-*.partial")
    done = sorted(p.name for p in partial.glob("shard-*.npz"))
    skipped = sum(int(n[:-4].split("-")[2]) - int(n[:-4].split("-")[1]) for n in done)
    assert 5 <= len(done) and not list(killed.glob("pairs-*"))  # killed mid-way: some shards, no entry

    encoded = tmp_path / "encoded.txt"  # documents the resumed build encodes, appended by every worker
    real = corpus_module.encode_documents

    def counting(documents, *args, **kwargs):
        with encoded.open("a") as f:
            f.write(f"{len(documents)}\n")
        return real(documents, *args, **kwargs)

    monkeypatch.setattr(corpus_module, "encode_documents", counting)
    resumed = build_corpus(source, tokenizer, 16, cache_root=killed, workers=2, shard_chars=60)
    assert sum(map(int, encoded.read_text().split())) == 1200 - skipped and not leftovers(killed)
    monkeypatch.setattr(corpus_module, "encode_documents", real)
    whole = build_corpus(source, tokenizer, 16, cache_root=tmp_path / "whole", workers=1, shard_chars=1 << 22)
    assert resumed.directory.name == whole.directory.name
    assert entry_files(resumed.directory) == entry_files(whole.directory)


def test_load_corpus_concatenates_its_sources_and_caps_them(tmp_path: Path, bert_tokenizer, minimoe_home: Path):
    text = write_corpus(tmp_path / "docs.txt")
    records = tmp_path / "more.jsonl.gz"
    with gzip.open(records, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"body": "The cat sat. It was red."}) + "\n" + json.dumps({"body": "A dog ran."}) + "\n")
    data = load_corpus([str(text), str(records)], bert_tokenizer, 16, text_column="body", workers=1)
    alone = build_corpus(text, bert_tokenizer, 16, text_column="body")
    assert len(data) == len(alone) + 2
    assert len(load_corpus([str(text), str(records)], bert_tokenizer, 16, 5, text_column="body")) == 5
    assert len(list((minimoe_home / "corpus-cache").glob("pairs-*"))) == 2


def test_collator_pads_pairs_and_masks_padding(tmp_path: Path, bert_tokenizer):
    corpus = build_corpus(write_corpus(tmp_path / "docs.txt"), bert_tokenizer, max_length=16, cache_root=tmp_path / "c")
    items = [corpus[i] for i in range(len(corpus))]
    batch = pad_collator(bert_tokenizer)(items)
    lengths = [len(item["input_ids"]) for item in items]
    assert batch["input_ids"].shape == batch["token_type_ids"].shape == (len(items), max(lengths))
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    assert (batch["input_ids"][batch["attention_mask"] == 0] == bert_tokenizer.pad_token_id).all()


def test_hf_dataset_source(tmp_path: Path, bert_tokenizer, counted_encode: list[int]):
    import datasets

    dataset = datasets.Dataset.from_dict({"text": ["The cat sat. It was red.\nA dog ran.", ""], "id": [1, 2]})
    corpus = build_corpus(dataset, bert_tokenizer, max_length=32, cache_root=tmp_path)
    build_corpus(dataset, bert_tokenizer, max_length=32, cache_root=tmp_path)
    (item,) = corpus
    assert bert_tokenizer.decode(item["input_ids"].tolist()) == "[CLS] the cat sat. [SEP] it was red. a dog ran. [SEP]"
    assert len(counted_encode) == 1
    with pytest.raises(MiniMoEError, match="has no 'body' column, got columns \\['text', 'id'\\]"):
        build_corpus(dataset, bert_tokenizer, text_column="body", cache_root=tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "corpus file not found"),
        ("", "holds no text"),
        ("\n  \n\n", "holds no text"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_bad_sources_are_reported(tmp_path: Path, bert_tokenizer, content: str | bytes | None, message: str):
    path = tmp_path / "corpus.txt"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(MiniMoEError, match=f"corpus.txt: .*{message}"):
        build_corpus(path, bert_tokenizer, cache_root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not leftovers(tmp_path / "cache")  # no partial build kept


def test_pair_corpus_reopens_a_cache_directory(tmp_path: Path, bert_tokenizer):
    built = build_corpus(write_corpus(tmp_path / "docs.txt"), bert_tokenizer, max_length=16, cache_root=tmp_path / "c")
    reopened = PairCorpus(built.directory)
    assert [x["input_ids"].tolist() for x in reopened] == [x["input_ids"].tolist() for x in built]


def test_pair_corpus_pickles_as_its_directory(tmp_path: Path, bert_tokenizer):
    built = build_corpus(write_corpus(tmp_path / "docs.txt"), bert_tokenizer, max_length=16, cache_root=tmp_path / "c")
    data = pickle.dumps(built)  # what a DataLoader worker started by spawn receives
    assert len(data) < 1000 and built.input_ids.nbytes > 0
    assert [x["input_ids"].tolist() for x in pickle.loads(data)] == [x["input_ids"].tolist() for x in built]
