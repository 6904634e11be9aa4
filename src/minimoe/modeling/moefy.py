"""moefy: split a dense FFN of width E*w into E experts of width w, as the paper initialises experts."""

from __future__ import annotations

from typing import Literal, get_args

import torch

from minimoe.errors import MiniMoEError
from minimoe.modeling.config import MiniMoEConfig
from minimoe.modeling.encoder import MiniMoEModel
from minimoe.modeling.moe import MoEFeedForward


def expert_neurons(dense_width: int, num_experts: int, shared_fraction: float = 2 / 3) -> torch.Tensor:
    """Indices [E, w] of the dense neurons each expert takes (w = dense_width / E).

    Every expert copies the first `shared_fraction * w` neurons; the rest of its width comes from the
    remaining neurons strided by expert (neuron j of the rest goes to expert j mod E).
    """
    if dense_width % num_experts:
        raise MiniMoEError(f"dense FFN width {dense_width} is not divisible by num_experts {num_experts}")
    if not 0.0 <= shared_fraction <= 1.0:
        raise MiniMoEError(f"shared_fraction must be in [0, 1], got {shared_fraction}")
    width = dense_width // num_experts
    shared = int(width * shared_fraction)
    rest = torch.arange(shared, dense_width)  # [E*w - s]
    own = [rest[e::num_experts][: width - shared] for e in range(num_experts)]
    return torch.stack([torch.cat([torch.arange(shared), o]) for o in own])  # [E, w]


@torch.no_grad()
def moefy(
    w_in: torch.Tensor,
    b_in: torch.Tensor,
    w_out: torch.Tensor,
    b_out: torch.Tensor,
    num_experts: int,
    shared_fraction: float = 2 / 3,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense FFN (w_in [D, H], b_in [D], w_out [H, D], b_out [H]) -> stacked experts.

    Returns w_in [E, w, H], b_in [E, w], w_out [E, H, w], b_out [E, H]; copies, never views.
    """
    idx = expert_neurons(w_in.shape[0], num_experts, shared_fraction)  # [E, w]
    return (
        w_in[idx].clone(),  # [E, w, H]
        b_in[idx].clone(),  # [E, w]
        w_out[:, idx].permute(1, 0, 2).clone(),  # [H, E, w] -> [E, H, w]
        b_out.expand(num_experts, -1).clone(),  # [E, H]
    )


@torch.no_grad()
def moefy_layer_(ffn: MoEFeedForward, w_in, b_in, w_out, b_out, shared_fraction: float = 2 / 3) -> None:
    """Fill an MoE FFN's experts in place from a dense FFN of width num_experts x expert width."""
    experts = moefy(w_in, b_in, w_out, b_out, ffn.num_experts, shared_fraction)
    for param, value in zip((ffn.w_in, ffn.b_in, ffn.w_out, ffn.b_out), experts):
        if param.shape != value.shape:
            raise MiniMoEError(f"moefy produced {tuple(value.shape)} but the layer holds {tuple(param.shape)}")
        param.copy_(value)


@torch.no_grad()
def moefy_random_init_(model, shared_fraction: float = 2 / 3, generator: torch.Generator | None = None) -> None:
    """The paper's student init: every FFN drawn as a random dense FFN of width E x w, then moefied.

    Experts therefore start sharing `shared_fraction` of their neurons (then diverge in training).
    """
    config = model.config
    if config.num_experts == 1:
        return
    E, H, w, std = config.num_experts, config.hidden_size, config.intermediate_size, config.initializer_range
    for module in model.modules():
        if isinstance(module, MoEFeedForward):
            dense_in = torch.randn(E * w, H, generator=generator) * std
            dense_out = torch.randn(H, E * w, generator=generator) * std
            moefy_layer_(module, dense_in, torch.zeros(E * w), dense_out, torch.zeros(H), shared_fraction)


ExpertInit = Literal["moefy", "independent"]
"""How a student's experts start: moefied from one random dense FFN (the paper), or each drawn alone."""


def init_student(config: MiniMoEConfig, seed: int, init: ExpertInit = "moefy") -> MiniMoEModel:
    """A randomly initialised MiniMoEModel (no pooler), deterministic in `seed`: experts moefied from one random
    dense FFN as in the paper ("moefy"), or each drawn alone ("independent").

    `minimoe inspect` rebuilds a distill run's starting point from the saved config and the recipe's seed.
    """
    if init not in get_args(ExpertInit):
        raise MiniMoEError(f"student init must be one of {', '.join(get_args(ExpertInit))}, got {init!r}")
    torch.manual_seed(seed)
    student = MiniMoEModel(config, add_pooling_layer=False)
    if init == "moefy":
        moefy_random_init_(student, generator=torch.Generator().manual_seed(seed))
    return student
