"""The encoder: equals BERT with one expert, Auto round-trips, Q/K/V access, aux loss, clear load errors."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, BertConfig, BertModel

from minimoe import MiniMoEConfig, MiniMoEError, MiniMoEForSequenceClassification, MiniMoEModel


def bert_to_minimoe(bert_state: dict) -> dict:
    """Rename a BertModel state dict into ours (a dense FFN is one expert)."""
    out = {}
    for key, value in bert_state.items():
        key = (
            key.replace("attention.self.", "attention.")
            .replace("attention.output.", "attention.")
            .replace("intermediate.dense.weight", "ffn.w_in")
            .replace("intermediate.dense.bias", "ffn.b_in")
            .replace("output.dense.weight", "ffn.w_out")
            .replace("output.dense.bias", "ffn.b_out")
            .replace("output.LayerNorm", "ffn.LayerNorm")
        )
        out[key] = value.unsqueeze(0) if ".ffn.w_" in key or ".ffn.b_" in key else value
    return out


def test_single_expert_equals_transformers_bert(tiny_config, batch):
    config = tiny_config(num_experts=1)
    bert = BertModel(
        BertConfig(
            vocab_size=97,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=64,
        )
    ).eval()
    ours = MiniMoEModel(config).eval()
    state = {k: v for k, v in bert_to_minimoe(bert.state_dict()).items() if "position_ids" not in k}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not missing and not unexpected
    ids, mask = batch
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    ref = bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
    got = ours(ids, mask, types)
    valid = mask.bool()
    torch.testing.assert_close(got.last_hidden_state[valid], ref.last_hidden_state[valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooler_output, ref.pooler_output, atol=1e-5, rtol=1e-5)
    assert got.aux_loss is None and got.router_logits is None


def test_auto_classes_round_trip(tmp_path, tiny_config, batch):
    ids, mask = batch
    model = MiniMoEForSequenceClassification(tiny_config(num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert isinstance(AutoConfig.from_pretrained(tmp_path), MiniMoEConfig)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is MiniMoEForSequenceClassification
    torch.testing.assert_close(loaded(ids, mask).logits, model(ids, mask).logits)
    base = AutoModel.from_pretrained(tmp_path).eval()  # the encoder out of a task checkpoint
    torch.testing.assert_close(base(ids, mask).last_hidden_state, model.minimoe(ids, mask).last_hidden_state)


def test_qkv_are_the_layer_projections(tiny_config, batch):
    ids, mask = batch
    model = MiniMoEModel(tiny_config()).eval()
    out = model(ids, mask, output_qkv=True, output_hidden_states=True, output_attentions=True)
    assert len(out.qkv) == 2 and len(out.hidden_states) == 3 and len(out.attentions) == 2
    attn = model.encoder.layer[1].attention
    q, k, v = out.qkv[1]
    h_in = out.hidden_states[1]
    torch.testing.assert_close(q, attn.query(h_in))
    torch.testing.assert_close(v, attn.value(h_in))
    assert out.attentions[0].shape == (3, 4, 11, 11)
    # Eager (output_attentions) and SDPA paths agree.
    torch.testing.assert_close(model(ids, mask).last_hidden_state, out.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_model_aux_loss_ignores_padding(tiny_config, batch):
    ids, mask = batch
    model = MiniMoEModel(tiny_config()).eval()
    base = model(ids, mask, output_aux_loss=True).aux_loss
    other = ids.clone()
    other[mask == 0] = 5  # different padding content, same real tokens
    torch.testing.assert_close(model(other, mask, output_aux_loss=True).aux_loss, base)
    assert 0.9 < base < 4.0


def test_aux_loss_only_in_training_or_on_request(tiny_config, batch):
    ids, mask = batch
    model = MiniMoEModel(tiny_config(router_noise=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    inference = model.eval()(ids, mask)
    assert inference.aux_loss is None and len(inference.router_logits) == model.config.num_hidden_layers
    requested = model(ids, mask, output_aux_loss=True).aux_loss
    torch.testing.assert_close(model.train()(ids, mask).aux_loss, requested)
    assert model(ids, mask, output_aux_loss=False).aux_loss is None


def test_classification_loss_adds_weighted_aux(tiny_config, batch):
    ids, mask = batch
    model = MiniMoEForSequenceClassification(tiny_config(num_labels=2, router_aux_loss_coef=0.5)).eval()
    labels = torch.tensor([0, 1, 1])
    out = model(ids, mask, labels=labels)
    ce = torch.nn.functional.cross_entropy(out.logits, labels)
    torch.testing.assert_close(out.loss, ce + 0.5 * out.aux_loss)
    reg = MiniMoEForSequenceClassification(tiny_config(num_labels=1, num_experts=1)).eval()
    target = torch.tensor([0.5, 1.0, 2.0])
    r = reg(ids, mask, labels=target)
    torch.testing.assert_close(r.loss, torch.nn.functional.mse_loss(r.logits.squeeze(-1), target))


def test_gradients_reach_the_router_through_the_gate_and_each_used_expert_only(tiny_config, batch):
    ids, mask = batch
    model = MiniMoEModel(tiny_config()).train()
    out = model(ids, mask)
    valid = mask.bool()
    # a loss on every real token and no balance loss: the router's gradient can only come through the gate
    (out.last_hidden_state[valid] @ torch.randn(32)).sum().backward()
    for layer, logits in zip(model.encoder.layer, out.router_logits):
        ffn = layer.ffn
        used = set(logits.argmax(-1)[valid].tolist())  # padding tokens are routed too, but reach no loss
        assert ffn.router.weight.grad.abs().sum() > 0 and len(used) > 1
        for e in range(ffn.num_experts):
            own = [ffn.w_in.grad[e], ffn.b_in.grad[e], ffn.w_out.grad[e], ffn.b_out.grad[e]]
            assert all((g.abs().sum() > 0) == (e in used) for g in own), (e, used)


def test_router_keeps_pytorch_default_init(tiny_config):
    model = MiniMoEModel(tiny_config(hidden_size=64, num_attention_heads=4, intermediate_size=64))
    router = model.encoder.layer[0].ffn.router.weight
    bound = 1 / 64**0.5
    assert router.abs().max() <= bound and router.std() > 0.05  # uniform(-1/8, 1/8), not N(0, 0.02)
    assert abs(model.encoder.layer[0].ffn.w_in.std().item() - 0.02) < 0.003


def test_bad_config_values_are_named():
    with pytest.raises(MiniMoEError, match="num_attention_heads"):
        MiniMoEConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(MiniMoEError, match="num_experts"):
        MiniMoEConfig(num_experts=0)


@pytest.fixture
def saved(tmp_path, tiny_config):
    MiniMoEModel(tiny_config()).save_pretrained(tmp_path)
    return tmp_path


def edit_config(directory, **fields):
    cfg = json.loads((directory / "config.json").read_text())
    cfg.update(fields)
    (directory / "config.json").write_text(json.dumps(cfg))


def test_config_that_disagrees_with_weights_names_field_and_file(saved):
    edit_config(saved, num_experts=2)
    with pytest.raises(MiniMoEError, match=r"num_experts = 2.*model\.safetensors"):
        AutoModel.from_pretrained(saved)


def test_missing_and_corrupt_files_are_named(saved):
    (saved / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(MiniMoEError, match="model.safetensors"):
        MiniMoEModel.from_pretrained(saved)
    (saved / "model.safetensors").unlink()
    with pytest.raises(MiniMoEError, match="no model.safetensors"):
        MiniMoEModel.from_pretrained(saved)
    (saved / "config.json").write_text("{not json")
    with pytest.raises(MiniMoEError, match="config.json"):
        MiniMoEModel.from_pretrained(saved)
    (saved / "config.json").unlink()
    with pytest.raises(MiniMoEError, match="no config.json"):
        MiniMoEModel.from_pretrained(saved)


def test_missing_weight_and_foreign_model_type(saved, tiny_config):
    model = MiniMoEModel(tiny_config())
    state = {k: v for k, v in model.state_dict().items() if "layer.1.ffn.router" not in k}
    save_file(state, saved / "model.safetensors")
    with pytest.raises(MiniMoEError, match="lacks weight encoder.layer.1.ffn.router"):
        MiniMoEModel.from_pretrained(saved)
    edit_config(saved, model_type="bert")
    with pytest.raises(MiniMoEError, match="model_type"):
        MiniMoEModel.from_pretrained(saved)
    edit_config(saved, model_type="minimoe", hidden_size=30)
    with pytest.raises(MiniMoEError, match="config.json.*hidden_size"):
        MiniMoEModel.from_pretrained(saved)
    with pytest.raises(MiniMoEError, match="not a model directory"):
        MiniMoEModel.from_pretrained(saved / "nope")
