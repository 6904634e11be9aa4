"""Expert diagnostics on hand-built students: known routing gives known loads, forcing, padding, similarity."""

import pytest
import torch

from minimoe import MiniMoEConfig, MiniMoEModel
from minimoe.diagnostics import diagnose, forced_expert, moe_layers, summary_rows
from minimoe.errors import MiniMoEError

E, H = 4, 32


def routed_by_token_id() -> MiniMoEModel:
    """A 2-layer student whose router sends token t to expert t % 4 in every layer.

    Token t embeds as a spike on hidden dim t % 4; attention and expert outputs are zero, so every layer's
    input is that spike (after LayerNorm) and router row e reads dim e.
    """
    config = MiniMoEConfig(
        vocab_size=20,
        hidden_size=H,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=8,
        num_experts=E,
        max_position_embeddings=16,
    )
    model = MiniMoEModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
        for t in range(config.vocab_size):
            model.embeddings.word_embeddings.weight[t, t % E] = 5.0
        for layer in model.encoder.layer:
            layer.ffn.router.weight.copy_(torch.eye(E, H))
    return model


def test_known_routing_gives_known_loads_and_padding_is_left_out():
    model = routed_by_token_id()
    ids = torch.tensor([[1, 2, 3, 5, 9, 6], [4, 8, 1, 0, 0, 0]])  # experts 1 2 3 1 1 2 | 0 0 1 + 3 padding
    mask = (torch.arange(6) < torch.tensor([[6], [3]])).long()
    report = diagnose(model, [{"input_ids": ids, "attention_mask": mask}], heat_tokens=4)
    assert report["tokens"] == 9 and report["sequences"] == 2
    for layer in report["layers"]:
        assert layer["load"] == pytest.approx([2 / 9, 4 / 9, 2 / 9, 1 / 9])  # padding (id 0 -> expert 0) not counted
        assert layer["top_tokens"][1][0] == ["1", 2] and sorted(layer["top_tokens"][0]) == [["4", 1], ["8", 1]]
    assert report["heatmap"]["tokens"][0] == "1"  # the most frequent token, always routed to expert 1
    assert report["heatmap"]["fractions"][0][0] == [0.0, 1.0, 0.0, 0.0]


def test_forcing_routes_every_token_to_one_expert_and_keeps_the_gate():
    torch.manual_seed(0)
    model = MiniMoEModel(
        MiniMoEConfig(
            vocab_size=30,
            hidden_size=H,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=16,
            num_experts=E,
            max_position_embeddings=16,
        )
    ).eval()
    ids = torch.randint(1, 30, (3, 10))
    free = model(ids).router_logits[0].softmax(-1)  # [B, T, E]
    with forced_expert(moe_layers(model)[0], 2):
        forced = model(ids).router_logits[0].softmax(-1)
    assert (forced.argmax(-1) == 2).all()
    assert torch.allclose(forced.max(-1).values, free.max(-1).values)


def test_identical_experts_give_zero_forced_change_and_distinct_ones_do_not():
    torch.manual_seed(0)
    config = MiniMoEConfig(
        vocab_size=30,
        hidden_size=H,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=16,
        num_experts=E,
        max_position_embeddings=16,
    )
    model = MiniMoEModel(config).eval()
    with torch.no_grad():
        for ffn in moe_layers(model):
            torch.nn.init.normal_(ffn.w_in, std=0.3)
            torch.nn.init.normal_(ffn.w_out, std=0.3)
    batch = {"input_ids": torch.randint(1, 30, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long)}
    distinct = diagnose(model, [batch], init=model)
    assert all(min(layer["forced_change"]) > 0.01 for layer in distinct["layers"])
    assert all(layer["init_distance"] == [0.0] * E for layer in distinct["layers"])
    assert all(layer["mean_cosine_w_in"] < 0.5 for layer in distinct["layers"])
    with torch.no_grad():
        for ffn in moe_layers(model):
            for p in (ffn.w_in, ffn.b_in, ffn.w_out, ffn.b_out):
                p.copy_(p[:1].expand_as(p))
    same = diagnose(model, [batch])
    assert all(max(layer["forced_change"]) < 1e-5 for layer in same["layers"])
    assert all(layer["mean_cosine_w_in"] == pytest.approx(1.0) for layer in same["layers"])
    header, rows = summary_rows(same)
    assert len(rows) == 2 and "distance from init" not in header


def test_dense_and_foreign_models_are_a_clear_error():
    dense = MiniMoEModel(
        MiniMoEConfig(
            vocab_size=30,
            hidden_size=H,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=16,
            num_experts=1,
            max_position_embeddings=16,
        )
    )
    with pytest.raises(MiniMoEError, match="dense"):
        moe_layers(dense)
