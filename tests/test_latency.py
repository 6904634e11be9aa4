"""Latency: every model measured in the same interleaved rounds, left in the mode it was in."""

import torch

from minimoe import MiniMoEModel
from minimoe.latency import measure_latencies, measure_latency


def test_models_take_turns_and_keep_their_mode(tiny_config, monkeypatch):
    torch.manual_seed(0)
    dense, moe = MiniMoEModel(tiny_config(num_experts=1)), MiniMoEModel(tiny_config()).train()
    dense.eval()
    calls = []
    for name, model in (("dense", dense), ("moe", moe)):
        model.register_forward_pre_hook(lambda m, args, name=name: calls.append(name))
    ms = measure_latencies([dense, moe], batch_size=2, seq_len=8, repeats=3, warmup=1)
    assert len(ms) == 2 and all(t > 0 for t in ms)
    assert calls == ["dense", "moe"] * 4  # interleaved: one forward of each per round
    assert not dense.training and moe.training
    assert measure_latency(dense, 2, 8, repeats=1, warmup=0) > 0
