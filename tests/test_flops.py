"""minimoe.flops: measured vs closed-form FLOPs, the paper's GFLOPs table, parameter counts."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel

from minimoe import MiniMoEConfig, MiniMoEForSequenceClassification, MiniMoEModel
from minimoe.flops import (
    FlopReport,
    ParamReport,
    analytic_flops,
    count_flops,
    count_parameters,
    paper_gflops,
)
from minimoe.modeling import MoEFeedForward

SHAPE = dict(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=64,
)
B, T = 2, 24


def make(num_experts: int, **overrides) -> MiniMoEConfig:
    return MiniMoEConfig(**{**SHAPE, "num_experts": num_experts, **overrides})


def model(num_experts: int, **overrides) -> MiniMoEModel:
    torch.manual_seed(0)
    return MiniMoEModel(make(num_experts, **overrides))


@pytest.mark.parametrize("num_experts", [1, 4])
def test_count_matches_analytic(num_experts):
    cfg = make(num_experts)
    report = count_flops(model(num_experts), batch_size=B, seq_len=T)
    expected = analytic_flops(cfg, B, T)
    assert report.total == pytest.approx(expected, rel=0.01)
    assert isinstance(report, FlopReport) and report.batch_size == B and report.seq_len == T


def test_attention_is_counted_on_cpu():
    """SDPA and the explicit output_attentions path count the same FLOPs, and both include the T^2 terms."""
    cfg = make(4)
    m = model(4)
    sdpa = count_flops(m, B, T)
    explicit = count_flops(m, B, T, forward_kwargs={"output_attentions": True})
    assert sdpa.total == explicit.total
    attention_terms = cfg.num_hidden_layers * B * 4 * T * T * cfg.hidden_size
    without_attention = analytic_flops(cfg, B, T) - attention_terms
    assert sdpa.total - without_attention == attention_terms
    assert "aten.bmm" in explicit.by_op


def test_cpu_sdpa_kernel_is_counted():
    """torch 2.13's FlopCounterMode counts 0 for the CPU SDPA kernel; our mapping counts its 2 bmm's."""
    from minimoe.flops import _cpu_sdpa_mapping

    q = torch.randn(1, 2, 8, 4, requires_grad=True)
    expected = 2 * (2 * 2 * 8 * 8 * 4)  # scores + context, 2 FLOPs per MAC
    with FlopCounterMode(display=False) as explicit:  # the same attention written as two matmuls
        ((q @ q.transpose(-1, -2)) / 2).softmax(-1) @ q
    assert explicit.get_total_flops() == expected
    with FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_mapping()) as forward:
        F.scaled_dot_product_attention(q, q, q)
    assert forward.get_total_flops() == expected
    with FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_mapping()) as counter:
        F.scaled_dot_product_attention(q, q, q).sum().backward()
    assert counter.get_total_flops() == expected + 2 * expected + expected // 2  # fwd + bwd (2.5x)


def test_sequence_classification_head():
    cfg = make(4, num_labels=3)
    torch.manual_seed(0)
    report = count_flops(MiniMoEForSequenceClassification(cfg), B, T)
    assert report.total == pytest.approx(analytic_flops(cfg, B, T, num_labels=3), rel=0.01)


def test_moe_costs_the_flops_of_dense_with_four_times_the_ffn_parameters():
    dense, moe = model(1), model(4)
    ratio = count_flops(moe, B, T).total / count_flops(dense, B, T).total
    assert 1.0 <= ratio <= 1.01
    ffn_dense, ffn_moe = count_parameters(dense).expert, count_parameters(moe).expert
    assert 3.9 <= ffn_moe / ffn_dense <= 4.1


def test_padded_dispatch_rows_are_not_counted_as_model_flops():
    moe = model(4)
    ffns = [m for m in moe.modules() if isinstance(m, MoEFeedForward)]
    for ffn in ffns:
        ffn.expert_dispatch = "padded"  # always pad to the largest group when running
    assert count_flops(moe, B, T).total == pytest.approx(analytic_flops(moe.config, B, T), rel=0.01)
    assert all(ffn.expert_dispatch == "padded" for ffn in ffns)  # restored after counting


@pytest.mark.parametrize(
    "layers, hidden, inter, expected",
    [(3, 384, 1536, 0.68), (4, 384, 1536, 0.91), (6, 384, 1536, 1.36), (12, 768, 3072, 10.9), (24, 1024, 4096, 38.7)],
)
def test_paper_gflops_table(layers, hidden, inter, expected):
    cfg = MiniMoEConfig.for_student(layers, hidden, experts=4, intermediate=inter)
    digits = 2 if expected < 10 else 1
    assert round(paper_gflops(cfg, seq_len=128), digits) == expected
    # The router is ~0.1% and does not change the rounded value.
    assert round(paper_gflops(cfg, seq_len=128, include_router=True), digits) == expected


def test_paper_gflops_accepts_a_bert_config():
    bert_base = BertConfig()
    assert round(paper_gflops(bert_base), 1) == 10.9


def test_hf_bert_counts_like_dense_minimoe():
    cfg = make(1)
    bert_cfg = BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
    )
    torch.manual_seed(0)
    bert = count_flops(BertModel(bert_cfg), B, T)
    ours = count_flops(model(1), B, T)
    assert bert.total == pytest.approx(ours.total, rel=0.01)
    H, I, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    embeddings = (cfg.vocab_size + cfg.max_position_embeddings + 2) * H + 2 * H  # + LayerNorm
    layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H  # attention, LN, FFN, LN
    closed_form = embeddings + L * layer + H * H + H  # + pooler
    bert_params, dense_params = count_parameters(BertModel(bert_cfg)), count_parameters(model(1))
    assert bert_params.total == dense_params.total == closed_form
    assert bert_params.active == dense_params.active == closed_form and dense_params.expert == L * (2 * H * I + I + H)


def test_active_params_of_moe_are_dense_plus_router():
    dense, moe = count_parameters(model(1)), count_parameters(model(4))
    cfg = make(4)
    router = cfg.num_hidden_layers * (cfg.hidden_size * 4 + 4)
    assert moe.router == router and dense.router == 0
    assert moe.active == dense.total + router
    assert moe.total > moe.active
    assert dense.active == dense.total
    assert isinstance(moe, ParamReport) and moe.num_experts == 4
    assert moe.embedding == dense.embedding > 0


def test_count_flops_restores_training_mode():
    m = model(4).train()
    count_flops(m, 1, 8)
    assert m.training


def test_reports_print_one_line():
    report = count_flops(model(4), 1, 16)
    text = str(report)
    assert "FLOPs" in text and "params" in text and "active" in text and "\n" not in text
    assert "paper" in text


@pytest.mark.parametrize("experts, source", [(4, "head"), (1, "last_layer")])
def test_distillation_step_flops_match_a_counted_step(experts, source):
    from minimoe.distill.teachers import Teacher
    from minimoe.flops import _cpu_sdpa_mapping, distillation_flops
    from minimoe.modeling.moe import use_dispatch
    from minimoe.training.objectives import RelationDistillation

    torch.manual_seed(0)
    teacher_config = BertConfig(
        vocab_size=97, hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96
    )
    teacher = Teacher(BertModel(teacher_config, add_pooling_layer=False).eval())
    student = MiniMoEModel(make(experts), add_pooling_layer=False)
    objective = RelationDistillation(student, teacher, relation_heads=4, teacher_layer=-2, source=source).train()
    batch, length = 3, 16
    ids = torch.randint(5, 97, (batch, length))
    counter = FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_mapping())
    with use_dispatch(student, "grouped"), counter:  # grouped: no zero rows of the padded dispatch counted
        objective(ids, torch.ones_like(ids))["loss"].backward()
    head = source == "head"  # the student's own Q/K/V: no head, no backward beyond them in the last layer
    expected = distillation_flops(teacher_config, student.config, length, teacher_layer=-2, relation_head=head)
    assert counter.get_total_flops() == batch * expected
