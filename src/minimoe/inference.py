"""Running a model for its outputs: eval mode for a block, and the one loop feeding it batches on its device."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode (no dropout, no router noise) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def device_batches(
    batches: Iterable[dict],
    device: torch.device,
    drop: tuple[str, ...] = ("labels",),
    desc: str | None = None,
    total: int | None = None,
) -> Iterator[dict]:
    """Each batch's tensors on `device`, minus the `drop` keys (labels: a forward takes none); a progress bar when
    `desc` is given (`total`: the count, for a generator). The caller runs the model under no_grad (a
    generator's grad mode would leak into its loop)."""
    for batch in tqdm(batches, desc=desc, total=total, unit="batch", disable=not desc):  # shown in a log file too
        yield {k: v.to(device) for k, v in batch.items() if k not in drop}
