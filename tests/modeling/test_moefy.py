"""moefy: the paper's expert initialisation from a dense FFN, and the teacher -> student config helper."""

import pytest
import torch
from transformers import BertConfig, MPNetConfig

from minimoe import MiniMoEError
from minimoe.modeling import MiniMoEConfig, MoEFeedForward, expert_neurons, moefy, moefy_layer_


def test_expert_neurons_share_two_thirds_and_stride_the_rest():
    idx = expert_neurons(dense_width=4 * 12, num_experts=4)  # w = 12, 8 shared
    assert idx.shape == (4, 12)
    for e in range(4):
        assert idx[e, :8].tolist() == list(range(8))
        assert idx[e, 8:].tolist() == [8 + e + 4 * j for j in range(4)]
    own = idx[:, 8:].flatten()
    assert len(set(own.tolist())) == own.numel()  # the non-shared neurons never repeat


def test_shared_fraction_is_a_parameter():
    idx = expert_neurons(40, 4, shared_fraction=0.0)
    assert len(set(idx.flatten().tolist())) == 40  # a pure split
    assert (expert_neurons(40, 4, shared_fraction=1.0) == torch.arange(10)).all()
    with pytest.raises(MiniMoEError, match="divisible"):
        expert_neurons(41, 4)


def test_moefy_copies_rows_columns_and_bias():
    torch.manual_seed(0)
    H, D, E = 6, 24, 4
    w_in, b_in, w_out, b_out = torch.randn(D, H), torch.randn(D), torch.randn(H, D), torch.randn(H)
    ei, bi, eo, bo = moefy(w_in, b_in, w_out, b_out, E)
    idx = expert_neurons(D, E)
    assert ei.shape == (E, 6, H) and eo.shape == (E, H, 6) and bo.shape == (E, H)
    for e in range(E):
        torch.testing.assert_close(ei[e], w_in[idx[e]])
        torch.testing.assert_close(bi[e], b_in[idx[e]])
        torch.testing.assert_close(eo[e], w_out[:, idx[e]])
        torch.testing.assert_close(bo[e], b_out)
    ei[0, 0, 0] += 1.0  # copies, not views or ties
    assert ei[1, 0, 0] != ei[0, 0, 0]


def test_moefy_layer_fills_an_moe_ffn():
    cfg = MiniMoEConfig(vocab_size=10, hidden_size=8, num_attention_heads=2, intermediate_size=6, num_experts=4)
    ffn = MoEFeedForward(cfg)
    dense = torch.randn(24, 8), torch.randn(24), torch.randn(8, 24), torch.randn(8)
    moefy_layer_(ffn, *dense)
    torch.testing.assert_close(ffn.w_in.data[2], dense[0][expert_neurons(24, 4)[2]])
    with pytest.raises(MiniMoEError, match="moefy produced"):
        moefy_layer_(ffn, torch.randn(32, 8), torch.randn(32), torch.randn(8, 32), torch.randn(8))


def test_student_config_keeps_teacher_vocabulary():
    teacher = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, pad_token_id=0)
    s = MiniMoEConfig.for_student(layers=3, hidden=384, experts=4, teacher=teacher)
    assert (s.vocab_size, s.num_attention_heads, s.intermediate_size, s.num_experts) == (30522, 12, 1536, 4)
    mpnet = MPNetConfig(vocab_size=30527, pad_token_id=1, max_position_embeddings=514)
    s = MiniMoEConfig.for_student(layers=2, hidden=128, experts=1, teacher=mpnet)
    assert (s.vocab_size, s.pad_token_id, s.max_position_embeddings, s.num_attention_heads) == (30527, 1, 512, 4)
