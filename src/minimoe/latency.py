"""Inference latency of a model on this machine, measured the same way for every model compared."""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from minimoe.inference import eval_mode


@torch.no_grad()
def measure_latencies(
    models: list, batch_size: int = 32, seq_len: int = 128, repeats: int = 5, warmup: int = 2
) -> list[float]:
    """Median wall time in ms of one eval forward of each model on random full-length ids [batch_size, seq_len].

    The models take turns within each round, so a machine that slows down or speeds up during the measurement
    shifts them all alike and their ratios hold (as the benchmarks measure).
    """
    inputs = []
    for model in models:
        device = next(model.parameters()).device
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(5, model.config.vocab_size, (batch_size, seq_len), generator=g).to(device)  # [B, T]
        inputs.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    times: list[list[float]] = [[] for _ in models]
    with contextlib.ExitStack() as stack:
        for model in models:
            stack.enter_context(eval_mode(model))
        for i in range(warmup + repeats):
            for model, batch, log in zip(models, inputs, times):
                start = time.perf_counter()
                model(**batch)
                if i >= warmup:
                    log.append(time.perf_counter() - start)
    return [1e3 * statistics.median(log) for log in times]


def measure_latency(model, batch_size: int = 32, seq_len: int = 128, repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time in ms of one eval forward of `model` (see measure_latencies)."""
    return measure_latencies([model], batch_size, seq_len, repeats, warmup)[0]
