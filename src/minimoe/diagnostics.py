"""Expert diagnostics of a MiniMoE model: does it use its experts, and do they differ?

Per MoE layer, on real text (padding left out): the load per expert, the router's mean top probability and
entropy, the cosine similarity of the experts' weights (and their distance from an initialisation), the
relative change of the final hidden states when every token of the layer is forced to one expert, and the
tokens each expert takes most. Router decisions come from the model's own `router_logits` output, and forcing
goes through a hook on the router, so nothing here reimplements the dispatch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from minimoe.errors import MiniMoEError
from minimoe.files import atomic_write_text
from minimoe.inference import device_batches, eval_mode
from minimoe.modeling.moe import MoEFeedForward
from minimoe.report import markdown_rows, plot_expert_diagnostics


def moe_layers(model: nn.Module) -> list[MoEFeedForward]:
    """The routed FFN layers of a MiniMoE model (any head); a clear error for dense or foreign models."""
    if getattr(model.config, "model_type", "") != "minimoe":
        raise MiniMoEError(f"{model.config.model_type!r} is not a MiniMoE model: there are no experts to inspect")
    if model.config.num_experts < 2:
        raise MiniMoEError("this is a dense student (num_experts = 1): there are no experts or router to inspect")
    return [m for m in model.modules() if isinstance(m, MoEFeedForward)]


@contextmanager
def forced_expert(ffn: MoEFeedForward, expert: int) -> Iterator[None]:
    """Within the block `ffn` sends every token to `expert`, with the gate the token had anyway.

    A forward hook on the router swaps each token's top logit with the logit of `expert`: the softmax keeps
    its values (so the gate, the top probability, is unchanged) and only the chosen expert moves. Identical
    experts therefore give exactly the unforced output.
    """

    def swap(module: nn.Module, inputs: tuple, logits: torch.Tensor) -> torch.Tensor:
        top = logits.argmax(dim=-1, keepdim=True)  # [N, 1]
        chosen = torch.full_like(top, expert)  # [N, 1]
        swapped = logits.clone()  # [N, E]
        swapped.scatter_(-1, top, logits.gather(-1, chosen))
        return swapped.scatter_(-1, chosen, logits.gather(-1, top))

    handle = ffn.router.register_forward_hook(swap)
    try:
        yield
    finally:
        handle.remove()


def encode(model: nn.Module, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Final hidden states [n, H] and each layer's router probabilities [n, E] of the non-padding tokens."""
    encoder = getattr(model, "base_model", model)
    out = encoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch.get("token_type_ids")
    )
    keep = batch["attention_mask"].bool()  # [B, T]
    probs = [logits[keep].float().softmax(dim=-1) for logits in out.router_logits]  # L x [n, E]
    return out.last_hidden_state[keep].float(), probs


def weight_cosine(weights: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity [E, E] of stacked expert weights [E, ...] (each flattened)."""
    flat = F.normalize(weights.detach().flatten(1).float(), dim=1)  # [E, D]
    return flat @ flat.T


def expert_weights(ffn: MoEFeedForward) -> torch.Tensor:
    """All of each expert's weights and biases as one vector per expert: [E, D]."""
    return torch.cat([p.detach().flatten(1).float() for p in (ffn.w_in, ffn.b_in, ffn.w_out, ffn.b_out)], dim=1)


def mean_off_diagonal(matrix: torch.Tensor) -> float:
    """Mean of the off-diagonal entries of a square matrix (the average pair)."""
    E = matrix.shape[0]
    return float((matrix.sum() - matrix.diagonal().sum()) / (E * (E - 1)))


@torch.no_grad()
def diagnose(
    model: nn.Module,
    batches: Sequence[dict],
    tokenizer=None,
    init: nn.Module | None = None,
    top_tokens: int = 8,
    heat_tokens: int = 24,
) -> dict:
    """The diagnostics of every MoE layer of `model` on `batches` (dicts of [B, T] tensors on the model's device).

    `init` (a model of the same shape, e.g. the moefy initialisation) adds each expert's relative distance
    from it; `tokenizer` decodes the top tokens (ids otherwise).
    """
    layers = moe_layers(model)
    E = layers[0].num_experts
    with eval_mode(model):
        encoded = [encode(model, b) for b in batches]
        hidden = [h for h, _ in encoded]  # batches x [n, H]
        probs = [torch.cat([p[i] for _, p in encoded]) for i in range(len(layers))]  # L x [N, E]
        keep = [b["attention_mask"].bool() for b in batches]
        ids = torch.cat([b["input_ids"][k] for b, k in zip(batches, keep)]).cpu()  # [N]
        norm = math.sqrt(sum(float(h.pow(2).sum()) for h in hidden))
        forced = []
        for ffn in layers:
            changes = []
            for e in range(E):
                with forced_expert(ffn, e):
                    moved = sum(float((encode(model, b)[0] - h).pow(2).sum()) for b, h in zip(batches, hidden))
                changes.append(math.sqrt(moved) / max(norm, 1e-12))
            forced.append(changes)

    names = (lambda i: tokenizer.convert_ids_to_tokens(i)) if tokenizer is not None else str
    vocab_counts = torch.bincount(ids)
    frequent = vocab_counts.argsort(descending=True)[:heat_tokens]
    frequent = frequent[vocab_counts[frequent] > 0]  # [K] the most frequent token ids
    report = {"num_experts": E, "tokens": int(ids.numel()), "sequences": sum(len(b["input_ids"]) for b in batches)}
    report["layers"], heat = [], []
    for i, (ffn, p) in enumerate(zip(layers, probs)):
        chosen = p.argmax(dim=-1).cpu()  # [N]
        top_p = p.max(dim=-1).values  # [N]
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=-1)  # [N]
        cosine_in = weight_cosine(ffn.w_in)  # [E, E]
        per_expert = torch.zeros(E, vocab_counts.numel()).index_put_(
            (chosen, ids), torch.ones(len(ids)), accumulate=True
        )
        layer = {
            "layer": i,
            "load": (torch.bincount(chosen, minlength=E) / max(len(chosen), 1)).tolist(),
            "top_prob": float(top_p.mean()),
            "entropy": float(entropy.mean()),
            "entropy_ratio": float(entropy.mean()) / math.log(E),
            "cosine_w_in": cosine_in.tolist(),
            "mean_cosine_w_in": mean_off_diagonal(cosine_in),
            "mean_cosine_w_out": mean_off_diagonal(weight_cosine(ffn.w_out)),
            "forced_change": forced[i],
            "top_tokens": [
                [
                    [names(int(t)), int(per_expert[e, t])]
                    for t in per_expert[e].argsort(descending=True)[:top_tokens]
                    if per_expert[e, t] > 0
                ]
                for e in range(E)
            ],
        }
        if init is not None:
            start = expert_weights(moe_layers(init)[i])  # [E, D]
            layer["init_distance"] = (
                (expert_weights(ffn).cpu() - start.cpu()).norm(dim=1) / start.cpu().norm(dim=1)
            ).tolist()
        report["layers"].append(layer)
        heat.append((per_expert[:, frequent] / vocab_counts[frequent].clamp_min(1)).T)  # [K, E]
    report["heatmap"] = {
        "tokens": [names(int(t)) for t in frequent],
        "fractions": torch.stack(heat).tolist(),
    }  # [L, K, E]
    return report


def summary_rows(report: dict) -> tuple[list[str], list[list]]:
    """The per-layer table: header and rows (percentages and 3-digit ratios)."""
    header = ["layer", "load per expert (%)", "top prob", "entropy / ln E", "cos(w_in)", "forced change (min-max)"]
    with_init = "init_distance" in report["layers"][0]
    header += ["distance from init"] if with_init else []
    rows = []
    for layer in report["layers"]:
        row = [
            layer["layer"],
            " ".join(f"{100 * x:.0f}" for x in layer["load"]),
            f"{layer['top_prob']:.3f}",
            f"{layer['entropy_ratio']:.3f}",
            f"{layer['mean_cosine_w_in']:.3f}",
            f"{min(layer['forced_change']):.3f}-{max(layer['forced_change']):.3f}",
        ]
        if with_init:
            row.append(f"{sum(layer['init_distance']) / len(layer['init_distance']):.3f}")
        rows.append(row)
    return header, rows


def inspect_model(
    model: nn.Module, tokenizer, data: Dataset, collate, out_dir: str | Path, init: nn.Module | None = None, **kw
) -> dict:
    """Diagnose `model` on `data`, print the table, write inspect.json and inspect.png under `out_dir`."""
    device = next(model.parameters()).device
    loader = DataLoader(data, batch_size=kw.pop("batch_size", 32), shuffle=False, collate_fn=collate)
    batches = list(device_batches(loader, device))
    report = diagnose(model, batches, tokenizer, init=init, **kw)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "inspect.json", json.dumps(report, indent=1))
    plot_expert_diagnostics(report, out / "inspect.png")
    print(f"\nexpert diagnostics ({report['sequences']} sequences, {report['tokens']} tokens):")
    print(markdown_rows(*summary_rows(report)))
    for layer in report["layers"]:
        tops = "; ".join(f"e{e}: " + " ".join(t for t, _ in toks[:5]) for e, toks in enumerate(layer["top_tokens"]))
        print(f"layer {layer['layer']} top tokens  {tops}")
    return report
