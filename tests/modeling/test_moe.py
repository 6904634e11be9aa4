"""The MoE FFN: every dispatch strategy equals a naive masked loop, evaluation after in-place weight updates reads
the current weights, E=1 is a dense FFN, balance loss, router noise."""

import pytest
import torch

from minimoe.errors import MiniMoEError
from minimoe.modeling import MiniMoEModel, dispatch
from minimoe.modeling.moe import MoEFeedForward, load_balance_loss, use_dispatch


def naive_dispatch(ffn: MoEFeedForward, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Reference: for each expert, mask its tokens, run it, scatter back."""
    y = torch.zeros_like(x)
    for e in range(ffn.num_experts):
        m = index == e
        y[m] = ffn.expert(x[m], e)
    return y


def make_ffn(tiny_config, **kw) -> MoEFeedForward:
    torch.manual_seed(1)
    ffn = MoEFeedForward(tiny_config(**kw))
    for p in ffn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return ffn


@pytest.mark.parametrize("path", list(dispatch.DISPATCH))
@pytest.mark.parametrize("case", ["random", "one_expert_empty", "all_to_one"])
def test_dispatch_matches_naive_loop_outputs_and_grads(tiny_config, case, path):
    ffn = make_ffn(tiny_config)
    ffn.expert_dispatch = path
    x = torch.randn(50, 32, requires_grad=True)
    index = torch.randint(0, 4, (50,))
    if case == "one_expert_empty":
        index[index == 2] = 0
    elif case == "all_to_one":
        index.fill_(3)
    upstream = torch.randn(50, 32)

    fast = ffn.dispatch(x, index)
    (fast * upstream).sum().backward()
    fast_grads = [x.grad.clone()] + [p.grad.clone() for p in (ffn.w_in, ffn.b_in, ffn.w_out, ffn.b_out)]
    x.grad = None
    ffn.zero_grad()

    slow = naive_dispatch(ffn, x, index)
    (slow * upstream).sum().backward()
    slow_grads = [x.grad] + [p.grad for p in (ffn.w_in, ffn.b_in, ffn.w_out, ffn.b_out)]

    torch.testing.assert_close(fast, slow)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b)
    if case != "random":  # an expert with no tokens gets exactly zero gradient
        assert ffn.w_in.grad[2].abs().sum() == 0 if case == "one_expert_empty" else ffn.w_in.grad[0].abs().sum() == 0


def groups(*sizes: int) -> torch.Tensor:
    """An expert index with the given number of tokens per expert."""
    return torch.cat([torch.full((n,), e) for e, n in enumerate(sizes)])


def test_dispatch_pads_only_when_the_groups_are_near_equal(tiny_config, monkeypatch):
    ffn = make_ffn(tiny_config)  # 4 experts; padding allowed per expert: max(16 rows, 1 row per 128 tokens)
    called = []
    for path in ("padded", "grouped"):
        record = lambda *a, path=path: called.append(path)  # noqa: E731
        monkeypatch.setattr(dispatch, path, record)
        monkeypatch.setitem(dispatch.DISPATCH, path, record)
    cases = [
        ((100, 100, 100, 100), "padded"),  # no padding
        ((116, 100, 92, 92), "padded"),  # 64 padding rows = 16 per expert
        ((117, 100, 92, 91), "grouped"),  # 68
        ((1030, 990, 990, 990), "padded"),  # 120 rows for 4000 tokens: under 4 x 4000 / 128
        ((1060, 980, 980, 980), "grouped"),  # 240
        ((220, 60, 60, 60), "grouped"),
    ]
    for sizes, _ in cases:
        index = groups(*sizes)
        ffn.dispatch(torch.randn(index.numel(), 32), index)
    assert called == [path for _, path in cases]
    called.clear()
    for mode in ("padded", "grouped"):
        ffn.expert_dispatch = mode
        ffn.dispatch(torch.randn(400, 32), groups(220, 60, 60, 60))
    assert called == ["padded", "grouped"]


@pytest.mark.parametrize("path", list(dispatch.DISPATCH))
@pytest.mark.parametrize("bf16", [False, True])
def test_inference_matches_the_autograd_path(tiny_config, path, bf16):
    ffn = make_ffn(tiny_config, router_noise=0.0, expert_dispatch=path).eval()
    h = torch.randn(3, 7, 32)

    def forward(grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return ffn(h)[0].float()

    torch.testing.assert_close(forward(False), forward(True).detach())


UPDATES = {  # an in-place change of every parameter after an evaluation: optimizers, then a `p.data` edit
    "adamw_fused": lambda params: torch.optim.AdamW(params, lr=1e-2, fused=True),  # the trainer's optimizer
    "adamw_foreach": lambda params: torch.optim.AdamW(params, lr=1e-2, foreach=True),
    "adamw_for_loop": lambda params: torch.optim.AdamW(params, lr=1e-2, foreach=False),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1),
    "p.data": None,
}


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("experts", [1, 4])
@pytest.mark.parametrize("update", list(UPDATES))
def test_eval_after_an_in_place_update_reads_the_current_weights(tiny_config, update, experts, bf16):
    ffn = make_ffn(tiny_config, num_experts=experts, router_noise=0.0)
    h = torch.randn(3, 7, 32)

    def evaluate(model: MoEFeedForward) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model.eval()(h)[0].float()

    before = evaluate(ffn)
    if UPDATES[update] is None:
        for p in ffn.parameters():
            p.data.mul_(1.01)
    else:
        optimizer = UPDATES[update](ffn.parameters())
        ffn.train()(h)[0].pow(2).sum().backward()
        optimizer.step()
    fresh = MoEFeedForward(tiny_config(num_experts=experts, router_noise=0.0))
    fresh.load_state_dict(ffn.state_dict())
    after = evaluate(ffn)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, evaluate(fresh), rtol=0, atol=1e-6)


def test_an_unknown_dispatch_is_one_error_naming_the_registry(tiny_config):
    """Checked once, by dispatch.strategy: when a layer is built from the config, and by use_dispatch."""
    with pytest.raises(MiniMoEError, match="expert_dispatch must be one of auto, padded, grouped, dense, masked"):
        MoEFeedForward(tiny_config(expert_dispatch="fastest"))
    model = MiniMoEModel(tiny_config())
    with pytest.raises(MiniMoEError, match="exportable expert dispatch must be one of masked, dense, got 'padded'"):
        with use_dispatch(model, "padded", exportable=True):
            pass
    with use_dispatch(model, "dense", exportable=True):
        assert {m.expert_dispatch for m in model.modules() if isinstance(m, MoEFeedForward)} == {"dense"}
    assert {m.expert_dispatch for m in model.modules() if isinstance(m, MoEFeedForward)} == {"auto"}


def test_forward_scales_by_chosen_probability(tiny_config):
    ffn = make_ffn(tiny_config, router_noise=0.0).eval()
    h = torch.randn(2, 5, 32)
    out, logits = ffn(h)
    probs = logits.softmax(-1).reshape(-1, 4)
    gate, index = probs.max(-1)
    x = h.reshape(-1, 32)
    expected = ffn.LayerNorm(h + (naive_dispatch(ffn, x, index) * gate[:, None]).view(2, 5, 32))
    torch.testing.assert_close(out, expected)


def test_training_drops_the_expert_output_then_scales_by_the_gate(tiny_config):
    ffn = make_ffn(tiny_config, router_noise=0.0, hidden_dropout_prob=0.5).train()
    h = torch.randn(2, 5, 32)
    x = h.reshape(-1, 32)
    torch.manual_seed(3)
    out, logits = ffn(h)
    gate, index = logits.reshape(-1, 4).softmax(-1).max(-1)
    torch.manual_seed(3)  # the same dropout mask, drawn on the [N, H] expert output
    keep = torch.nn.functional.dropout(torch.ones(10, 32), 0.5)
    expected = ffn.LayerNorm(h + (naive_dispatch(ffn, x, index) * keep * gate[:, None]).view(2, 5, 32))
    torch.testing.assert_close(out, expected)
    assert (keep == 0).any() and not torch.allclose(out, ffn.eval()(h)[0])


def test_single_expert_is_a_standard_bert_ffn(tiny_config):
    ffn = make_ffn(tiny_config, num_experts=1).eval()
    assert ffn.router is None
    h = torch.randn(2, 5, 32)
    out, logits = ffn(h)
    assert logits is None
    inter = torch.nn.functional.gelu(h @ ffn.w_in[0].T + ffn.b_in[0])
    torch.testing.assert_close(out, ffn.LayerNorm(h + inter @ ffn.w_out[0].T + ffn.b_out[0]))


def test_router_noise_only_in_training(tiny_config):
    ffn = make_ffn(tiny_config, router_noise=0.1)
    h = torch.randn(2, 5, 32)
    clean = ffn.router(h.reshape(-1, 32))
    ffn.eval()
    torch.testing.assert_close(ffn(h)[1].reshape(-1, 4), clean)
    ffn.train()
    noisy = ffn.route(h.reshape(-1, 32))[0]
    delta = noisy - clean
    assert delta.abs().max() > 0 and delta.abs().max() <= 0.1 + 1e-6
    ffn_off = make_ffn(tiny_config, router_noise=0.0).train()
    torch.testing.assert_close(ffn_off.route(h.reshape(-1, 32))[0], ffn_off.router(h.reshape(-1, 32)))


def test_balance_loss_is_one_when_balanced_and_e_when_collapsed():
    balanced = torch.eye(4).repeat(3, 1).mul(5.0)[None]  # [1, 12, 4]: each expert gets 3 tokens
    torch.testing.assert_close(load_balance_loss(balanced, None), torch.tensor(1.0))
    collapsed = torch.tensor([[10.0, 0, 0, 0]]).repeat(12, 1)[None]
    assert load_balance_loss(collapsed, None) > 3.9


def test_balance_loss_matches_the_switch_formula_and_its_gradient():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 4, requires_grad=True)
    mask = (torch.rand(3, 7) > 0.3).long()
    ours = load_balance_loss(logits, mask)
    probs = logits.softmax(-1)[mask.bool()]  # [n, E], real tokens only
    chosen = torch.nn.functional.one_hot(probs.argmax(-1), 4).float()
    direct = 4 * (probs.mean(0) * chosen.mean(0)).sum()
    torch.testing.assert_close(ours, direct)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_direct,) = torch.autograd.grad(direct, logits)
    torch.testing.assert_close(g_ours, g_direct)
    assert g_ours[mask == 0].abs().max() == 0


def test_balance_loss_ignores_padding():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    base = load_balance_loss(logits, mask)
    changed = logits.clone()
    changed[mask == 0] = torch.tensor([50.0, 0, 0, 0])  # padding all "routed" to expert 0
    torch.testing.assert_close(load_balance_loss(changed, mask), base)
    valid = logits[mask.bool()][None]  # only the real tokens
    torch.testing.assert_close(load_balance_loss(valid, None), base)
    assert not torch.allclose(load_balance_loss(changed, None), base)


def test_bf16_autocast_runs(tiny_config):
    ffn = make_ffn(tiny_config).eval()
    h = torch.randn(2, 5, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = ffn(h)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ffn(h)[0], atol=0.1, rtol=0.05)
