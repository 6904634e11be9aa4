"""The segment-pair corpus: pair layout per tokenizer family, the on-disk cache, and the padding collator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minimoe.data import PairCorpus, build_corpus, pad_collator, read_documents
from minimoe.data import corpus as corpus_module
from minimoe.data.corpus import plan_pairs
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


@pytest.fixture
def counted_encode(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count how often the corpus tokenises its sources."""
    calls: list[int] = []
    real = corpus_module._encode

    def encode(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(corpus_module, "_encode", encode)
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


def test_cache_is_reused_and_invalidated_by_source_and_length(
    tmp_path: Path, bert_tokenizer, counted_encode: list[int]
):
    source, cache = write_corpus(tmp_path / "docs.txt"), tmp_path / "cache"
    first = build_corpus(source, bert_tokenizer, max_length=16, cache_root=cache)
    again = build_corpus(str(source), bert_tokenizer, max_length=16, cache_root=cache)
    assert len(counted_encode) == 1 and again.directory == first.directory and len(again) == len(first)
    source.write_text(source.read_text(encoding="utf-8") + "\nsun .\n", encoding="utf-8")
    changed = build_corpus(source, bert_tokenizer, max_length=16, cache_root=cache)
    longer = build_corpus(source, bert_tokenizer, max_length=32, cache_root=cache)
    assert len(counted_encode) == 3 and len({first.directory, changed.directory, longer.directory}) == 3
    assert sorted(p.name.startswith("pairs-") for p in cache.iterdir()) == [True] * 3  # no temporary leftovers


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
    with pytest.raises(MiniMoEError, match="with a 'body' column, got columns \\['text', 'id'\\]"):
        build_corpus(dataset, bert_tokenizer, text_column="body", cache_root=tmp_path)


def test_file_without_blank_lines_is_one_document(tmp_path: Path):
    path = tmp_path / "one.txt"
    path.write_text("First sentence.\r\nSecond sentence.\n   \n\n", encoding="utf-8")
    assert read_documents(path) == [["First sentence.", "Second sentence."]]


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
    assert not (tmp_path / "cache").exists()


def test_pair_corpus_reopens_a_cache_directory(tmp_path: Path, bert_tokenizer):
    built = build_corpus(write_corpus(tmp_path / "docs.txt"), bert_tokenizer, max_length=16, cache_root=tmp_path / "c")
    reopened = PairCorpus(built.directory)
    assert [x["input_ids"].tolist() for x in reopened] == [x["input_ids"].tolist() for x in built]
