"""Export a model as an ONNX file (onnxruntime, optionally int8) or a torch.export `.pt2` program, and run ONNX files.

The expert dispatch traced into the graph is an export-friendly strategy of `minimoe.modeling.dispatch`:
`masked` (per expert: NonZero of a mask, gather, the expert, scatter back; top-1 FLOPs, data-dependent row
counts that torch.export and ONNX both express) or `dense` (every expert on every token, then a gather of
each token's row: static shapes, E x the expert FLOPs). Batch and sequence axes stay dynamic. After writing,
the exported model runs on inputs of another batch and sequence length than traced and must match PyTorch.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from minimoe.errors import MiniMoEError
from minimoe.modeling.moe import use_dispatch

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_extra(module: str):
    """Import one of the `export` extra's packages (onnx, onnxruntime, onnxscript), or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MiniMoEError(f"{module} is not installed: pip install 'minimoe[export]'") from err


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporter's and the quantiser's advisories (skipped torchvision ops, "run pre-processing"):
    warnings and log records below ERROR, for the block only."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


class Exportable(nn.Module):
    """The model as a function of (input_ids, attention_mask, token_type_ids) [B, T] -> one tensor.

    Logits [B, labels] for a classifier, else the last hidden state [B, T, H].
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.output_name = "logits" if hasattr(model, "classifier") else "last_hidden_state"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return getattr(out, self.output_name)


def example_inputs(model: nn.Module, batch: int, seq: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(input_ids, attention_mask, token_type_ids) [batch, seq]; from the second row on, the tail is padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, model.config.vocab_size, (batch, seq), generator=g)  # [B, T]
    mask = torch.ones_like(ids)
    for row in range(1, batch):
        mask[row, max(1, seq - 2 * row) :] = 0
    return ids.masked_fill(mask == 0, model.config.pad_token_id or 0), mask, torch.zeros_like(ids)


def dynamic_shapes() -> dict[str, dict[int, torch.export.Dim]]:
    """Batch and sequence axes of every input dynamic."""
    batch, seq = torch.export.Dim("batch", max=4096), torch.export.Dim("seq", max=4096)
    return {name: {0: batch, 1: seq} for name in INPUTS}


def export_program(model: nn.Module, dispatch: str = "masked") -> torch.export.ExportedProgram:
    """torch.export of `model` (eval mode) with dynamic batch and sequence axes."""
    wrapped = Exportable(model.eval())
    with use_dispatch(model, dispatch, exportable=True), torch.no_grad():
        return torch.export.export(wrapped, example_inputs(model, 2, 8), dynamic_shapes=dynamic_shapes(), strict=False)


def export_onnx(model: nn.Module, path: Path, dispatch: str = "masked", opset: int = 18) -> None:
    """`model` as an ONNX file through the dynamo exporter, dynamic batch and sequence axes."""
    export_extra("onnxscript")  # the dynamo exporter's dependency
    wrapped = Exportable(model.eval())
    with use_dispatch(model, dispatch, exportable=True), torch.no_grad(), quiet():
        program = torch.onnx.export(
            wrapped,
            example_inputs(model, 2, 8),
            dynamo=True,
            dynamic_shapes=dynamic_shapes(),
            input_names=list(INPUTS),
            output_names=[wrapped.output_name],
            opset_version=opset,
            verbose=False,
        )
    program.save(str(path))


def gemm_as_matmul_(graph) -> int:
    """Rewrite Gemm(A, B, C) with a constant B as MatMul(A, B') + C, in place; returns how many.

    The ONNX exporter fuses linear layers into Gemm, but onnxruntime's dynamic quantisation only handles MatMul.
    """
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    nodes, rewritten = [], 0
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        name = f"{node.input[1]}__matmul_{rewritten}"
        graph.initializer.append(numpy_helper.from_array(weight.T.copy() if attrs.get("transB", 0) else weight, name))
        product = f"{node.output[0]}__product"
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], name], [product], name=f"{node.name}_matmul"))
        bias = [node.input[2]] if len(node.input) > 2 and node.input[2] else []
        if bias:
            nodes.append(onnx.helper.make_node("Add", [product, *bias], [node.output[0]], name=f"{node.name}_add"))
        else:
            nodes.append(onnx.helper.make_node("Identity", [product], [node.output[0]], name=f"{node.name}_out"))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def fold_constants(src: Path, dst: Path) -> None:
    """onnxruntime's basic (hardware-independent, ONNX-ops-only) graph optimisations, saved: constant folding
    turns each expert's Slice + Squeeze of the stacked weights into a weight of its own, which the quantiser
    needs (it only quantises a MatMul whose weight is an initializer). The exporter folds only small tensors."""
    ort = export_extra("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(dst)
    options.log_severity_level = 3
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the expert and attention linears (weights int8 per output channel, activations
    per call). The routers stay fp32: int8 noise there flips near-tie tokens to another expert."""
    onnx = export_extra("onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folded = src.with_name(src.name + ".folded.onnx")
    try:
        fold_constants(src, folded)
        model = onnx.load(str(folded))
    finally:
        folded.unlink(missing_ok=True)
    gemm_as_matmul_(model.graph)
    routers = [n.name for n in model.graph.node if n.op_type == "MatMul" and ".router." in n.input[1]]
    with quiet():
        quantize_dynamic(
            model,
            dst,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=routers,
        )


def onnx_session(path: str | Path, threads: int = 0, spin: bool = True):
    """An onnxruntime CPU session of the file (threads 0 = onnxruntime's default).

    spin=False stops its idle threads busy-waiting after each call, which would steal the cores of whatever runs
    next in the process (e.g. PyTorch, interleaved with it in the benchmark).
    """
    ort = export_extra("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """One onnxruntime call on the (input_ids, attention_mask, token_type_ids) tensors."""
    feed = {name: t.cpu().numpy().astype(np.int64) for name, t in zip(INPUTS, inputs)}
    return torch.from_numpy(session.run(None, feed)[0])


def check_export(model: nn.Module, run_exported, name: str, int8: bool = False, tolerance: float = 1e-4) -> float:
    """Max |exported - PyTorch eager| on inputs of another batch and sequence length than traced.

    int8 changes the numbers by design: there the argmax of every row must agree instead.
    """
    inputs = example_inputs(model, 3, 11, seed=1)
    with torch.no_grad():
        expected = Exportable(model.eval())(*inputs)
    got = run_exported(inputs)
    diff = float((got.detach() - expected).abs().max())
    if int8:
        if not torch.equal(got.argmax(-1), expected.argmax(-1)):
            raise MiniMoEError(f"{name}: the int8 model's predictions differ from PyTorch's (max diff {diff:.3g})")
    elif not diff <= tolerance:
        raise MiniMoEError(f"{name}: exported model differs from PyTorch by {diff:.3g} > tolerance")
    return diff
