"""Teacher adapters: the captured Q/K/V are the real projections of the chosen layer, frozen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models
from torch import nn
from transformers import (
    AlbertConfig,
    AutoModel,
    BertConfig,
    BertForSequenceClassification,
    CamembertConfig,
    DistilBertConfig,
    ElectraConfig,
    MPNetConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    RobertaConfig,
    XLMRobertaConfig,
)

from minimoe.distill.teachers import ADAPTERS, Teacher, check_tokenizer, load_teacher
from minimoe.errors import MiniMoEError
from minimoe.modeling.config import MiniMoEConfig

VOCAB, HIDDEN, LAYERS, HEADS = 100, 32, 2, 4
FAMILIES = ["bert", "roberta", "xlm-roberta", "electra", "camembert", "mpnet", "distilbert"]


def tiny_config(family: str) -> PretrainedConfig:
    """A 2-layer, 32-wide random config of `family`."""
    if family == "distilbert":
        return DistilBertConfig(
            vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=64, max_position_embeddings=64
        )
    config_class = {
        "bert": BertConfig,
        "roberta": RobertaConfig,
        "xlm-roberta": XLMRobertaConfig,
        "electra": ElectraConfig,
        "camembert": CamembertConfig,
        "mpnet": MPNetConfig,
    }[family]
    return config_class(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=64,
        max_position_embeddings=64,
    )


@pytest.fixture
def save_tiny(tmp_path: Path):
    """Save a tiny random model of a family (or of a given config) and return its directory."""

    def save(family_or_config: str | PretrainedConfig) -> Path:
        config = tiny_config(family_or_config) if isinstance(family_or_config, str) else family_or_config
        torch.manual_seed(0)
        path = tmp_path / config.model_type
        AutoModel.from_config(config).save_pretrained(path)
        return path

    return save


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Two sequences of length 7; the second ends in two padding positions."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, VOCAB, (2, 7), generator=generator)
    attention_mask = torch.ones(2, 7, dtype=torch.long)
    attention_mask[1, 5:] = 0
    input_ids[1, 5:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def _linears(teacher: Teacher, layer: int) -> list[nn.Linear]:
    """The Q, K, V linear modules of `layer`, found independently of the adapter table."""
    block = teacher.layers[layer]
    linears = [m for m in block.modules() if isinstance(m, nn.Linear)]
    return linears[:3]  # every family declares Q, K, V first in its attention block


@pytest.mark.parametrize("family", FAMILIES)
def test_qkv_are_the_projections_of_the_layer_input(family, save_tiny, batch):
    teacher = load_teacher(save_tiny(family))
    assert (teacher.model_type, teacher.hidden_size, teacher.num_layers) == (family, HIDDEN, LAYERS)
    assert (teacher.num_heads, teacher.vocab_size) == (HEADS, VOCAB)
    assert teacher.config.model_type == family
    assert teacher.model.config._attn_implementation == "eager"
    with torch.no_grad():
        hidden = teacher.model(**batch, output_hidden_states=True).hidden_states  # input to layer i at [i]
    for layer in range(LAYERS):
        q, k, v = teacher.qkv(**batch, token_type_ids=torch.zeros_like(batch["input_ids"]), layer=layer)
        for got, linear in zip((q, k, v), _linears(teacher, layer)):
            assert got.shape == (2, 7, HIDDEN)
            assert not got.requires_grad
            torch.testing.assert_close(got, linear(hidden[layer]).detach())


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_negative_layer_counts_from_the_end(family, save_tiny, batch):
    teacher = load_teacher(save_tiny(family))
    for got, want in zip(teacher.qkv(**batch, layer=-1), teacher.qkv(**batch, layer=LAYERS - 1)):
        torch.testing.assert_close(got, want)
    assert not torch.equal(teacher.qkv(**batch, layer=0)[0], teacher.qkv(**batch, layer=-1)[0])


def test_layer_out_of_range_raises(save_tiny, batch):
    teacher = load_teacher(save_tiny("bert"))
    with pytest.raises(MiniMoEError, match="layer 2 is out of range"):
        teacher.qkv(**batch, layer=LAYERS)


def test_forward_stops_after_the_chosen_layer(save_tiny, batch):
    teacher = load_teacher(save_tiny("bert"))
    calls = []
    handle = teacher.layers[1].register_forward_pre_hook(lambda *args: calls.append(1))
    teacher.qkv(**batch, layer=0)
    assert calls == []
    teacher.qkv(**batch, layer=1)
    handle.remove()
    assert calls == [1]


def test_token_type_ids_reach_bert_and_are_dropped_for_distilbert(save_tiny, batch):
    bert = load_teacher(save_tiny("bert"))
    segments = torch.ones_like(batch["input_ids"])
    assert not torch.equal(bert.qkv(**batch, token_type_ids=segments)[0], bert.qkv(**batch)[0])
    distilbert = load_teacher(save_tiny("distilbert"))
    torch.testing.assert_close(distilbert.qkv(**batch, token_type_ids=segments)[0], distilbert.qkv(**batch)[0])


def test_teacher_is_frozen_and_stays_in_eval_mode(save_tiny):
    teacher = load_teacher(save_tiny("roberta"), dtype=torch.float32)
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())


def test_from_model_accepts_a_model_with_a_task_head(batch):
    model = BertForSequenceClassification(tiny_config("bert"))
    teacher = Teacher.from_model(model)
    assert teacher.model is model.bert and teacher.num_layers == LAYERS
    q = teacher.qkv(**batch)[0]
    with torch.no_grad():
        hidden = model.bert(**batch, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(q, model.bert.encoder.layer[-1].attention.self.query(hidden))


class _FakeStudent(nn.Module):
    """Just enough of the MiniMoE student's layout: encoder.layer[i].attention.query/key/value."""

    def __init__(self, config: MiniMoEConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList()
        for _ in range(config.num_hidden_layers):
            block = nn.Module()
            block.attention = nn.Module()
            for name in ("query", "key", "value"):
                setattr(block.attention, name, nn.Linear(config.hidden_size, config.hidden_size))
            self.encoder.layer.append(block)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.embeddings(input_ids)  # [B, T, H]
        for block in self.encoder.layer:
            attention = block.attention
            hidden = attention.query(hidden) + attention.key(hidden) + attention.value(hidden)
        return hidden


def test_minimoe_student_layout_is_supported(batch):
    config = MiniMoEConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=64,
        num_experts=2,
    )
    student = _FakeStudent(config)
    teacher = Teacher.from_model(student)
    q, k, v = teacher.qkv(**batch, layer=-1)
    with torch.no_grad():
        first = student.encoder.layer[0].attention
        embedded = student.embeddings(batch["input_ids"])
        hidden = first.query(embedded) + first.key(embedded) + first.value(embedded)
        torch.testing.assert_close(v, student.encoder.layer[1].attention.value(hidden))
    assert "minimoe" in ADAPTERS


def test_unknown_family_raises_listing_supported(save_tiny):
    albert = AlbertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=1,
        num_attention_heads=HEADS,
        intermediate_size=64,
        embedding_size=16,
    )
    with pytest.raises(MiniMoEError, match="'albert' is not supported; supported: bert, camembert, distilbert"):
        load_teacher(save_tiny(albert))
    with pytest.raises(MiniMoEError, match="not supported"):
        Teacher.from_model(AutoModel.from_config(albert))


def test_missing_or_invalid_directory_raises_naming_it(tmp_path):
    missing = tmp_path / "no-such-teacher"
    with pytest.raises(MiniMoEError, match=f"{missing} does not exist"):
        load_teacher(missing)
    with pytest.raises(MiniMoEError, match=f"{tmp_path} is not a model directory"):
        load_teacher(tmp_path)


def test_a_damaged_teacher_is_one_error_naming_the_file_and_the_field(save_tiny):
    path = save_tiny("bert")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"hidden_size": 48}))
    with pytest.raises(MiniMoEError, match=rf"^{path}/config.json field hidden_size = 48 does not fit {path}/model"):
        load_teacher(path)
    (path / "config.json").write_text(json.dumps(config | {"num_hidden_layers": 3}))  # would load a random layer
    with pytest.raises(
        MiniMoEError, match=rf"lacks weight encoder.layer.2\..* that {path}/config.json \(num_hidden_layers = 3\)"
    ):
        load_teacher(path)
    (path / "config.json").write_text(json.dumps(config))
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted copy
    with pytest.raises(MiniMoEError, match=rf"^{weights} is not a readable safetensors file"):
        load_teacher(path)


def _tokenizer(num_tokens: int, pad_id: int = 0) -> PreTrainedTokenizerFast:
    """A word-level tokenizer with `num_tokens` entries and [PAD] at `pad_id`."""
    names = [f"w{i}" for i in range(num_tokens)]
    names[pad_id], names[1 if pad_id != 1 else 0] = "[PAD]", "[CLS]"
    vocab = {name: i for i, name in enumerate(names)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[CLS]"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", cls_token="[CLS]")


def test_check_tokenizer(save_tiny):
    teacher = load_teacher(save_tiny("bert"))
    check_tokenizer(_tokenizer(VOCAB), teacher)
    with pytest.raises(MiniMoEError, match=f"has {VOCAB + 5} tokens but teacher .*embeddings hold {VOCAB}"):
        check_tokenizer(_tokenizer(VOCAB + 5), teacher)


class _HoleyTokenizer:
    """A tokenizer whose vocabulary has gaps, so its pad id lies past its length."""

    name_or_path = "holey"
    pad_token_id = VOCAB + 3
    cls_token_id = 1

    def __len__(self) -> int:
        return 10


def test_check_tokenizer_rejects_special_ids_past_the_embeddings(save_tiny):
    teacher = load_teacher(save_tiny("bert"))
    with pytest.raises(MiniMoEError, match=f"holey has pad_token_id={VOCAB + 3} but teacher"):
        check_tokenizer(_HoleyTokenizer(), teacher)
