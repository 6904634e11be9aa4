"""Training: throughput of one task-agnostic distillation step from the real all-MiniLM-L6-v2 teacher, the
share of the step spent in the teacher, teacher Q/K/V live vs cached (`--cache_teacher`), fp32 vs bf16
autocast, eager vs SDPA teacher attention; and one fine-tuning step (classifier, short sentences), MoE vs dense."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from timing import interleaved, median_ms, paired_ratio

from .models import random_ids, shape_name
from .presets import MINILM, Preset, log
from .routing import CALIBRATION_SEED, balance_routers_

FINETUNE_PARTS = ("forward", "backward", "clip", "optimizer")  # the parts of a fine-tuning step timed apart


def finetune_cases(p: Preset, vocab_size: int) -> tuple[dict[str, Callable[[], None]], dict[str, dict], dict[str, int]]:
    """One `minimoe finetune` step (TaskObjective: cross-entropy + balance loss, fused AdamW, grad clip 1.0) of a
    3-way classifier at batch train_tokens[0] x each finetune_seqs: dense, and MoE with balanced routers (as a
    distilled student's, the target) and with random-init routers (uneven groups). Every call also appends the
    seconds of each of FINETUNE_PARTS to parts[case]; params[case] is the model's parameter count (clipping and
    AdamW visit them all, whatever the active FLOPs)."""
    from minimoe.modeling import MiniMoEConfig, MiniMoEForSequenceClassification
    from minimoe.training.objectives import TaskObjective
    from minimoe.training.trainer import make_optimizer

    L, H, E = p.train_shape
    B = p.train_tokens[0]
    cases, parts, params = {}, {}, {}
    for experts, routers in ((E, "balanced"), (E, "random"), (1, "")):
        torch.manual_seed(0)
        config = MiniMoEConfig.for_student(L, H, experts, vocab_size=vocab_size, num_labels=3)
        model = MiniMoEForSequenceClassification(config)
        if routers == "balanced":
            calibration = random_ids(vocab_size, *p.balance_tokens, seed=CALIBRATION_SEED)
            balance_routers_(model, calibration, p.balance_steps, p.balance_lr)
        objective = TaskObjective(model, False, 0.0, 1.0).train()
        optimizer = make_optimizer(objective, 0.01, 2e-4, torch.device("cpu"))  # as the trainer builds it
        for T in p.finetune_seqs:
            ids = random_ids(vocab_size, B, T, seed=4)
            labels = torch.arange(B) % 3
            name = finetune_case(L, H, experts, B, T, routers)
            parts[name] = {part: [] for part in FINETUNE_PARTS}
            params[name] = sum(q.numel() for q in objective.parameters())

            def run(objective=objective, optimizer=optimizer, ids=ids, labels=labels, spent=parts[name]) -> None:
                t0 = time.perf_counter()
                loss = objective(labels, input_ids=ids, attention_mask=torch.ones_like(ids))["loss"]
                t1 = time.perf_counter()
                loss.backward()
                t2 = time.perf_counter()
                torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
                t3 = time.perf_counter()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                t4 = time.perf_counter()
                for part, seconds in zip(FINETUNE_PARTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    spent[part].append(seconds)

            cases[name] = run
    return cases, parts, params


def finetune_parts(moe: dict[str, list[float]], dense: dict[str, list[float]], repeats: int) -> list[dict]:
    """Per part of the fine-tuning step: median ms of each model and the paired MoE/dense ratio, over the timed
    rounds (the warmup calls come first in each list and are left out)."""
    return [
        {
            "part": part,
            "dense_ms": median_ms(dense[part][-repeats:]),
            "moe_ms": median_ms(moe[part][-repeats:]),
            "moe_over_dense": paired_ratio(moe[part][-repeats:], dense[part][-repeats:]),
        }
        for part in FINETUNE_PARTS
    ]


def finetune_case(layers: int, hidden: int, experts: int, batch: int, seq: int, routers: str = "") -> str:
    kind = "dense" if experts == 1 else f"E={experts} {routers} routers"
    return f"fine-tune step {shape_name(layers, hidden)} {kind} {batch}x{seq}"


def bench_training(p: Preset) -> dict:
    """MoE and dense student steps and the teacher's forward alone, one interleaved group, tuned malloc."""
    from transformers import AutoModel

    from minimoe.assets.fetch import fetch_teacher
    from minimoe.distill.losses import choose_relation_heads
    from minimoe.distill.teachers import Teacher, load_teacher
    from minimoe.modeling import init_student
    from minimoe.training.distillation import StudentConfig, student_config
    from minimoe.training.objectives import RelationDistillation
    from minimoe.training.teacher_cache import packed_qkv
    from minimoe.training.trainer import make_optimizer

    path = fetch_teacher(MINILM)
    teacher = load_teacher(path)  # eager attention, as `minimoe distill` loads it
    teacher_sdpa = Teacher(AutoModel.from_pretrained(path, attn_implementation="sdpa"), name=f"{MINILM} (sdpa)")
    L, H, E = p.train_shape
    B, T = p.train_tokens
    ids = random_ids(teacher.vocab_size, B, T, seed=3)
    mask = torch.ones_like(ids)

    def objective_for(experts: int):
        student = init_student(student_config(teacher, StudentConfig(layers=L, hidden=H, experts=experts)), seed=0)
        heads = choose_relation_heads(teacher.hidden_size, H, 32)
        objective = RelationDistillation(student, teacher, heads, -1, "head").train()
        optimizer = make_optimizer(objective, 0.01, 1e-4, torch.device("cpu"))
        return objective, optimizer

    def step_fn(objective, optimizer, bf16: bool, teacher_qkv: torch.Tensor | None = None) -> Callable[[], None]:
        params = [q for q in objective.parameters() if q.requires_grad]

        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = objective(ids, mask, teacher_qkv=teacher_qkv)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return run

    def teacher_fn(t, bf16: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                t.qkv(ids, mask, layer=-1)

        return run

    moe_obj, moe_opt = objective_for(E)
    dense_obj, dense_opt = objective_for(1)
    with torch.no_grad():  # what the teacher cache hands the step: float16 [B, T, 3, H]
        cached = packed_qkv(teacher, ids, mask)
    student_name = f"{shape_name(L, H)} E={E}"
    cases = {
        f"step {student_name} fp32": step_fn(moe_obj, moe_opt, False),
        f"step {student_name} bf16": step_fn(moe_obj, moe_opt, True),
        f"step {student_name} fp32, teacher cached": step_fn(moe_obj, moe_opt, False, cached),
        f"step {student_name} bf16, teacher cached": step_fn(moe_obj, moe_opt, True, cached),
        f"step {shape_name(L, H)} dense fp32": step_fn(dense_obj, dense_opt, False),
        "teacher.qkv fp32 (eager)": teacher_fn(teacher, False),
        "teacher.qkv bf16 (eager)": teacher_fn(teacher, True),
        "teacher.qkv fp32 (sdpa)": teacher_fn(teacher_sdpa, False),
    }
    log(f"  {len(cases)} cases at {B}x{T} x {p.repeats_train} interleaved repeats ...")
    times, _ = interleaved(cases, p.repeats_train, warmup=2)
    tokens = B * T
    rows = [{"case": k, "ms": median_ms(t), "tokens_per_s": tokens / (median_ms(t) / 1e3)} for k, t in times.items()]
    # Fine-tuning steps in a group of their own: in training a step follows a step of the same small model,
    # not a teacher forward and a distillation step, which leave the caches to other weights.
    ft_cases, ft_parts, ft_params = finetune_cases(p, teacher.vocab_size)
    log(f"  {len(ft_cases)} fine-tuning cases x {p.repeats_train} interleaved repeats ...")
    ft_times, _ = interleaved(ft_cases, p.repeats_train, warmup=2)
    seq_of = {k: int(k.rsplit("x", 1)[1]) for k in ft_times}  # case names end in "BxT"
    rows += [
        {"case": k, "ms": median_ms(t), "tokens_per_s": B * seq_of[k] / (median_ms(t) / 1e3)}
        for k, t in ft_times.items()
    ]
    times |= ft_times
    s32, s16 = times[f"step {student_name} fp32"], times[f"step {student_name} bf16"]
    c32, c16 = times[f"step {student_name} fp32, teacher cached"], times[f"step {student_name} bf16, teacher cached"]

    def finetune_summary(T: int) -> dict:
        """MoE/dense fine-tuning step at B x T: whole-step ratios, parameter counts, and the step by part."""
        moe, random, dense = (finetune_case(L, H, e, B, T, r) for e, r in ((E, "balanced"), (E, "random"), (1, "")))
        return {
            "batch": B,
            "seq": T,
            "moe_over_dense_step": paired_ratio(times[moe], times[dense]),
            "moe_random_routers_over_dense_step": paired_ratio(times[random], times[dense]),
            "params_moe": ft_params[moe],
            "params_dense": ft_params[dense],
            "parts": finetune_parts(ft_parts[moe], ft_parts[dense], p.repeats_train),
        }

    return {
        "teacher": MINILM,
        "teacher_attention": "eager (as load_teacher)",
        "student": student_name,
        "batch": B,
        "seq": T,
        "tokens_per_step": tokens,
        "optimizer": "fused AdamW + grad clip 5.0",
        "rows": rows,
        "tokens_per_s_fp32": tokens / statistics.median(s32),
        "tokens_per_s_bf16": tokens / statistics.median(s16),
        "tokens_per_s_cached_fp32": tokens / statistics.median(c32),
        "tokens_per_s_cached_bf16": tokens / statistics.median(c16),
        "cached_over_live_step_fp32": paired_ratio(c32, s32),
        "cached_over_live_step_bf16": paired_ratio(c16, s16),
        "teacher_share_fp32": paired_ratio(times["teacher.qkv fp32 (eager)"], s32),
        "teacher_share_bf16": paired_ratio(times["teacher.qkv bf16 (eager)"], s16),
        "bf16_over_fp32_step": paired_ratio(s16, s32),
        "bf16_over_fp32_teacher": paired_ratio(times["teacher.qkv bf16 (eager)"], times["teacher.qkv fp32 (eager)"]),
        "sdpa_over_eager_teacher": paired_ratio(times["teacher.qkv fp32 (sdpa)"], times["teacher.qkv fp32 (eager)"]),
        "moe_over_dense_step": paired_ratio(s32, times[f"step {shape_name(L, H)} dense fp32"]),
        "finetune": [finetune_summary(T) for T in p.finetune_seqs],
    }
