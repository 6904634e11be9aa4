"""Inference: latency and throughput of teachers and students, MoE/dense ratios in three routing regimes, bf16.

Per student shape one interleaved group times the dense student (E = 1) and three MoE students (E = 4) with
the same weights: balanced routers (the headline, what the targets are checked on), balanced routers with
the pre-fix grouped dispatch forced, and the random-init routers. Measured twice: with the stock allocator
(together with the teachers and bf16 autocast; the targets are checked on these) and, after the allocator is
tuned, the students alone (a second column: compute vs compute).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable

from minimoe.flops import count_flops, count_parameters
from minimoe.modeling import dispatch
from timing import attach_peak_memory, interleaved, median_ms, paired_ratio

from .models import forward_fn, load_hf_teacher, make_student, random_ids, shape_name
from .presets import MINILM, MPNET, TARGETS, Preset, log
from .routing import CALIBRATION_SEED, balance_routers_, force_grouped_dispatch_, routing_of

EXPERTS = 4
MOE_VARIANTS = {  # key in the ratio rows ("" = the headline) -> model name after the shape
    "": f"MoE E={EXPERTS}",  # balanced routers, current dispatch
    "grouped_dispatch": f"MoE E={EXPERTS} (grouped dispatch)",  # balanced routers, pre-fix dispatch
    "random_routers": f"MoE E={EXPERTS} (random routers)",  # random-init routers, current dispatch
}


def student_name(shape: str, variant: str | None) -> str:
    """`variant` None = the dense student, else a key of MOE_VARIANTS."""
    return f"{shape} {'dense' if variant is None else MOE_VARIANTS[variant]}"


def suffixed(key: str, variant: str) -> str:
    return f"{key}_{variant}" if variant else key


def build_students(p: Preset) -> tuple[dict[str, dict], dict]:
    """Dense and MoE students of every shape; the MoE in its three variants, routers balanced on calibration ids."""
    models: dict[str, dict] = {}
    calibration_batch, calibration_seq = p.balance_tokens
    balancing = {
        "method": "router-bias nudging (routing.balance_routers_)",
        "lr": p.balance_lr,
        "max_steps": p.balance_steps,
        "by_shape": {},
        "calibration": {"batch": calibration_batch, "seq": calibration_seq, "seed": CALIBRATION_SEED},
    }
    for layers, hidden in p.shapes:
        shape = shape_name(layers, hidden)
        models[student_name(shape, None)] = {
            "model": make_student(layers, hidden, 1),
            "kind": "dense",
            "shape": shape,
            "experts": 1,
        }
        random_init = make_student(layers, hidden, EXPERTS)
        balanced = copy.deepcopy(random_init)
        calibration = random_ids(balanced.config.vocab_size, *p.balance_tokens, seed=CALIBRATION_SEED)
        balancing["by_shape"][shape] = balance_routers_(balanced, calibration, p.balance_steps, p.balance_lr)
        variants = {
            "": balanced,
            "grouped_dispatch": force_grouped_dispatch_(copy.deepcopy(balanced)),
            "random_routers": random_init,
        }
        for variant, model in variants.items():
            models[student_name(shape, variant)] = {
                "model": model,
                "kind": "moe",
                "shape": shape,
                "experts": EXPERTS,
                "variant": variant,
            }
    return models, balancing


def load_teachers(p: Preset, skip_mpnet: bool, notes: list[str]) -> dict[str, dict]:
    """The packaged teachers that can be loaded; what could not is appended to `notes`, not fatal."""
    teachers = {}
    for teacher in p.teachers:
        if teacher == MPNET and skip_mpnet:
            notes.append(f"{MPNET} skipped (--no-mpnet)")
            continue
        try:
            model, path = load_hf_teacher(teacher)
        except Exception as err:  # noqa: BLE001 - a teacher that cannot be fetched is reported, not fatal
            notes.append(f"{teacher} skipped: could not be fetched/loaded ({type(err).__name__}: {err})")
            log(f"  NOTE: {notes[-1]}")
            continue
        teachers[teacher] = {
            "model": model,
            "kind": "teacher",
            "experts": 1,
            "path": str(path),
            "shape": shape_name(model.config.num_hidden_layers, model.config.hidden_size),
        }
    return teachers


def count_model_flops(p: Preset, models: dict[str, dict]) -> None:
    """m["flops"] = model FLOPs per sequence (top-1 expert; count_flops leaves out padded-dispatch rows)."""
    for m in models.values():
        report = count_flops(m["model"], batch_size=1, seq_len=p.seq)
        m["flops"], m["paper_gmacs"] = report.total, report.paper_gmacs


def summarize(times: dict[str, list[float]], faults: dict[str, list[int]]) -> dict[str, dict]:
    return {
        name: {
            "ms": median_ms(t),
            "min_ms": 1e3 * min(t),
            "max_ms": 1e3 * max(t),
            "n": len(t),
            "page_faults": statistics.median(faults[name]),
        }
        for name, t in times.items()
    }


def time_by_batch(
    p: Preset, cases_for: Callable[[int], dict[str, Callable[[], None]]], what: str
) -> dict[int, tuple[dict, dict]]:
    """One interleaved group per batch size: batch -> (times, page faults) of the cases `cases_for(batch)`."""
    groups = {}
    for batch in p.batches:
        large = batch == max(p.batches)
        cases = cases_for(batch)
        repeats = p.repeats_large if large else p.repeats_small
        log(f"  batch {batch}: {len(cases)} {what} x {repeats} interleaved repeats ...")
        groups[batch] = interleaved(cases, repeats, warmup=1 if large else 2)
    return groups


def timed_forward(m: dict, batch: int, seq: int, bf16: bool = False) -> Callable[[], None]:
    """A forward of the entry's model on the timed ids of that batch (the same ids for every model of a vocab)."""
    return forward_fn(m["model"], random_ids(m["model"].config.vocab_size, batch, seq), bf16)


def bench_inference(p: Preset, skip_mpnet: bool) -> tuple[dict, dict]:
    """Teachers + students at both batch sizes under the stock allocator; returns (results, the built models)."""
    notes: list[str] = []
    log("  building students, balancing routers on calibration ids ...")
    models, balancing = build_students(p)
    models |= load_teachers(p, skip_mpnet, notes)
    count_model_flops(p, models)
    model_rows = []
    for name, m in models.items():
        if m.get("variant"):  # the grouped-dispatch and random-router twins (the headline MoE's variant is "")
            continue  # same parameters and FLOPs as the headline MoE of their shape
        params = count_parameters(m["model"])
        model_rows.append(
            {
                "model": name,
                "kind": m["kind"],
                "shape": m["shape"],
                "experts": m["experts"],
                "params": params.total,
                "active_params": params.active,
                "flops_per_seq": m["flops"],
                "paper_gmacs": m["paper_gmacs"],
            }
        )
    routing = [
        {
            "model": name,
            "shape": m["shape"],
            "variant": m["variant"],
            "batch": batch,
            "layers": routing_of(m["model"], random_ids(m["model"].config.vocab_size, batch, p.seq)),
        }
        for name, m in models.items()
        if m["kind"] == "moe"
        for batch in p.batches
    ]

    students = [student_name(shape_name(*s), v) for s in p.shapes for v in (None, "")]  # dense and headline MoE
    bf16_models = [n for n in (MINILM, *students) if n in models]

    def cases_for(batch: int) -> dict[str, Callable[[], None]]:
        cases = {
            name: timed_forward(m, batch, p.seq)
            for name, m in models.items()
            if not (name == MPNET and batch == max(p.batches))
        }  # ~7 s a call: its own group below
        return cases | {f"{name} [bf16]": timed_forward(models[name], batch, p.seq, bf16=True) for name in bf16_models}

    groups = time_by_batch(p, cases_for, "cases")
    latency: list[dict] = []
    bf16_rows: list[dict] = []
    for batch, (times, faults) in groups.items():
        stats = summarize(times, faults)
        if batch == max(p.batches) and MPNET in models:
            log(f"  batch {batch}: {MPNET} alone x {p.repeats_mpnet_large} repeats ...")
            mpnet = {MPNET: timed_forward(models[MPNET], batch, p.seq)}
            stats |= summarize(*interleaved(mpnet, p.repeats_mpnet_large, warmup=1))
        for name, s in stats.items():
            base, bf16 = name.removesuffix(" [bf16]"), name.endswith(" [bf16]")
            latency.append(
                {
                    "model": base,
                    "batch": batch,
                    "dtype": "bf16" if bf16 else "fp32",
                    "malloc": "stock",
                    **s,
                    "seq_per_s": batch / (s["ms"] / 1e3),
                }
            )
        bf16_rows += [
            {"model": name, "batch": batch, "bf16_over_fp32": paired_ratio(times[f"{name} [bf16]"], times[name])}
            for name in bf16_models
        ]

    log("  peak memory of each model (one profiled call each) ...")
    attach_peak_memory(
        latency, [timed_forward(models[r["model"]], r["batch"], p.seq, r["dtype"] == "bf16") for r in latency]
    )
    return {
        "seq_len": p.seq,
        "batches": list(p.batches),
        "models": model_rows,
        "latency": latency,
        "bf16": bf16_rows,
        "router_balancing": balancing,
        "routing": routing,
        "pad_rows_per_expert": dispatch.PAD_ROWS_PER_EXPERT,
        "pad_tokens_per_row": 1 / dispatch.PAD_ROWS_PER_TOKEN,
        "moe_vs_dense_stock_malloc": moe_dense_ratios(p, models, groups, "stock"),
        "moe_vs_dense_bf16": bf16_ratios(p, groups),
        "notes": notes,
    }, models


def bench_student_ratios_tuned(p: Preset, models: dict) -> list[dict]:
    """The student groups again, after the allocator is tuned: the ratios the targets are checked on."""
    students = {name: m for name, m in models.items() if m["kind"] in ("dense", "moe")}
    groups = time_by_batch(
        p, lambda batch: {name: timed_forward(m, batch, p.seq) for name, m in students.items()}, "student cases"
    )
    return moe_dense_ratios(p, models, groups, "tuned")


def moe_dense_ratios(p: Preset, models: dict, groups: dict[int, tuple[dict, dict]], malloc: str) -> list[dict]:
    """Per shape and batch: paired MoE/dense latency ratio of every MoE variant (the unsuffixed keys are the
    balanced-router headline), the fix's own ratio (current / grouped dispatch), FLOPs ratios, the target."""
    rows = []
    for layers, hidden in p.shapes:
        shape = shape_name(layers, hidden)
        dense, moe = student_name(shape, None), student_name(shape, "")
        for batch in p.batches:
            times = groups[batch][0]
            target = TARGETS["latency_b1"] if batch == min(p.batches) else TARGETS["latency_b32"]
            row = {
                "shape": shape,
                "batch": batch,
                "malloc": malloc,
                "ratio_of_medians": median_ms(times[moe]) / median_ms(times[dense]),
                "dense_ms": median_ms(times[dense]),
            }
            for variant in MOE_VARIANTS:
                name = student_name(shape, variant)
                row[suffixed("latency_ratio", variant)] = paired_ratio(times[name], times[dense])
                row[suffixed("moe", variant) + "_ms"] = median_ms(times[name])
            before = times[student_name(shape, "grouped_dispatch")]
            row["current_over_grouped_dispatch"] = paired_ratio(times[moe], before)
            row["flops_ratio"] = models[moe]["flops"] / models[dense]["flops"]
            row |= {"target": target, "met": row["latency_ratio"] <= target}
            rows.append(row)
    return rows


def bf16_ratios(p: Preset, groups: dict[int, tuple[dict, dict]]) -> list[dict]:
    """Per shape and batch: paired MoE/dense latency ratio under bf16 autocast (stock malloc), with the target."""
    rows = []
    for layers, hidden in p.shapes:
        shape = shape_name(layers, hidden)
        for batch in p.batches:
            times = groups[batch][0]
            dense, moe = times[f"{student_name(shape, None)} [bf16]"], times[f"{student_name(shape, '')} [bf16]"]
            target = TARGETS["latency_b1"] if batch == min(p.batches) else TARGETS["latency_b32"]
            ratio = paired_ratio(moe, dense)
            rows.append(
                {
                    "shape": shape,
                    "batch": batch,
                    "latency_ratio": ratio,
                    "dense_ms": median_ms(dense),
                    "target": target,
                    "met": ratio <= target,
                }
            )
    return rows
