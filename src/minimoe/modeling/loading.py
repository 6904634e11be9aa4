"""Checks a local checkpoint directory against its config before transformers loads it.

transformers reports a bad directory with a long table or a generic OSError; we want one line that
names the file and the config field at fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from minimoe.errors import MiniMoEError

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Config fields a tensor dimension can come from, in the order we blame them.
SHAPE_FIELDS = (
    "num_experts",
    "intermediate_size",
    "hidden_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
    "num_labels",
)


def read_config(directory: Path) -> dict:
    """config.json of a directory as a dict, or a clear error."""
    path = directory / "config.json"
    if not path.is_file():
        raise MiniMoEError(f"{directory} has no config.json: is this a saved MiniMoE model directory?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MiniMoEError(f"{path} is not valid JSON: {err}") from None


def checkpoint_shapes(directory: Path) -> dict[str, tuple[tuple[int, ...], Path]]:
    """Tensor name -> (shape, file) from the safetensors headers, without reading the tensors."""
    index = directory / INDEX_FILE
    if index.is_file():
        files = sorted({directory / f for f in json.loads(index.read_text())["weight_map"].values()})
    elif (directory / WEIGHTS_FILE).is_file():
        files = [directory / WEIGHTS_FILE]
    else:
        raise MiniMoEError(f"{directory} has a config.json but no {WEIGHTS_FILE}: the weights are missing")
    shapes = {}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():
                    shapes[key] = (tuple(f.get_slice(key).get_shape()), file)
        except (SafetensorError, OSError) as err:
            raise MiniMoEError(f"{file} is not a readable safetensors file: {err}") from None
    return shapes


def blame(config, expected: tuple[int, ...], found: tuple[int, ...]) -> str:
    """The config field whose value explains the first differing dimension."""
    for want, have in zip(expected, found):
        if want != have:
            for field in SHAPE_FIELDS:
                if getattr(config, field, None) == want:
                    return f"{field} = {want}"
    return "the tensor's rank"


def has_weights(directory: Path) -> bool:
    """Whether a directory holds safetensors weights (one file or an index of shards) that can be checked."""
    return (directory / WEIGHTS_FILE).is_file() or (directory / INDEX_FILE).is_file()


def validate_checkpoint(directory: Path, build, config, ignore_mismatched: bool = False) -> None:
    """Raise MiniMoEError unless every weight the model needs is in the directory with the right shape.

    `build(config)` makes the model (a model class, or an Auto class's from_config), on the meta device.
    The base-model prefix is ignored on both sides, so a base checkpoint loads into a task model (whose
    new head may be missing) and a task checkpoint into a base model. `ignore_mismatched` (transformers'
    ignore_mismatched_sizes) lets a classifier of another label count be replaced by a fresh one.
    """
    with torch.device("meta"):
        model = build(config)
    base_prefix = model.base_model_prefix

    def strip(key: str) -> str:
        return key.removeprefix(base_prefix + ".")

    found = {strip(k): v for k, v in checkpoint_shapes(directory).items()}
    for key, tensor in model.state_dict().items():
        key = strip(key)
        if key not in found:
            if key.split(".")[0] in {"classifier", "pooler"}:
                continue  # a fresh task head (or pooler) is initialised, as transformers does
            fields = ", ".join(
                f"{f} = {getattr(config, f)}" for f in ("num_experts", "num_hidden_layers") if hasattr(config, f)
            )
            raise MiniMoEError(
                f"{directory / WEIGHTS_FILE} lacks weight {key} that {directory / 'config.json'} ({fields}) requires"
            )
        shape, file = found[key]
        if shape != tuple(tensor.shape) and not (ignore_mismatched and key.startswith("classifier.")):
            raise MiniMoEError(
                f"{directory / 'config.json'} field {blame(config, tuple(tensor.shape), shape)} does not fit {file}: "
                f"{key} has shape {shape}, the config expects {tuple(tensor.shape)}"
            )
