"""Import the authors' released MiniMoE checkpoints (`MoEBertMiniLM`, GeneZC/bert-*-minimoe-*) as MiniMoE models.

Their directory holds a BERT-style config with `"moe": "A,F"` and a torch-pickled state dict whose FFN
weights are already stacked per expert; we map the names, drop the distillation-only parts and save a
safetensors HF directory that `AutoModel.from_pretrained` loads.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch

from minimoe.card import CardInfo, measure_cost, write_card
from minimoe.errors import MiniMoEError
from minimoe.files import atomic_directory
from minimoe.modeling import MiniMoEConfig, MiniMoEModel
from minimoe.modeling.portable import write_remote_code

WEIGHT_FILES = ("pytorch_model.bin", "model.safetensors")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Fields copied as they are when present (MiniMoEConfig's defaults are BERT's otherwise).
OPTIONAL_FIELDS = (
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)
REQUIRED_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
# Our per-layer name prefix -> theirs (under bert.encoder.layer.i.); everything outside layers is "bert." + ours.
LAYER_NAMES = (
    ("attention.query.", "attention.self.query."),
    ("attention.key.", "attention.self.key."),
    ("attention.value.", "attention.self.value."),
    ("attention.dense.", "attention.output.dense."),
    ("attention.LayerNorm.", "attention.output.LayerNorm."),
    ("ffn.router.", "ffn_gate."),
    ("ffn.w_in", "intermediate.dense.weight"),  # [E, I, H]
    ("ffn.b_in", "intermediate.dense.bias"),  # [E, I]
    ("ffn.w_out", "output.dense.weight"),  # [E, H, I]
    ("ffn.b_out", "output.dense.bias"),  # [E, H]
    ("ffn.LayerNorm.", "output.LayerNorm."),
)
# Their tensors we deliberately drop: the relation head (distillation only), the single-expert attention
# gate, the position_ids buffer. With one FFN expert their ffn_gate [1, H] is unused too.
DROPPED = re.compile(
    r"self\.(query|key|value)\.(weight|bias)|bert\.embeddings\.position_ids"
    r"|bert\.encoder\.layer\.\d+\.attn_gate\.(weight|bias)"
)
SINGLE_EXPERT_DROPPED = re.compile(r"bert\.encoder\.layer\.\d+\.ffn_gate\.(weight|bias)")
EXPERT_PARAM = re.compile(r"\.ffn\.[wb]_(in|out)$")


def released_key(ours: str) -> str:
    """The released checkpoint's name for one of our state-dict keys."""
    match = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", ours)
    if match is None:
        return "bert." + ours  # embeddings.*, pooler.*
    i, rest = match.groups()
    for our_prefix, their_prefix in LAYER_NAMES:
        if rest.startswith(our_prefix):
            return f"bert.encoder.layer.{i}.{their_prefix}{rest[len(our_prefix) :]}"
    raise KeyError(f"no released name for {ours}")


def config_from_released(cfg: Mapping, source: str = "config.json") -> MiniMoEConfig:
    """A MiniMoEConfig from the authors' config dict; `source` names the file in errors."""
    if cfg.get("model_type") == "minimoe":
        raise MiniMoEError(f"{source} is already a MiniMoE config (model_type 'minimoe'): nothing to convert")
    moe = cfg.get("moe", "1,1")  # their MoEBertModel treats a missing `moe` as "1,1"
    match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", moe) if isinstance(moe, str) else None
    if match is None:
        raise MiniMoEError(
            f'{source} field moe is {moe!r}; expected "A,F" (attention experts, FFN experts), e.g. "1,4"'
        )
    attn_experts, num_experts = int(match[1]), int(match[2])
    if attn_experts != 1:
        raise MiniMoEError(
            f"{source} field moe is {moe!r}: {attn_experts} attention experts are not supported "
            '(MiniMoE converts checkpoints with dense attention, moe "1,F")'
        )
    if num_experts < 1:
        raise MiniMoEError(f"{source} field moe is {moe!r}: the number of FFN experts must be at least 1")
    for field in REQUIRED_FIELDS:
        if not isinstance(cfg.get(field), int) or isinstance(cfg.get(field), bool):
            raise MiniMoEError(f"{source} field {field} must be an integer, got {cfg.get(field)!r}")
    width, hidden, heads = cfg["intermediate_size"], cfg["hidden_size"], cfg["num_attention_heads"]
    if width % num_experts:
        raise MiniMoEError(
            f"{source} field intermediate_size ({width}) is not divisible by the {num_experts} "
            f"FFN experts of field moe ({moe!r})"
        )
    head_size = cfg.get("attention_head_size")
    if head_size is not None and head_size * heads != hidden:
        raise MiniMoEError(
            f"{source} field attention_head_size ({head_size}) x num_attention_heads ({heads}) "
            f"must equal hidden_size ({hidden})"
        )
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise MiniMoEError(f"{source} field position_embedding_type must be 'absolute'")
    fields = {f: cfg[f] for f in REQUIRED_FIELDS} | {f: cfg[f] for f in OPTIONAL_FIELDS if cfg.get(f) is not None}
    fields.update(
        intermediate_size=width // num_experts,
        num_experts=num_experts,
        router_noise=fields.get("hidden_dropout_prob", 0.1),
        router_aux_loss_coef=0.01,
    )
    try:
        return MiniMoEConfig(**fields)
    except MiniMoEError as err:
        raise MiniMoEError(f"{source}: {err}") from None


def state_dict_from_released(sd: Mapping, config: MiniMoEConfig, source: str = "the checkpoint") -> dict:
    """Their state dict -> ours for `config`, checking every key and shape; `source` names the file in errors."""
    with torch.device("meta"):
        expected = MiniMoEModel(config).state_dict()  # our key -> meta tensor of the right shape
    out, used = {}, set()
    for ours, like in expected.items():
        theirs = released_key(ours)
        if theirs not in sd:
            raise MiniMoEError(f"{source} lacks key {theirs} (expected shape {tuple(like.shape)}, for our {ours})")
        tensor = sd[theirs]
        if not isinstance(tensor, torch.Tensor):
            raise MiniMoEError(f"{source} key {theirs} is a {type(tensor).__name__}, not a tensor")
        if config.num_experts == 1 and EXPERT_PARAM.search(ours) and tensor.shape == like.shape[1:]:
            tensor = tensor.unsqueeze(0)  # with "1,1" they never moefy: FFN weights stay unstacked
        if tensor.shape != like.shape:
            raise MiniMoEError(
                f"{source} key {theirs} has shape {tuple(sd[theirs].shape)}, expected "
                f"{tuple(like.shape)} (from config.json)"
            )
        out[ours] = tensor
        used.add(theirs)
    for theirs in sd:
        if theirs in used or DROPPED.fullmatch(theirs):
            continue
        if config.num_experts == 1 and SINGLE_EXPERT_DROPPED.fullmatch(theirs):
            continue
        raise MiniMoEError(
            f"{source} has unexpected key {theirs}: not part of a MoEBertMiniLM encoder "
            "(task or MLM heads are not converted)"
        )
    return out


def load_released_weights(path: Path) -> Mapping:
    """The state dict in a .bin (torch.save, loaded without unpickling code) or .safetensors file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and safetensors raise many types for a damaged file
        raise MiniMoEError(
            f"{path} is not a readable checkpoint (corrupt, or not a torch/safetensors file): {err}"
        ) from None
    if not isinstance(sd, Mapping):
        raise MiniMoEError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return sd


def convert_released(src: str | Path, dst: str | Path, overwrite: bool = False) -> Path:
    """Convert the released checkpoint directory `src` into a MiniMoE directory `dst`; returns `dst`."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite and (dst.is_file() or any(dst.iterdir())):
        raise MiniMoEError(f"{dst} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    cfg_path = src / "config.json"
    if not cfg_path.is_file():
        raise MiniMoEError(f"{cfg_path} not found: {src} is not a released MiniMoE checkpoint directory")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MiniMoEError(f"{cfg_path} is not valid JSON: {err}") from None
    if not isinstance(cfg, dict):
        raise MiniMoEError(f"{cfg_path} is not a JSON object")
    weights = next((src / f for f in WEIGHT_FILES if (src / f).is_file()), None)
    if weights is None:
        raise MiniMoEError(f"{src} has no weights file: expected {' or '.join(WEIGHT_FILES)}")

    config = config_from_released(cfg, str(cfg_path))
    state = state_dict_from_released(load_released_weights(weights), config, str(weights))
    model = MiniMoEModel(config)
    model.load_state_dict(state, strict=True)

    with atomic_directory(dst) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        write_remote_code(tmp)
        info = CardInfo(how=f"converted from the authors' released checkpoint {src.name}", cost=measure_cost(model))
        write_card(tmp, model, info, str(dst))
    return dst
