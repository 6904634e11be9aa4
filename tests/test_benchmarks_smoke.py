"""The benchmarks' smoke modes end to end in subprocesses (`run.py`, `loader.py`, `gpu.py`), so they cannot rot
unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_run(
    tmp_path_factory: pytest.TempPathFactory, packaged_teacher: Path
) -> tuple[Path, subprocess.CompletedProcess]:
    """Run the smoke suite once (tiny shapes, the already-fetched MiniLM teacher only), outputs in a temp dir."""
    out = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "run.py"),
        "--smoke",
        "--json",
        str(out / "perf.json"),
        "--doc",
        str(out / "performance.md"),
        "--img-dir",
        str(out / "img"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


@pytest.mark.integration  # uses the real (already fetched) all-MiniLM-L6-v2
def test_smoke_json_has_every_section(smoke_run):
    out, _ = smoke_run
    perf = json.loads((out / "perf.json").read_text())
    assert {
        "schema",
        "meta",
        "inference",
        "scaling",
        "training",
        "dispatch",
        "export",
        "targets",
        "profiles",
        "headline",
    } <= set(perf)
    meta = perf["meta"]
    assert meta["smoke"] is True and {"cpu", "cores", "threads", "torch"} <= set(meta["hardware"])
    assert {"load_before", "load_after", "command", "wall_time_s", "memory_method", "malloc"} <= set(meta)

    inference = perf["inference"]
    models = {m["model"]: m for m in inference["models"]}
    assert "all-MiniLM-L6-v2" in models and {"dense", "moe", "teacher"} == {m["kind"] for m in models.values()}
    assert all({"params", "active_params", "flops_per_seq"} <= set(m) for m in models.values())
    row = inference["latency"][0]
    assert {"model", "batch", "dtype", "ms", "seq_per_s", "tensor_peak_mb", "rss_peak_mb"} <= set(row)
    for key in ("moe_vs_dense_stock_malloc", "moe_vs_dense_tuned_malloc"):
        assert inference[key] and {"shape", "batch", "latency_ratio", "flops_ratio", "target", "met"} <= set(
            inference[key][0]
        )
        for r in inference[key]:  # balanced routers (headline), grouped dispatch forced, random-init routers
            for ratio in (
                "latency_ratio",
                "latency_ratio_grouped_dispatch",
                "latency_ratio_random_routers",
                "current_over_grouped_dispatch",
                "flops_ratio",
            ):
                assert positive(r[ratio]), (key, ratio, r)
    variants = {r["model"].split(" ", 1)[1] for r in inference["routing"]}  # "<shape> <variant>"
    assert variants == {"MoE E=4", "MoE E=4 (grouped dispatch)", "MoE E=4 (random routers)"}
    for r in inference["routing"]:  # group sizes of every MoE layer on the timed inputs, and the path taken
        assert r["batch"] in inference["batches"] and r["layers"]
        for layer in r["layers"]:
            assert len(layer["groups"]) == 4 and sum(layer["groups"]) == r["batch"] * inference["seq_len"]
            allowed = ("grouped",) if r["model"].endswith("(grouped dispatch)") else ("padded", "grouped")
            assert layer["path"] in allowed
    balancing = inference["router_balancing"]
    assert balancing["by_shape"] and all(b["groups"] for b in balancing["by_shape"].values())
    assert inference["bf16"] and "bf16_over_fp32" in inference["bf16"][0]
    assert {(r["shape"], r["batch"]) for r in inference["moe_vs_dense_bf16"]} == {
        (r["shape"], r["batch"]) for r in inference["moe_vs_dense_stock_malloc"]
    }
    names = {t["name"] for t in perf["targets"]}  # checked on stock malloc, fp32 and bf16, and the training step
    assert any(n.endswith(" bf16") for n in names) and any("distillation step" in n for n in names)
    assert "MoE/dense fine-tuning step 4x8" in names

    exported = perf["export"]
    runtimes = {(r["kind"], r["runtime"]) for r in exported["rows"]}
    assert runtimes == {
        (k, r) for k in ("dense", "moe") for r in ("pytorch fp32", "onnxruntime fp32", "onnxruntime int8")
    }
    assert all(positive(r["ms"]) and positive(r["over_pytorch_fp32"]) for r in exported["rows"])
    assert all(d["onnxruntime fp32"] < 1e-3 for d in exported["max_abs_diff"].values())

    scaling = perf["scaling"]
    assert {"ratio_max_over_1", "target", "met", "rows"} <= set(scaling["experts"])
    assert {"experts", "ms", "ratio_vs_e1", "load", "tensor_peak_mb"} <= set(scaling["experts"]["rows"][0])
    assert positive(scaling["experts"]["ratio_max_over_1_random_routers"])
    for r in scaling["experts"]["rows"]:
        assert all(positive(r[k]) for k in ("ms", "ratio_vs_e1", "ms_random_routers", "ratio_vs_e1_random_routers"))
        assert len(r["load_random_routers"]) == r["experts"]
    for key in ("seq", "batch"):
        assert {key, "experts", "ms", "us_per_token", "tensor_peak_mb", "rss_peak_mb"} <= set(scaling[key]["rows"][0])

    training = perf["training"]
    assert {"tokens_per_s_fp32", "tokens_per_s_bf16", "teacher_share_fp32", "bf16_over_fp32_step"} <= set(training)
    assert 0 < training["teacher_share_fp32"] < 1.5
    assert [(f["batch"], f["seq"]) for f in training["finetune"]] == [(4, 8)]
    assert positive(training["finetune"][0]["moe_over_dense_step"])
    assert positive(training["finetune"][0]["moe_random_routers_over_dense_step"])
    parts = training["finetune"][0]["parts"]  # the step's parts, timed inside the same interleaved rounds
    assert [x["part"] for x in parts] == ["forward", "backward", "clip", "optimizer"]
    assert all(x["dense_ms"] > 0 and positive(x["moe_over_dense"]) for x in parts)
    assert training["finetune"][0]["params_moe"] > training["finetune"][0]["params_dense"]

    dispatch = perf["dispatch"]
    assert {r["variant"] for r in dispatch["rows"]} == {
        "sorted (ours)",
        "naive loop+masks",
        "one-hot einsum",
        "dense FFN (E=1)",
    }
    assert dispatch["outputs_match_sorted"] is True and {r["batch"] for r in dispatch["rows"]} == set(
        dispatch["batches"]
    )
    assert all({"name", "value", "target", "met"} <= set(t) for t in perf["targets"])
    assert len(perf["headline"]) >= 3


@pytest.mark.integration
def test_smoke_writes_plots_and_doc(smoke_run):
    out, result = smoke_run
    images = sorted(p.name for p in (out / "img").glob("perf_*.png"))
    assert images == [
        "perf_dispatch.png",
        "perf_inference.png",
        "perf_layer_batch.png",
        "perf_layer_experts.png",
        "perf_layer_seq.png",
        "perf_moe_dense_ratio.png",
        "perf_training.png",
    ]
    doc = (out / "performance.md").read_text()
    assert doc.startswith("# Performance") and "SMOKE RUN" in doc and "img/perf_inference.png" in doc
    assert "## Routing" in doc and "### Dispatch fix: before/after" in doc and "Fine-tuning step by part" in doc
    assert "## GPU" in doc and "python benchmarks/gpu.py" in doc
    assert "headline" in result.stdout


def test_loader_smoke_measures_every_worker_count(tiny_teacher_dir, tmp_path):
    out = tmp_path / "loader.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "loader.py"), "--smoke", "--tokenizer", str(tiny_teacher_dir)]
    result = subprocess.run([*command, "--json", str(out)], capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert [r["workers"] for r in report["rows"]] == [0, 1, 2] and report["pairs"] > 0
    assert all(positive(r["sequences_per_s"]) and positive(r["first_batch_s"]) for r in report["rows"])
    parts = {"read pairs from the memmap", "pad (pad_collator)", "pad (DataCollatorWithPadding)"}
    assert set(report["in_process_ms"]) == parts
    assert {"sequences_per_s", "value", "met"} <= set(report["target"]) and "target >= 15,000" in result.stdout


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_its_code_on_cpu(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert [(r["teacher"], r["student"]) for r in report["steps"]] == [
        (t, s) for t in ("BERT-base (tiny)", "BERT-large (tiny)") for s in ("1L-32H E=4", "2L-32H E=4")
    ]
    for row in report["steps"]:  # the forced micro-batch of 4 accumulates to the batch of 8
        assert (row["micro_batch"], row["grad_accum"], row["batch"]) == (4, 2, 8)
        assert all(positive(row[k]) for k in ("tokens_per_s", "flops_per_token", "projected_hours", "teacher_share"))
    cli = report["cli"]
    assert cli["steps"] == 4 and positive(cli["tokens_per_s"]) and cli["syncs_by_phase"]["logging"] == 4
    sites = [e["site"] for e in cli["sync_sites_in_step"]]
    assert any("dispatch.py" in s for s in sites)  # the MoE dispatch reads its group sizes (seen on CPU too)
    assert not any("trainer.py" in s for s in sites)  # the loop itself reads nothing on the host in a step
    assert "| teacher | student |" in (tmp_path / "gpu.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU this would run the full benchmark")
def test_gpu_benchmark_without_a_gpu_says_so_in_one_line():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py")], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0 and result.stdout.count("\n") == 1 and "needs a CUDA GPU" in result.stdout
    estimate = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--estimate"]
    table = subprocess.run(estimate, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "| BERT-base | 3L-384H E=4 | 0.201 |" in table  # 0.2 GFLOP a token, as issue 24 estimates
