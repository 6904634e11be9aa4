"""The suite's text outputs: the headline (printed and quoted) and docs/performance.md, both from perf.json.

The page is regenerated whole on every run except the hand-written notes between NOTES_BEGIN and NOTES_END.
"""

from __future__ import annotations

import os
from pathlib import Path

NOTES_BEGIN, NOTES_END = "<!-- notes:begin -->", "<!-- notes:end -->"
REGIMES = {"": "balanced", "grouped_dispatch": "balanced, grouped dispatch forced", "random_routers": "random-init"}


def fmt_count(n: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def noisy(meta: dict) -> bool:
    """Busy machine: other processes used > 0.5 core on average during the run (or, where /proc/stat cannot
    tell, the 1-minute load was > 1.5 before it; that average still counts processes that just stopped)."""
    if meta.get("other_cores") is not None:
        return meta["other_cores"] > 0.5 or (meta.get("steal") or 0.0) > 0.1
    return meta["load_before"] > 1.5


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def met(flag: bool) -> str:
    return "met" if flag else "**MISSED**"


def groups_text(layers: list[dict]) -> str:
    """Group sizes and dispatch path per layer, e.g. "[34 28 39 27] padded; [32 35 30 31] padded"."""
    return "; ".join(f"[{' '.join(map(str, layer['groups']))}] {layer['path']}" for layer in layers)


def headline(perf: dict) -> list[str]:
    meta, inf = perf["meta"], perf["inference"]
    hw = meta["hardware"]
    other = meta.get("other_cores")
    lines = [f"hardware: {hw['cpu']} | {hw['cores']} cores, {hw['threads']} torch threads | torch {hw['torch']} | "
             f"{' '.join(hw['isa'])} | 1-min load {meta['load_before']:.2f} before, {meta['load_after']:.2f} after "
             f"(incl. this run's own threads)"
             + (f" | other processes {other:.2f} cores, steal {100 * meta['steal']:.1f}%" if other is not None else "")
             + ("  (NOISY)" if noisy(meta) else "")]
    for t in perf["targets"]:
        lines.append(f"{t['name']:<48} {t['value']:>7.3f}  (target <= {t['target']:.2f})  {met(t['met']).strip('*')}")
    for batch in inf["batches"]:
        rows = [r for r in inf["moe_vs_dense_tuned_malloc"] if r["batch"] == batch]
        lines.append(f"MoE/dense batch {batch}, balanced routers | grouped dispatch (before fix) | random routers: "
                     + ", ".join(f"{r['shape']} {r['latency_ratio']:.2f} | {r['latency_ratio_grouped_dispatch']:.2f}"
                                 f" | {r['latency_ratio_random_routers']:.2f}" for r in rows))
    tr = perf["training"]
    lines.append(f"distillation step {tr['student']} <- {tr['teacher']}, {tr['batch']}x{tr['seq']}: "
                 f"{tr['tokens_per_s_fp32']:,.0f} tokens/s fp32, {tr['tokens_per_s_bf16']:,.0f} bf16 autocast; "
                 f"teacher share {100 * tr['teacher_share_fp32']:.0f}% (fp32); teacher Q/K/V cached: "
                 f"{tr['tokens_per_s_cached_fp32']:,.0f} tokens/s fp32 (step time x{tr['cached_over_live_step_fp32']:.2f}), "
                 f"{tr['tokens_per_s_cached_bf16']:,.0f} bf16")
    dp = perf["dispatch"]
    d = {(r["mode"], r["variant"]): r for r in dp["rows"] if r["batch"] == dp["batch"]}
    lines.append(f"dispatch {dp['batch']}x{dp['seq']} E={dp['experts']}, inference ms (x sorted): " + ", ".join(
        f"{v} {d[('inference', v)]['ms']:.1f} ({d[('inference', v)]['ratio_vs_sorted']:.2f})"
        for v in ("sorted (ours)", "naive loop+masks", "one-hot einsum", "dense FFN (E=1)")))
    big = max(inf["batches"])
    names = {m["model"] for m in inf["models"]}
    thr = {r["model"]: r for r in inf["latency"] if r["batch"] == big and r["dtype"] == "fp32" and r["model"] in names}
    lines.append(f"throughput at batch {big} x {inf['seq_len']} (seq/s, stock malloc): " + ", ".join(
        f"{name} {thr[name]['seq_per_s']:.1f}" for name in thr))
    return lines


def read_notes(doc: Path) -> str:
    """The hand-written notes of an existing page ("" if none)."""
    text = doc.read_text() if doc.exists() else ""
    if NOTES_BEGIN not in text or NOTES_END not in text:
        return ""
    return text[text.index(NOTES_BEGIN) + len(NOTES_BEGIN):text.index(NOTES_END)].strip("\n")


def doc_header(perf: dict) -> list[str]:
    meta, inf = perf["meta"], perf["inference"]
    hw = meta["hardware"]
    other = meta.get("other_cores")
    busy_text = (f" Other processes used {other:.2f} cores on average during the run (all CPUs' busy time minus "
                 f"this process's, from /proc/stat; hypervisor steal {100 * meta['steal']:.1f}%); the load after "
                 "includes the benchmark's own threads." if other is not None else "")
    rb = inf["router_balancing"]
    cal = rb["calibration"]
    return [
        "# Performance", "",
        f"Generated by `{meta['command']}` on {meta['date']} in {meta['wall_time_s']:.0f} s "
        f"(every number and plot below comes from that one run; `{meta['json']}` holds them all).", "",
        f"**Machine:** {hw['cpu']}, {hw['cores']} cores ({hw['threads']} torch threads), {hw['ram_gib']} GiB RAM, "
        f"{' '.join(hw['isa'])}; Python {hw['python']}, torch {hw['torch']}, transformers {hw['transformers']}. "
        f"1-minute load average {meta['load_before']:.2f} before, {meta['load_after']:.2f} after the run." + busy_text
        + (" **The machine was busy: absolute times are inflated and noisier; the paired ratios are more robust.**"
           if noisy(meta) else "") + (" **SMOKE RUN: tiny shapes, not representative.**" if meta["smoke"] else ""), "",
        "## Headline", "", "```", *perf["headline"], "```", "",
        md_table(["target", "value", "limit", ""], [[t["name"], f"{t['value']:.3f}", f"<= {t['target']:.2f}",
                                                     met(t["met"])] for t in perf["targets"]]), "",
        "## How it is measured", "",
        "- Every case is warmed up, then all cases of a group run round-robin with the order rotated each round; a "
        "time is the median over rounds. A ratio of two cases is the **paired** ratio: the median over rounds of "
        "(a / b in the same round), robust to load bursts. Ratios are only taken between cases of one group of "
        "one run (`benchmarks/timing.py`, shared with `benchmarks/moe_layer.py`).",
        "- Inputs: random token ids, every token valid (no padding), eval mode, `torch.no_grad()`. Students are "
        "random-init `MiniMoEModel`s (heads of size 32, per-expert FFN width 4 x hidden, with pooler) whose router "
        "biases are balanced as described under *Routing*; teachers are the real packaged weights loaded with "
        "`AutoModel.from_pretrained` (default SDPA attention).",
        f"- FLOPs: `minimoe.flops.count_flops` (matmul FLOPs, 2 per multiply-add, router included) per sequence at "
        f"seq {inf['seq_len']}: the model's FLOPs, top-1 expert only (the zero rows the padded dispatch adds to "
        "equalise the expert groups are an execution cost, seen in the latencies, not model FLOPs).",
        f"- Peak memory: {meta['memory_method']}",
        f"- Allocator: {meta['allocator_note']}", "",
        "## Routing", "",
        "How evenly tokens spread over the experts decides which dispatch path runs and what it costs. A random-init "
        "router routes very unevenly; a distilled student, trained with the load-balance loss, routes real text near "
        "evenly (largest group 36-45 of 128 tokens, mean 32, measured on distilled students). Every MoE student is "
        "therefore timed in three regimes, same weights, in the same group as its dense twin:", "",
        "- **balanced routers**: the headline, every target is checked on it. The random-init student with only its "
        f"router biases moved (bias -= {rb['lr']} x (fraction routed to e - 1/E), at most {rb['max_steps']} steps, "
        f"on {cal['batch']} x {cal['seq']} random ids with seed {cal['seed']}, not the timed inputs), as "
        "auxiliary-loss-free load balancing does: parameters and FLOPs unchanged.",
        "- **grouped dispatch (before the fix)**: the same balanced student with `dispatch_mode = \"grouped\"`, which "
        "forces one matmul pair per expert group, the previous dispatch.",
        "- **random routers**: the random-init student as is, current dispatch.", "",
        "The current dispatch pads the groups to the largest and runs one batched matmul pair when that adds at most "
        f"{inf['pad_rows_per_expert']} rows per expert, or one row per expert per {inf['pad_tokens_per_row']:.0f} tokens "
        "when that is more; "
        "else one matmul pair per group. Group sizes per layer on the timed inputs, and the path each layer took:", "",
        md_table(["shape", "routers", "batch", "tokens per expert, per layer (path)"],
                 [[r["shape"], REGIMES[r["variant"]], r["batch"], groups_text(r["layers"])] for r in inf["routing"]
                  if r["variant"] != "grouped_dispatch"]), "",
    ]


def doc_inference(inf: dict, rel: dict[str, str]) -> list[str]:
    out = ["## Inference", "",
           f"Batch {inf['batches'][0]} and {inf['batches'][1]}, seq {inf['seq_len']}, fp32, stock glibc malloc (what a "
           "user gets by default); MoE students with balanced routers. Peak memory of one forward at that batch: "
           "tensor peak (profiler) and the rise of the process's peak RSS.", ""]
    lat = {(r["model"], r["batch"], r["dtype"]): r for r in inf["latency"]}
    b1, b2 = inf["batches"]
    rows = []
    for m in inf["models"]:
        r1, r2 = lat.get((m["model"], b1, "fp32")), lat.get((m["model"], b2, "fp32"))
        rows.append([m["model"], fmt_count(m["params"]), fmt_count(m["active_params"]),
                     f"{m['flops_per_seq'] / 1e9:.3f}",
                     f"{r1['ms']:.1f}" if r1 else "-", f"{r1['seq_per_s']:.0f}" if r1 else "-",
                     f"{r2['ms']:.1f}" if r2 else "-", f"{r2['seq_per_s']:.1f}" if r2 else "-",
                     f"{r2['tensor_peak_mb']:.0f}" if r2 and r2.get("tensor_peak_mb") is not None else "-",
                     f"{r2['rss_peak_mb']:.0f}" if r2 and r2.get("rss_peak_mb") is not None else "-"])
    out += [md_table(["model", "params", "active params", "GFLOPs/seq", f"ms @ b{b1}", f"seq/s @ b{b1}",
                      f"ms @ b{b2}", f"seq/s @ b{b2}", f"tensor peak MiB @ b{b2}", f"RSS rise MiB @ b{b2}"], rows), ""]
    out += [f"![inference latency]({rel['perf_inference']})", ""]
    if inf["notes"]:
        out += ["Notes: " + "; ".join(inf["notes"]), ""]

    out += ["### MiniMoE vs dense of the same active size", "",
            "Latency ratio = paired median of MoE (E=4) / dense (E=1) forward time, same shape, same group. "
            "`tuned` = after switching the allocator to keep freed memory mapped (compute vs compute; the targets "
            "are checked on these); `stock` = default glibc malloc, measured first in the same run. The bold column "
            "and the target use **balanced routers**; the before-fix and random-router columns are the other two "
            "regimes (see *Routing*) from the same groups.", ""]
    stock = {(r["shape"], r["batch"]): r for r in inf["moe_vs_dense_stock_malloc"]}
    rows = []
    for r in inf["moe_vs_dense_tuned_malloc"]:
        s = stock[(r["shape"], r["batch"])]
        rows.append([r["shape"], r["batch"], f"{r['dense_ms']:.2f}", f"{r['moe_ms']:.2f}",
                     f"**{r['latency_ratio']:.3f}**", f"<= {r['target']:.2f} {met(r['met'])}",
                     f"{r['latency_ratio_grouped_dispatch']:.3f}", f"{r['latency_ratio_random_routers']:.3f}",
                     f"{s['latency_ratio']:.3f}", f"{r['flops_ratio']:.4f}"])
    out += [md_table(["shape", "batch", "dense ms", "MoE ms (balanced)", "MoE/dense, balanced routers", "target",
                      "MoE/dense, before fix (grouped)", "MoE/dense, random routers",
                      "MoE/dense, balanced, stock malloc", "FLOPs ratio"], rows), ""]
    out += [f"![MoE/dense ratios]({rel['perf_moe_dense_ratio']})", ""]

    out += ["### Dispatch fix: before/after", "",
            "The same balanced-router MoE students, tuned malloc, same groups: *before* = grouped dispatch forced "
            "(one matmul pair per expert group, the previous behaviour), *after* = the current dispatch (padded "
            "batched path when the groups are near equal, else grouped). Largest group / mean over the layers on "
            "the timed input, and the path the current dispatch took per layer.", ""]
    routing = {(r["shape"], r["variant"], r["batch"]): r["layers"] for r in inf["routing"]}
    rows = []
    for r in inf["moe_vs_dense_tuned_malloc"]:
        layers = routing[(r["shape"], "", r["batch"])]  # the balanced-router student
        spread = max(max(layer["groups"]) * len(layer["groups"]) / sum(layer["groups"]) for layer in layers)
        rows.append([r["shape"], r["batch"], f"{spread:.2f}", " ".join(layer["path"] for layer in layers),
                     f"{r['moe_grouped_dispatch_ms']:.2f}", f"{r['moe_ms']:.2f}",
                     f"{r['current_over_grouped_dispatch']:.3f}", f"{r['latency_ratio_grouped_dispatch']:.3f}",
                     f"{r['latency_ratio']:.3f}"])
    out += [md_table(["shape", "batch", "max/mean group", "path now (per layer)", "before ms", "after ms",
                      "after / before (paired)", "MoE/dense before", "MoE/dense after"], rows), ""]

    out += ["### bf16 autocast (inference)", "",
            "`torch.autocast(\"cpu\", dtype=torch.bfloat16)` around the forward, fp32 weights; paired with the fp32 "
            "case of the same group (stock malloc).", ""]
    out += [md_table(["model", "batch", "bf16 ms", "bf16 / fp32 time"],
                     [[r["model"], r["batch"], f"{lat[(r['model'], r['batch'], 'bf16')]['ms']:.1f}",
                       f"{r['bf16_over_fp32']:.3f}"] for r in inf["bf16"]]), ""]
    return out


def doc_scaling(sc: dict, rel: dict[str, str]) -> list[str]:
    ex = sc["experts"]
    out = ["## How cost grows (the MoE FFN layer)", "",
           f"`MoEFeedForward` alone (router, dispatch, experts, dropout, residual, LayerNorm), hidden {sc['hidden']}, "
           f"per-expert width {sc['expert_width']}, eval, tuned malloc, routers balanced (as under *Routing*, on the "
           "layer's own input distribution, a different draw from the timed input). Peak memory = the profiler's "
           "peak of live tensor bytes allocated during one forward (the process RSS rise is in the JSON but reads ~0 "
           "here: with the tuned allocator freed blocks stay mapped and are reused).", "",
           f"### vs number of experts ({ex['batch']} x {ex['seq']} tokens)", "",
           "Balanced and random-init routers in one group; the target is checked on balanced.", ""]
    out += [md_table(["E", "ms, balanced", "time / time(E=1), balanced", "expert load, balanced (path)",
                      "ms, random routers", "time / time(E=1), random", "expert load, random (path)",
                      "tensor peak MiB"],
                     [[r["experts"], f"{r['ms']:.1f}", f"{r['ratio_vs_e1']:.3f}",
                       groups_text([{"groups": r["load"], "path": r["dispatch_path"] or "dense"}]),
                       f"{r['ms_random_routers']:.1f}", f"{r['ratio_vs_e1_random_routers']:.3f}",
                       groups_text([{"groups": r["load_random_routers"],
                                     "path": r["dispatch_path_random_routers"] or "dense"}]),
                       f"{r['tensor_peak_mb']:.1f}"] for r in ex["rows"]]), ""]
    out += [f"![layer vs experts]({rel['perf_layer_experts']})", ""]
    for key in ("seq", "batch"):
        d = sc[key]
        fixed = ", ".join(f"{k} {v}" for k, v in d["fixed"].items())
        out += [f"### vs {'sequence length' if key == 'seq' else 'batch size'} ({fixed})", ""]
        out += [md_table([key, "E", "ms", "us/token", "MoE/dense", "tensor peak MiB"],
                         [[r[key], r["experts"], f"{r['ms']:.2f}", f"{r['us_per_token']:.2f}",
                           f"{r['moe_over_dense']:.3f}" if r["experts"] == 4 else "-",
                           f"{r['tensor_peak_mb']:.1f}"] for r in d["rows"]]), ""]
        out += [f"![layer vs {key}]({rel[f'perf_layer_{key}']})", ""]
    return out


def doc_training(tr: dict, rel: dict[str, str]) -> list[str]:
    out = ["## Training: task-agnostic distillation step", "",
           f"One optimizer step of `RelationDistillation` (teacher `{tr['teacher']}`, real weights, loaded as "
           f"`minimoe distill` loads it: {tr['teacher_attention']}; student {tr['student']} with the relation head; "
           f"{tr['optimizer']}) on batch {tr['batch']} x seq {tr['seq']} = {tr['tokens_per_step']} tokens, tuned "
           "malloc. bf16 = `torch.autocast(\"cpu\", dtype=torch.bfloat16)` around the forward (teacher included), "
           "as accelerate's `mixed_precision=bf16` does. *teacher cached* = the step fed the teacher's Q/K/V as "
           "`--cache_teacher` does (float16 [B, T, 3, H], computed once per corpus), so the teacher does not run. "
           "The student is freshly initialised (random-init routers), as at the start of distillation.", ""]
    out += [md_table(["case", "ms", "tokens/s"], [[r["case"], f"{r['ms']:.1f}", f"{r['tokens_per_s']:,.0f}"]
                                                  for r in tr["rows"]]), ""]
    out += [md_table(["quantity (paired)", "value"], [
        ["teacher share of the step, fp32", f"{100 * tr['teacher_share_fp32']:.1f}%"],
        ["teacher share of the step, bf16", f"{100 * tr['teacher_share_bf16']:.1f}%"],
        ["cached / live teacher step time, fp32", f"{tr['cached_over_live_step_fp32']:.3f}"],
        ["cached / live teacher step time, bf16", f"{tr['cached_over_live_step_bf16']:.3f}"],
        ["bf16 / fp32 step time", f"{tr['bf16_over_fp32_step']:.3f}"],
        ["bf16 / fp32 teacher time", f"{tr['bf16_over_fp32_teacher']:.3f}"],
        ["teacher sdpa / eager time", f"{tr['sdpa_over_eager_teacher']:.3f}"],
        ["MoE / dense student step time (fp32)", f"{tr['moe_over_dense_step']:.3f}"],
    ]), ""]
    return out + [f"![training step]({rel['perf_training']})", ""]


def doc_dispatch(dp: dict, rel: dict[str, str]) -> list[str]:
    out = ["## Dispatch: sorted vs naive vs one-hot", "",
           f"The same `MoEFeedForward` weights and inputs, hidden {dp['hidden']}, E={dp['experts']}, "
           f"{dp['routing']}, batch {' and '.join(map(str, dp['batches']))} x {dp['seq']} tokens (expert load "
           + "; ".join(f"batch {b}: {v}, sorted took the {dp['sorted_dispatch_path'][b]} path"
                       for b, v in dp["load"].items())
           + "), tuned malloc. *sorted*: ours (argsort by expert, then one batched matmul pair over the zero-padded "
           "groups when they are near equal, else one matmul pair per contiguous group; unsort). *naive*: a Python "
           "loop over experts with a boolean mask each (`y[mask] = expert(x[mask])`, the authors' release). "
           "*one-hot*: every expert on every token (einsum over stacked weights), combined with a one-hot [N, E] "
           f"mask. Outputs equal to sorted: {dp['outputs_match_sorted']}.", ""]
    out += [md_table(["batch", "mode", "variant", "ms", "x sorted", "x dense FFN", "tensor peak MiB"],
                     [[r["batch"], r["mode"], r["variant"], f"{r['ms']:.2f}", f"{r['ratio_vs_sorted']:.3f}",
                       f"{r['ratio_vs_dense']:.3f}",
                       f"{r['tensor_peak_mb']:.1f}" if r.get("tensor_peak_mb") is not None else "-"]
                      for r in dp["rows"]]), ""]
    return out + [f"![dispatch]({rel['perf_dispatch']})", ""]


def doc_profiles(profiles: list[dict]) -> list[str]:
    if not profiles:
        return []
    out = ["## Profiles of missed targets", "",
           "torch.profiler self-CPU time per call, the slower case minus the faster, top ops by extra time "
           "(op names are aten ops; `[python]`-level overhead shows up as time outside them). Students with "
           "balanced routers, as the targets are checked.", ""]
    for prof in profiles:
        a, b = prof["labels"]
        out += [f"### {prof['target']}", "",
                f"total self CPU per call: {a} {prof['total_us'][a]:.0f} us, {b} {prof['total_us'][b]:.0f} us", ""]
        out += [md_table(["op", f"{a} us", f"{b} us", "extra us", f"{b} calls", f"{a} calls"],
                         [[r["op"], f"{r[f'{a}_us']:.0f}", f"{r[f'{b}_us']:.0f}", f"{r['extra_us']:.0f}",
                           f"{r[f'{b}_calls']:.0f}", f"{r[f'{a}_calls']:.0f}"] for r in prof["top_extra_ops"]]), ""]
        probe = prof.get("expert_matmul_probe")
        if "ffn_weights_mib" in prof:
            fw, w = prof["ffn_weights_mib"], prof["weights_mib"]
            out += [f"Weights read per forward: dense {w['dense']:.1f} MiB (FFN {fw['dense']:.1f}), MoE "
                    f"{w['moe']:.1f} MiB (FFN {fw['moe']:.1f}: every expert gets some of the "
                    f"{probe['tokens'] if probe else 'N'} tokens); last-level cache "
                    f"{prof.get('l3_cache') or 'unknown'}.", ""]
        if probe:
            out += [f"Expert-matmul probe (FFN matmuls only, hidden {probe['hidden']}, {probe['tokens']} tokens, "
                    f"E={probe['experts']}, one call pair per expert as the grouped path does; *same weights* = the "
                    "same calls all on expert 0's weights, i.e. 1/E of the weight traffic):", ""]
            out += [md_table(["case", "us", "x dense"], [[q["case"], f"{q['us']:.0f}", f"{q['ratio_vs_dense']:.3f}"]
                                                        for q in probe["rows"]]), ""]
    return out


def write_doc(perf: dict, doc: Path, img_paths: list[Path]) -> None:
    """docs/performance.md from `perf`, keeping the hand-written notes of the existing page."""
    rel = {p.stem: os.path.relpath(p, doc.parent) for p in img_paths}
    notes = read_notes(doc)
    out = [*doc_header(perf), *doc_inference(perf["inference"], rel), *doc_scaling(perf["scaling"], rel),
           *doc_training(perf["training"], rel), *doc_dispatch(perf["dispatch"], rel), *doc_profiles(perf["profiles"])]
    out += ["## Findings and proposed fixes", "",
            "Hand-written from the run above; `benchmarks/run.py` keeps this section when it regenerates the page.",
            "", NOTES_BEGIN, notes or "_(none yet)_", NOTES_END, ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(out))
