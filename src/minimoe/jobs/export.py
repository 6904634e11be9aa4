"""`minimoe export`: a saved model as an ONNX file (onnxruntime, optionally int8) or a torch.export `.pt2` program.

The export itself lives in `minimoe.exporting`; this job validates the fields, loads the model, writes the file
atomically and checks it against PyTorch on other shapes than traced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from minimoe.errors import MiniMoEError
from minimoe.exporting import (
    check_export,
    export_onnx,
    export_program,
    onnx_session,
    quantize_int8,
    run_onnx,
)
from minimoe.files import atomic_path
from minimoe.modeling.dispatch import strategy


@dataclass
class ExportConfig:
    """What to export, to where, and how."""

    model: str = ""
    """the model to export: a saved model directory (minimoe distill/finetune output), name or hub id"""
    output: str = ""
    """the file to write (e.g. model.onnx or model.pt2)"""
    format: Literal["onnx", "pt2"] = "onnx"
    """onnx (runs in onnxruntime) or pt2 (a torch.export program, torch.export.load)"""
    int8: bool = False
    """onnx only: dynamic int8 quantisation of every MatMul/Gemm weight (onnxruntime)"""
    dispatch: str = "masked"
    """experts in the graph: masked (top-1 FLOPs) or dense (static shapes, E x FLOPs)"""
    opset: int = 18
    """ONNX opset version"""
    tolerance: float = 0.0001
    """max |exported - PyTorch| on the check inputs (int8 is checked by argmax agreement)"""

    def __post_init__(self) -> None:
        strategy(self.dispatch, exportable=True)
        if self.int8 and self.format != "onnx":
            raise MiniMoEError("export field int8 needs --format onnx (int8 is onnxruntime's dynamic quantisation)")
        if self.opset < 7:
            raise MiniMoEError(f"export field opset must be at least 7 (the oldest onnxruntime runs), got {self.opset}")
        if not self.tolerance > 0:
            raise MiniMoEError(f"export field tolerance must be positive, got {self.tolerance}")


def load_model(name: str) -> nn.Module:
    """A classifier if the saved config says so, else the bare encoder."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    from minimoe.assets.resolve import load_pretrained

    architectures = load_pretrained(AutoConfig, name).architectures or []
    classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    return load_pretrained(AutoModelForSequenceClassification if classifier else AutoModel, name).eval()


def run(cfg: ExportConfig) -> dict:
    """Export, write atomically, check against PyTorch on other shapes; returns what was written."""
    if not cfg.model or not cfg.output:
        raise MiniMoEError("export needs --model (a saved model) and --output (the file to write)")
    model = load_model(cfg.model)
    out = Path(cfg.output)
    with atomic_path(out, replace=True) as tmp:
        if cfg.format == "pt2":
            torch.export.save(export_program(model, cfg.dispatch), str(tmp))
            program = torch.export.load(str(tmp)).module()
            diff = check_export(model, lambda inputs: program(*inputs), cfg.output, cfg.int8, cfg.tolerance)
        else:
            fp32 = tmp.with_name(tmp.name + ".fp32.onnx")
            try:
                export_onnx(model, fp32 if cfg.int8 else tmp, cfg.dispatch, cfg.opset)
                if cfg.int8:
                    quantize_int8(fp32, tmp)
            finally:
                fp32.unlink(missing_ok=True)
            session = onnx_session(tmp)
            diff = check_export(model, lambda inputs: run_onnx(session, inputs), cfg.output, cfg.int8, cfg.tolerance)
    return {
        "output": str(out),
        "format": cfg.format + (" int8" if cfg.int8 else ""),
        "dispatch": cfg.dispatch,
        "size_mb": round(out.stat().st_size / 2**20, 2),
        "max_abs_diff_vs_pytorch": diff,
    }
