"""Inference latency of a model on this machine, measured the same way for every model compared."""

from __future__ import annotations

import statistics
import time

import torch

from minimoe.inference import eval_mode


@torch.no_grad()
def measure_latency(model, batch_size: int = 32, seq_len: int = 128, repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time in ms of one eval forward on random full-length ids [batch_size, seq_len]."""
    vocab = model.config.vocab_size
    device = next(model.parameters()).device
    ids = torch.randint(5, vocab, (batch_size, seq_len), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    times = []
    with eval_mode(model):
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)
