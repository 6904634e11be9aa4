"""Exported inference: onnxruntime (fp32 and dynamic int8) against PyTorch eager, dense and MiniMoE students.

The students are the inference section's balanced-router models of one shape, exported with `minimoe export`'s
functions (masked dispatch: top-1 FLOPs). One interleaved group per batch size; onnxruntime gets as many
intra-op threads as torch, not spinning between calls (its busy-waiting threads would slow the PyTorch cases
run next). int8 is also compared with fp32 on the outputs (max |diff| of the last hidden state).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from minimoe.exporting import export_onnx, onnx_session, quantize_int8, run_onnx
from timing import interleaved, median_ms, paired_ratio

from .inference import student_name
from .models import forward_fn, random_ids, shape_name
from .presets import Preset, log


def bench_export(p: Preset, models: dict) -> dict:
    """PyTorch fp32 vs onnxruntime fp32 vs onnxruntime int8, dense and MoE of `p.export_shape`, batch 1 and large."""
    shape = shape_name(*p.export_shape)
    kinds = {"dense": models[student_name(shape, None)]["model"], "moe": models[student_name(shape, "")]["model"]}
    threads = torch.get_num_threads()
    rows, accuracy = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for kind, model in kinds.items():
            fp32, int8 = Path(tmp) / f"{kind}.onnx", Path(tmp) / f"{kind}-int8.onnx"
            log(f"  exporting {shape} {kind} to ONNX (+ int8) ...")
            export_onnx(model, fp32)
            quantize_int8(fp32, int8)
            sessions[kind] = {
                "onnxruntime fp32": onnx_session(fp32, threads, spin=False),
                "onnxruntime int8": onnx_session(int8, threads, spin=False),
            }
        for batch in p.batches:
            repeats = p.repeats_large if batch == max(p.batches) else p.repeats_small
            ids = random_ids(30522, batch, p.seq)
            inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))
            cases: dict[str, Callable[[], object]] = {}
            for kind, model in kinds.items():
                cases[f"{kind}/pytorch fp32"] = forward_fn(model, ids)
                for name, session in sessions[kind].items():
                    cases[f"{kind}/{name}"] = lambda s=session, x=inputs: run_onnx(s, x)
                with torch.no_grad():
                    ref = model(input_ids=ids, attention_mask=inputs[1]).last_hidden_state
                accuracy[f"{kind} batch {batch}"] = {
                    name: float((run_onnx(s, inputs) - ref).abs().max()) for name, s in sessions[kind].items()
                }
            log(f"  batch {batch}: {len(cases)} cases x {repeats} interleaved repeats ...")
            times, _ = interleaved(cases, repeats)
            for key, t in times.items():
                kind, runtime = key.split("/")
                rows.append(
                    {
                        "shape": shape,
                        "kind": kind,
                        "runtime": runtime,
                        "batch": batch,
                        "ms": median_ms(t),
                        "over_pytorch_fp32": paired_ratio(t, times[f"{kind}/pytorch fp32"]),
                        "moe_over_dense": paired_ratio(times[f"moe/{runtime}"], times[f"dense/{runtime}"]),
                    }
                )
    return {
        "shape": shape,
        "seq": p.seq,
        "threads": threads,
        "dispatch": "masked",
        "rows": rows,
        "max_abs_diff": accuracy,
    }
