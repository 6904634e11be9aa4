"""What the suite measures: the full and smoke presets, the targets, the teachers' names, progress logging."""

from __future__ import annotations

from dataclasses import dataclass

TARGETS = {"latency_b32": 1.05, "latency_b1": 1.15, "flops": 1.01, "experts_16_over_1": 1.25, "train_step": 1.15}
MINILM, MPNET = "all-MiniLM-L6-v2", "all-mpnet-base-v2"


@dataclass
class Preset:
    """Sizes and repeat counts of one run: FULL gives the documented numbers, SMOKE runs in seconds (tests)."""

    shapes: list[tuple[int, int]]  # (layers, hidden) of the students
    seq: int = 128
    batches: tuple[int, int] = (1, 32)
    repeats_small: int = 30  # batch-1 groups
    repeats_large: int = 7  # batch-32 groups
    repeats_mpnet_large: int = 3
    teachers: tuple[str, ...] = (MINILM, MPNET)
    bf16_shape: tuple[int, int] = (4, 384)
    export_shape: tuple[int, int] = (4, 384)  # students exported to onnxruntime (fp32 and int8)
    balance_tokens: tuple[int, int] = (32, 128)  # batch x seq of the router-balancing calibration inputs
    balance_steps: int = 50  # at most; see routing.balance_routers_
    balance_lr: float = 0.5
    layer_hidden: int = 384
    layer_experts: tuple[int, ...] = (1, 2, 4, 8, 16)
    layer_tokens: tuple[int, int] = (32, 128)  # batch x seq of the experts sweep and the dispatch comparison
    sweep_seqs: tuple[int, ...] = (32, 64, 128, 256, 512)
    sweep_seq_batch: int = 8
    sweep_batches: tuple[int, ...] = (1, 8, 32, 64)
    repeats_layer: int = 15
    repeats_dispatch: int = 10
    train_shape: tuple[int, int, int] = (4, 192, 4)  # layers, hidden, experts
    train_tokens: tuple[int, int] = (32, 64)
    finetune_seqs: tuple[int, ...] = (32, 64)  # fine-tuning step at batch train_tokens[0] x these (short sentences)
    repeats_train: int = 8
    threads: int = 2
    profile_iters: int = 5


FULL = Preset(shapes=[(2, 128), (3, 192), (4, 384), (6, 384)])
SMOKE = Preset(
    shapes=[(1, 64), (2, 64)],
    seq=16,
    batches=(1, 4),
    repeats_small=2,
    repeats_large=1,
    repeats_mpnet_large=1,
    teachers=(MINILM,),
    bf16_shape=(2, 64),
    export_shape=(1, 64),
    balance_tokens=(8, 16),
    balance_steps=10,
    layer_hidden=64,
    layer_experts=(1, 2, 4),
    layer_tokens=(4, 16),
    sweep_seqs=(8, 16),
    sweep_seq_batch=2,
    sweep_batches=(1, 4),
    repeats_layer=2,
    repeats_dispatch=2,
    train_shape=(1, 64, 2),
    train_tokens=(4, 16),
    finetune_seqs=(8,),
    repeats_train=2,
    threads=1,
    profile_iters=1,
)


def log(msg: str) -> None:
    print(msg, flush=True)
