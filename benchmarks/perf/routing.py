"""Routing regimes of the timed MoE models: balanced routers (as a trained student's), and which dispatch ran.

A random-init router sends tokens to experts very unevenly (e.g. groups [27, 57, 34, 10] of 128 tokens);
a distilled student, trained with the load-balance loss, routes real text near evenly. `balance_routers_`
emulates the latter by moving router biases only. `record_routing` reports the group sizes and the
dispatch path `MoEFeedForward.dispatch` took; `force_grouped_dispatch_` restores the dispatch before the
padded path existed (one matmul pair per expert group), for before/after comparisons.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from minimoe.inference import eval_mode
from minimoe.modeling import MoEFeedForward, dispatch

CALIBRATION_SEED = 1234  # router-balancing inputs; the timed inputs use other seeds


def moe_layers(model: nn.Module) -> list[MoEFeedForward]:
    """Every routed (E > 1) MoE FFN of `model`, the model itself included, in forward order."""
    return [m for m in model.modules() if isinstance(m, MoEFeedForward) and m.router is not None]


def _noting_path(fn: Callable, path: str, records: dict[int, dict]) -> Callable:
    """Dispatch strategy `fn` that first sets records[id(layer)]["path"] = path for the layers being recorded."""

    def call(ffn, *args):
        if id(ffn) in records:
            records[id(ffn)]["path"] = path
        return fn(ffn, *args)

    return call


@contextlib.contextmanager
def record_routing(model: nn.Module) -> Iterator[list[dict]]:
    """Per routed layer, {"groups": tokens per expert [E], "path": "padded" | "grouped" | ...} of the latest forward.

    The path is read off the call itself (the strategies of `minimoe.modeling.dispatch` are wrapped for the
    duration), not re-derived from the threshold rule, so it stays true if the rule changes.
    """
    layers = moe_layers(model)
    records = [{"groups": None, "path": None} for _ in layers]
    by_layer = {id(layer): record for layer, record in zip(layers, records)}
    handles = []
    for layer, record in zip(layers, records):

        def count(module, args, output, record=record) -> None:
            logits = output[1]  # [B, T, E]
            record["groups"] = torch.bincount(logits.argmax(dim=-1).flatten(), minlength=module.num_experts)  # [E]

        handles.append(layer.register_forward_hook(count))
    saved = dict(dispatch.DISPATCH), {name: getattr(dispatch, name) for name in dispatch.DISPATCH}
    for name, fn in saved[1].items():  # the module names (what `auto` calls) and the registry (forced modes)
        wrapped = _noting_path(fn, name, by_layer)
        setattr(dispatch, name, wrapped)
        if name != "auto":
            dispatch.DISPATCH[name] = wrapped
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()
        dispatch.DISPATCH.update(saved[0])
        for name, fn in saved[1].items():
            setattr(dispatch, name, fn)


def routing_of(model: nn.Module, inputs: torch.Tensor) -> list[dict]:
    """Group sizes and dispatch path per routed layer for one no-grad forward `model(inputs)`."""
    with record_routing(model) as records, torch.no_grad():
        model(inputs)
    return [{"groups": r["groups"].tolist(), "path": r["path"]} for r in records]


@torch.no_grad()
def balance_routers_(
    model: nn.Module, inputs: torch.Tensor, steps: int = 50, lr: float = 0.5, tol: float = 0.05
) -> dict:
    """Nudge every router's bias until `inputs` route near evenly: emulates the balance of a trained student.

    Each step runs `model(inputs)` and moves each routed layer's `router.bias` by -lr * (fraction of tokens
    routed to e - 1/E), as auxiliary-loss-free load balancing does; stops early once no group is more than
    `tol` (relative) off the mean. Only router biases change, so FLOPs and parameter counts are unchanged.
    Returns the steps run and the final group sizes per layer on `inputs`.
    """
    layers = moe_layers(model)
    step = 0
    with eval_mode(model), record_routing(model) as records:
        model(inputs)
        while layers and step < steps:
            fractions = [r["groups"].float() / r["groups"].sum() for r in records]  # per layer [E]
            if max(float((f * len(f) - 1).abs().max()) for f in fractions) <= tol:
                break
            for layer, fraction in zip(layers, fractions):
                layer.router.bias -= lr * (fraction - 1 / layer.num_experts)
            model(inputs)
            step += 1
    return {"steps": step, "groups": [r["groups"].tolist() for r in records]}


def force_grouped_dispatch_(model: nn.Module) -> nn.Module:
    """Make every MoE layer of `model` take the grouped strategy (one matmul pair per expert): the pre-fix dispatch."""
    for layer in moe_layers(model):
        layer.expert_dispatch = "grouped"
    return model
