"""`minimoe export`: PyTorch vs the exported program vs onnxruntime (fp32 and int8) on other shapes than traced.

Every test exports (5-20 s each on 2 cores), so all are marked slow."""

import onnx
import pytest
import torch

from minimoe.cli import main
from minimoe.exporting import example_inputs, fold_constants, onnx_session, run_onnx
from minimoe.jobs.export import ExportConfig, run
from minimoe.modeling import MiniMoEConfig, MiniMoEForSequenceClassification, MiniMoEModel

pytestmark = pytest.mark.slow


def save_student(tmp_path, experts: int, classifier: bool = True, intermediate: int = 48):
    """A tiny random student (classifier or bare encoder) saved with save_pretrained; returns (dir, model)."""
    cfg = MiniMoEConfig(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=intermediate,
        num_experts=experts,
        max_position_embeddings=64,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = (MiniMoEForSequenceClassification(cfg) if classifier else MiniMoEModel(cfg)).eval()
    path = tmp_path / f"student-e{experts}"
    model.save_pretrained(path)
    return path, model


def expected(model, inputs):
    with torch.no_grad():
        out = model(input_ids=inputs[0], attention_mask=inputs[1], token_type_ids=inputs[2])
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("experts, dispatch", [(4, "masked"), (4, "dense"), (1, "masked")])
def test_onnx_matches_pytorch_on_other_shapes(tmp_path, experts, dispatch):
    path, model = save_student(tmp_path, experts)
    out = tmp_path / "model.onnx"
    assert main(["export", "--model", str(path), "--output", str(out), "--dispatch", dispatch]) == 0
    session = onnx_session(out)
    for batch, seq in ((1, 5), (4, 17)):  # traced at 2 x 8
        inputs = example_inputs(model, batch, seq, seed=batch)
        torch.testing.assert_close(run_onnx(session, inputs), expected(model, inputs), atol=1e-4, rtol=0)


@pytest.mark.parametrize("classifier", [True, False])
def test_pt2_program_matches_pytorch_on_other_shapes(tmp_path, classifier):
    path, model = save_student(tmp_path, 4, classifier)
    out = tmp_path / "model.pt2"
    summary = run(ExportConfig(model=str(path), output=str(out), format="pt2"))
    assert summary["max_abs_diff_vs_pytorch"] <= 1e-5
    program = torch.export.load(str(out)).module()
    inputs = example_inputs(model, 5, 13, seed=3)
    torch.testing.assert_close(program(*inputs), expected(model, inputs), atol=1e-5, rtol=0)


def test_int8_onnx_quantizes_every_linear_and_agrees(tmp_path):
    path, model = save_student(tmp_path, 4, intermediate=96)  # stacked experts above the exporter's folding limit
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    run(ExportConfig(model=str(path), output=str(fp32)))
    summary = run(ExportConfig(model=str(path), output=str(int8), int8=True))
    assert summary["format"] == "onnx int8"
    fold_constants(fp32, fp32)  # each expert's weight an initializer of its own, as quantize_int8 sees them
    graphs = {name: onnx.load(str(f)).graph for name, f in (("fp32", fp32), ("int8", int8))}
    weights = {name: {i.name for i in g.initializer} for name, g in graphs.items()}
    linears = [n for n in graphs["fp32"].node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights["fp32"]]
    assert len(linears) >= 2 * (4 + 2 * 4 + 1)  # per layer Q, K, V, O, two matmuls per expert, router (+ heads)
    float_left = [n for n in graphs["int8"].node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights["int8"]]
    assert len(float_left) == 2 and all(".router." in n.input[1] for n in float_left)  # routers stay fp32
    assert sum(n.op_type == "MatMulInteger" for n in graphs["int8"].node) == len(linears) - 2
    float_weights = {i.name for i in graphs["int8"].initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert not [name for name in float_weights if ".ffn.w_" in name]  # no expert weight left in fp32
    inputs = example_inputs(model, 4, 9, seed=2)
    got = run_onnx(onnx_session(int8), inputs)
    torch.testing.assert_close(got, expected(model, inputs), atol=0.05, rtol=0)  # int8 noise, not a wrong graph


def test_bad_fields_are_one_line_errors(tmp_path, capsys):
    path, _ = save_student(tmp_path, 4)
    assert main(["export", "--model", str(path), "--output", str(tmp_path / "m.pt2"), "--format", "pt2", "--int8"]) == 2
    assert "int8 needs --format onnx" in capsys.readouterr().err
    assert main(["export", "--model", str(path), "--output", str(tmp_path / "m"), "--format", "tflite"]) == 2
    assert "format must be one of onnx, pt2" in capsys.readouterr().err
