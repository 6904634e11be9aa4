"""Shared fixtures: tiny random MiniMoE configs so the suite stays fast."""

import pytest
import torch

from minimoe import MiniMoEConfig


@pytest.fixture
def tiny_config():
    """A 2-layer, 32-wide, 4-expert config; pass overrides by calling it."""

    def make(**overrides):
        fields = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=48, num_experts=4, max_position_embeddings=64)
        fields.update(overrides)
        return MiniMoEConfig(**fields)

    return make


@pytest.fixture
def batch():
    """Random ids [3, 11] with the last sequences padded."""
    torch.manual_seed(0)
    ids = torch.randint(1, 97, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return ids, mask
