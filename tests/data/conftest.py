"""Fixtures for the data tests: tiny tokenizers, an isolated cache, small samples of the packaged raw files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tokenizers
import transformers

WORDS = (
    "the cat sat on a mat . it was red and small dog ran far away big blue bird sang "
    "tree house sun rain alpha beta gamma delta"
).split()


@pytest.fixture(scope="session")
def bert_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> transformers.PreTrainedTokenizerBase:
    """A lower-casing WordPiece tokenizer over WORDS (note: transformers 5 takes `vocab=`, and ignores `vocab_file=`)."""
    vocab = tmp_path_factory.mktemp("bert") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8")
    return transformers.BertTokenizer(vocab=str(vocab))


@pytest.fixture(scope="session")
def roberta_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> transformers.PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer in RoBERTa's layout (<s> A </s></s> B </s>), trained on WORDS."""
    directory = tmp_path_factory.mktemp("roberta")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 3, vocab_size=300, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(directory))
    return transformers.RobertaTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"))


@pytest.fixture
def minimoe_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point MINIMOE_HOME at an empty temporary cache."""
    home = tmp_path / "minimoe-home"
    monkeypatch.setenv("MINIMOE_HOME", str(home))
    return home


def _snli_record(sentence1: str, sentence2: str, gold: str) -> str:
    """A line of snli_1.0_*.jsonl, with the real field set."""
    return json.dumps({
        "annotator_labels": [gold], "captionID": "2677109430.jpg#1", "gold_label": gold,
        "pairID": "2677109430.jpg#1r1n", "sentence1": sentence1, "sentence1_binary_parse": "( ( x ) )",
        "sentence1_parse": "(ROOT (S))", "sentence2": sentence2, "sentence2_binary_parse": "( y )",
        "sentence2_parse": "(ROOT (NP))",
    })


SNLI_LINES = [
    _snli_record("This church choir sings to the masses.", "The church has cracks in the ceiling.", "neutral"),
    _snli_record("A man says \"hi\".", "Nobody\tspeaks.", "contradiction"),
    _snli_record("Two women are embracing.", "Two people hug.", "-"),
    _snli_record("A dog runs.", "An animal moves.", "entailment"),
]

# movieReviewSnippets_GroundTruth.txt: UTF-8, CRLF line ends, no newline after the last line
MOVIE_SNIPPETS = (
    "1\t2.26666666667\tThe Rock is destined to be the 21st Century's new ''Conan''.\r\n"
    "3\t-0.6\tEffective but too tepid biopic\r\n"
    "93\t0.705882352941\tIn Imax 3 D, the clichés disappear.\r\n"
    "4017\t0.0\tA movie about nothing.\r\n"
    "10605\t-1.8125\tHer fans walked out muttering words like ''horrible''."
)


def _page(title: str, ns: int, text: str, redirect: bool = False) -> str:
    return (f"  <page>\n    <title>{title}</title>\n    <ns>{ns}</ns>\n    <id>1</id>\n"
            + (f'    <redirect title="{title}s" />\n' if redirect else "")
            + f'    <revision>\n      <id>2</id>\n      <text xml:space="preserve">{text}</text>\n    </revision>\n  </page>\n')


ENWIKI_XML = (
    '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
    "  <siteinfo>\n    <sitename>Wikipedia</sitename>\n  </siteinfo>\n"
    + _page("AccessibleComputing", 0, "#REDIRECT [[Computer accessibility]]", redirect=True)
    + _page("Anarchism", 0, "{{Redirect2|Anarchist}}\n'''Anarchism''' is a [[political philosophy]]."
           "&lt;ref&gt;Source.&lt;/ref&gt; It is old.\n== See also ==\n* [[Other]]")
    + _page("Talk:Anarchism", 1, "Talk page text. Not an article.")
    + "</mediawiki>\n"
)


@pytest.fixture(scope="session")
def snli_lines() -> list[str]:
    """Lines of snli_1.0_*.jsonl: neutral, contradiction (with a quote and a tab), unlabelled "-", entailment."""
    return SNLI_LINES


@pytest.fixture(scope="session")
def movie_snippets() -> str:
    """movieReviewSnippets_GroundTruth.txt content."""
    return MOVIE_SNIPPETS


@pytest.fixture(scope="session")
def enwiki_xml() -> str:
    """A MediaWiki export with a redirect, one article and a talk page."""
    return ENWIKI_XML
