"""Importing the authors' released checkpoints: layout, forward equivalence with their computation, errors."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoModel

import minimoe  # noqa: F401  (registers the Auto classes)
from minimoe import MiniMoEError, MiniMoEModel
from minimoe.released import config_from_released, convert_released, state_dict_from_released

H, LAYERS, HEADS, E, WIDTH, VOCAB, MAX_POS = 32, 2, 4, 4, 64, 50, 40


def released_config(moe="1,4", experts=E, **overrides):
    """Their config.json, shrunk: same fields and meaning (intermediate_size = E x per-expert width)."""
    cfg = {
        "architectures": ["MoEBertMiniLM"],
        "model_type": "bert",
        "moe": moe,
        "hidden_size": H,
        "intermediate_size": experts * WIDTH,
        "num_attention_heads": HEADS,
        "attention_head_size": H // HEADS,
        "num_relation_heads": 8,
        "num_hidden_layers": LAYERS,
        "vocab_size": VOCAB,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": MAX_POS,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "initializer_range": 0.02,
    }
    cfg.update(overrides)
    return cfg


def released_state_dict(experts=E, seed=0):
    """Random tensors under THEIR names and shapes (stacked experts; unstacked when they never moefied, E = 1)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.2):
        return torch.randn(*shape, generator=g) * std

    def ln(prefix):
        return {f"{prefix}.weight": 1 + r(H, std=0.1), f"{prefix}.bias": r(H, std=0.1)}

    stack = (experts,) if experts > 1 else ()
    sd = {
        "bert.embeddings.word_embeddings.weight": r(VOCAB, H, std=1.0),
        "bert.embeddings.position_embeddings.weight": r(MAX_POS, H, std=1.0),
        "bert.embeddings.token_type_embeddings.weight": r(2, H, std=1.0),
        "bert.embeddings.position_ids": torch.arange(MAX_POS).expand(1, -1),
        **ln("bert.embeddings.LayerNorm"),
        "bert.pooler.dense.weight": r(H, H),
        "bert.pooler.dense.bias": r(H),
    }
    for name in ("query", "key", "value"):  # the distillation-only relation head
        sd[f"self.{name}.weight"], sd[f"self.{name}.bias"] = r(H, H), r(H)
    for i in range(LAYERS):
        p = f"bert.encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            sd[p + name + ".weight"], sd[p + name + ".bias"] = r(H, H), r(H)
        sd |= ln(p + "attention.output.LayerNorm") | ln(p + "output.LayerNorm")
        sd[p + "attn_gate.weight"], sd[p + "attn_gate.bias"] = r(1, H), r(1)
        sd[p + "ffn_gate.weight"], sd[p + "ffn_gate.bias"] = r(experts, H, std=1.0), r(experts)
        sd[p + "intermediate.dense.weight"] = r(*stack, WIDTH, H)
        sd[p + "intermediate.dense.bias"] = r(*stack, WIDTH)
        sd[p + "output.dense.weight"] = r(*stack, H, WIDTH)
        sd[p + "output.dense.bias"] = r(*stack, H)
    return sd


def write_released(directory, cfg=None, sd=None, safetensors=False):
    directory.mkdir(parents=True, exist_ok=True)
    cfg = released_config() if cfg is None else cfg
    sd = released_state_dict() if sd is None else sd
    (directory / "config.json").write_text(json.dumps(cfg))
    if safetensors:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(directory / "model.safetensors"))
    else:
        torch.save(sd, directory / "pytorch_model.bin")
    return directory


def reference_forward(sd, cfg, ids, mask, token_types):
    """THEIR eval-mode forward, written from their state dict: returns last hidden state and per-layer choices."""
    B, T = ids.shape
    heads, eps = cfg["num_attention_heads"], cfg["layer_norm_eps"]
    hd = cfg["hidden_size"] // heads

    def lin(x, name):
        return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])

    def ln(x, name):
        return F.layer_norm(x, (x.shape[-1],), sd[name + ".weight"], sd[name + ".bias"], eps)

    def split(x):  # [B, T, H] -> [B, nh, T, hd]
        return x.view(B, T, heads, hd).permute(0, 2, 1, 3)

    emb = "bert.embeddings."
    h = sd[emb + "word_embeddings.weight"][ids] + sd[emb + "token_type_embeddings.weight"][token_types]
    h = ln(h + sd[emb + "position_embeddings.weight"][:T], emb + "LayerNorm")
    additive = (1.0 - mask[:, None, None, :].float()) * -10000.0  # their extended attention mask
    choices = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}."
        q, k, v = (split(lin(h, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        probs = (q @ k.transpose(-1, -2) / math.sqrt(hd) + additive).softmax(-1)
        context = (probs @ v).permute(0, 2, 1, 3).reshape(B, T, -1)
        a = ln(lin(context, p + "attention.output.dense") + h, p + "attention.output.LayerNorm")
        w1, b1 = sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"]
        w2, b2 = sd[p + "output.dense.weight"], sd[p + "output.dense.bias"]
        if w1.dim() == 2:  # "1,1": dense FFN, no gate
            h = ln(F.linear(F.gelu(F.linear(a, w1, b1)), w2, b2) + a, p + "output.LayerNorm")
            continue
        gates = lin(a, p + "ffn_gate").softmax(-1)  # [B, T, E]
        chosen = gates.argmax(-1)  # [B, T]
        y = torch.empty_like(a)
        for b in range(B):
            for t in range(T):
                e = chosen[b, t]
                y[b, t] = gates[b, t, e] * F.linear(F.gelu(F.linear(a[b, t], w1[e], b1[e])), w2[e], b2[e])
        h = ln(y + a, p + "output.LayerNorm")
        choices.append(chosen)
    return h, choices


def padded_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return ids.masked_fill(mask == 0, 0), mask, torch.randint(0, 2, ids.shape, generator=g)


def test_converted_directory_loads_with_auto_model(tmp_path):
    src = write_released(tmp_path / "src")
    (src / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    dst = convert_released(src, tmp_path / "dst")
    files = sorted(p.name for p in dst.iterdir())
    assert "model.safetensors" in files and "vocab.txt" in files
    assert not any(name.endswith(".bin") for name in files)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind
    model = AutoModel.from_pretrained(dst)
    assert type(model) is MiniMoEModel
    c = model.config
    assert (c.model_type, c.num_experts, c.intermediate_size, c.hidden_size) == ("minimoe", E, WIDTH, H)
    assert (c.num_hidden_layers, c.num_attention_heads, c.vocab_size) == (LAYERS, HEADS, VOCAB)
    assert c.router_noise == 0.1 and c.router_aux_loss_coef == 0.01


@pytest.mark.parametrize("safetensors", [False, True])
def test_forward_and_routing_match_their_computation(tmp_path, safetensors):
    cfg, sd = released_config(), released_state_dict()
    dst = convert_released(write_released(tmp_path / "src", cfg, sd, safetensors), tmp_path / "dst")
    model = AutoModel.from_pretrained(dst).eval()
    ids, mask, token_types = padded_batch()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, token_type_ids=token_types)
        want, want_choices = reference_forward(sd, cfg, ids, mask, token_types)
    torch.testing.assert_close(out.last_hidden_state, want, atol=1e-5, rtol=1e-5)
    assert len(out.router_logits) == LAYERS
    for logits, chosen in zip(out.router_logits, want_choices):
        assert torch.equal(logits.argmax(-1), chosen)
    assert len(torch.cat(want_choices).unique()) > 1  # the check exercises more than one expert


def test_single_expert_checkpoint_converts_to_dense(tmp_path):
    cfg, sd = released_config(moe="1,1", experts=1), released_state_dict(experts=1)
    assert sd["bert.encoder.layer.0.intermediate.dense.weight"].shape == (WIDTH, H)  # unstacked, as they save it
    dst = convert_released(write_released(tmp_path / "src", cfg, sd), tmp_path / "dst")
    model = AutoModel.from_pretrained(dst).eval()
    assert model.config.num_experts == 1 and model.config.intermediate_size == WIDTH
    ids, mask, token_types = padded_batch()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, token_type_ids=token_types)
    torch.testing.assert_close(
        out.last_hidden_state, reference_forward(sd, cfg, ids, mask, token_types)[0], atol=1e-5, rtol=1e-5
    )


def test_halves_are_usable_alone():
    config = config_from_released(released_config())
    state = state_dict_from_released(released_state_dict(), config)
    assert set(state) == set(MiniMoEModel(config).state_dict())
    assert state["encoder.layer.1.ffn.w_in"].shape == (E, WIDTH, H)
    assert state["encoder.layer.1.ffn.router.weight"].shape == (E, H)


def break_config(**fields):
    def edit(cfg, sd):
        cfg.update(fields)

    return edit


def drop_key(key):
    def edit(cfg, sd):
        del sd[key]

    return edit


def set_key(key, value):
    def edit(cfg, sd):
        sd[key] = value

    return edit


@pytest.mark.parametrize(
    "edit, file, words",
    [
        (break_config(moe="2,4"), "config.json", ["moe", "attention experts"]),
        (break_config(moe="abc"), "config.json", ["moe", "'abc'"]),
        (break_config(moe="1,0"), "config.json", ["moe"]),
        (break_config(intermediate_size=250), "config.json", ["intermediate_size"]),
        (break_config(attention_head_size=4), "config.json", ["attention_head_size"]),
        (
            set_key("bert.encoder.layer.1.ffn_gate.weight", torch.zeros(3, H)),
            "pytorch_model.bin",
            ["bert.encoder.layer.1.ffn_gate.weight", "(3, 32)", "(4, 32)"],
        ),
        (
            drop_key("bert.encoder.layer.0.output.LayerNorm.bias"),
            "pytorch_model.bin",
            ["bert.encoder.layer.0.output.LayerNorm.bias", "(32,)"],
        ),
        (set_key("cls.predictions.bias", torch.zeros(VOCAB)), "pytorch_model.bin", ["cls.predictions.bias"]),
    ],
)
def test_bad_checkpoints_name_file_and_field(tmp_path, edit, file, words):
    cfg, sd = released_config(), released_state_dict()
    edit(cfg, sd)
    src = write_released(tmp_path / "src", cfg, sd)
    with pytest.raises(MiniMoEError) as err:
        convert_released(src, tmp_path / "dst")
    message = str(err.value)
    assert str(src / file) in message
    for word in words:
        assert word in message
    assert not (tmp_path / "dst").exists()


@pytest.mark.parametrize("missing", ["config.json", "pytorch_model.bin"])
def test_missing_files_are_named(tmp_path, missing):
    src = write_released(tmp_path / "src")
    (src / missing).unlink()
    with pytest.raises(MiniMoEError, match=missing.replace(".", r"\.")):
        convert_released(src, tmp_path / "dst")


def test_corrupt_weights_are_named(tmp_path):
    src = write_released(tmp_path / "src")
    (src / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(MiniMoEError, match="pytorch_model.bin"):
        convert_released(src, tmp_path / "dst")


def test_non_empty_destination_needs_overwrite(tmp_path):
    src = write_released(tmp_path / "src")
    dst = tmp_path / "dst"
    dst.mkdir()
    convert_released(src, dst)  # an empty directory is fine
    (dst / "stale.txt").write_text("old")
    with pytest.raises(MiniMoEError, match="overwrite"):
        convert_released(src, dst)
    convert_released(src, dst, overwrite=True)
    assert not (dst / "stale.txt").exists()
    assert (dst / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]
