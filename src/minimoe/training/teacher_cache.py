"""Teacher outputs computed once and reused: Q/K/V for distillation, logits for fine-tuning with KD.

The teacher is frozen and in eval mode, so its outputs depend only on the sequence: caching them
makes every further student cost only its own forward and backward (the teacher dominates a small
student's step). Q/K/V are stored as float16 [tokens, 3, H] with per-sequence offsets (memory-mapped),
KD logits as float32 [N, C]. The teacher runs on its (accelerator's) device; results come back via `.cpu()`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from transformers import AutoConfig, AutoModelForSequenceClassification

from minimoe.assets.resolve import load_pretrained
from minimoe.cache import build_once, cache_dir, content_key, weights_stamp
from minimoe.data.encode import TaskDataset
from minimoe.distill.teachers import Teacher
from minimoe.errors import MiniMoEError
from minimoe.files import atomic_path
from minimoe.inference import device_batches


def _identity(data: Dataset):
    """What a corpus dataset is made of: cache directories, concatenations and leading subsets."""
    if isinstance(data, Subset):
        return [_identity(data.dataset), len(data.indices)]
    if isinstance(data, ConcatDataset):
        return [_identity(d) for d in data.datasets]
    return str(Path(data.directory).resolve())


def cache_key(teacher_dir: str, layer: int, data: Dataset, precision: str = "no") -> str:
    """Names a cache by the teacher's weights (path + mtime), the layer, the corpus it covers and the precision the
    teacher ran in (full-precision caches keep the key they had before precision was part of it)."""
    return content_key(weights_stamp(teacher_dir), layer, _identity(data), *([precision] if precision != "no" else []))


def packed_qkv(teacher: Teacher, input_ids, attention_mask, token_type_ids=None, layer: int = -1) -> torch.Tensor:
    """The teacher's Q/K/V of `layer` as the cache stores them: float16 [B, T, 3, H]."""
    q, k, v = teacher.qkv(input_ids, attention_mask, token_type_ids, layer=layer)
    return torch.stack((q, k, v), dim=2).to(torch.float16)


def check_right_padded(attention_mask: torch.Tensor) -> None:
    """The caches store each sequence's first `length` positions: refuse batches padded on the left."""
    lengths = attention_mask.sum(dim=1, keepdim=True)  # [B, 1]
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # [T]
    if not torch.equal(attention_mask.bool(), positions < lengths):
        raise MiniMoEError(
            "the teacher cache needs right padding, but the tokenizer pads on the left (padding_side='left'): "
            "set padding_side to 'right' in its tokenizer_config.json, or run without --cache_teacher"
        )


def right_padded(batches):
    """The batches, each checked on the host (no device sync) to be right-padded."""
    for batch in batches:
        check_right_padded(batch["attention_mask"])
        yield batch


def build_teacher_cache(
    teacher: Teacher,
    data: Dataset,
    collate,
    layer: int,
    directory: Path,
    batch_size: int = 64,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> Path:
    """Run the teacher over every sequence once and store its Q/K/V of `layer`, once per filesystem (see build_once).

    `autocast` is the run's precision (`accelerator.autocast`), so the cache holds what the live teacher would give.
    """
    build = partial(_write_qkv, teacher, data, collate, layer, directory, batch_size, autocast)
    build_once(directory, "the teacher Q/K/V cache", build)
    return directory


@torch.no_grad()
def _write_qkv(
    teacher: Teacher,
    data: Dataset,
    collate,
    layer: int,
    directory: Path,
    batch_size: int,
    autocast: Callable[[], AbstractContextManager],
) -> None:
    lengths = [len(data[i]["input_ids"]) for i in range(len(data))]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        np.save(tmp / "offsets.npy", offsets)
        store = np.lib.format.open_memmap(
            tmp / "qkv.npy", mode="w+", dtype=np.float16, shape=(int(offsets[-1]), 3, teacher.hidden_size)
        )
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)
        row = 0
        for batch in device_batches(right_padded(loader), teacher.device, drop=(), desc="teacher Q/K/V cache"):
            with autocast():
                qkv = packed_qkv(
                    teacher, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), layer
                )
            for seq in qkv.cpu():  # [T, 3, H]
                store[offsets[row] : offsets[row + 1]] = seq[: lengths[row]].numpy()
                row += 1
        store.flush()
        del store


class CachedTeacherCorpus(Dataset):
    """The corpus' segment pairs, each with the cached teacher Q/K/V of its tokens [T, 3, H]."""

    def __init__(self, data: Dataset, directory: Path):
        self.data, self.directory = data, directory
        self.offsets = np.load(directory / "offsets.npy")
        self.qkv = np.load(directory / "qkv.npy", mmap_mode="r")
        if len(self.offsets) != len(data) + 1:
            raise MiniMoEError(
                f"teacher cache {directory} holds {len(self.offsets) - 1} sequences, the corpus "
                f"{len(data)}: delete the cache directory to rebuild it"
            )

    def __getstate__(self) -> dict:
        """Pickled as the corpus and the cache directory (spawned DataLoader workers map the cache again)."""
        return {"data": self.data, "directory": self.directory}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["data"], state["directory"])

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.data[index] | {"teacher_qkv": np.array(self.qkv[start:end])}  # a copy: memmaps are read-only


def cached_collate(pad_collate):
    """Pad the usual inputs with `pad_collate` and the cached [T, 3, H] arrays to [B, Tmax, 3, H]."""

    def collate(items: list[dict]) -> dict:
        qkv = [torch.from_numpy(it.pop("teacher_qkv")) for it in items]
        batch = pad_collate(items)
        check_right_padded(batch["attention_mask"])
        T = batch["input_ids"].shape[1]
        padded = qkv[0].new_zeros(len(qkv), T, *qkv[0].shape[1:])  # [B, T, 3, H] (right padding)
        for i, x in enumerate(qkv):
            padded[i, : x.shape[0]] = x
        batch["teacher_qkv"] = padded
        return batch

    return collate


def check_same_tokenizer(student_tok, teacher_tok, teacher: str) -> None:
    """KD feeds the teacher the student's token ids, so both must share one vocabulary."""
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise MiniMoEError(
            f"KD teacher {teacher} uses a different tokenizer ({len(teacher_tok)} tokens) than the student "
            f"({len(student_tok)} tokens): distil the student from this teacher's family, or drop --teacher"
        )


def check_teacher_labels(teacher: str, labels: tuple[str, ...] | None) -> None:
    """The KD teacher's outputs must be the task's labels, same names in the same order (regression: one)."""
    config = load_pretrained(AutoConfig, teacher)
    names = [str(config.id2label[i]) for i in range(config.num_labels)]
    if (labels is None and config.num_labels != 1) or (labels is not None and names != list(labels)):
        expected = "one regression output" if labels is None else f"labels {list(labels)}"
        raise MiniMoEError(
            f"KD teacher {teacher} predicts {names} (its config's id2label), the task needs {expected} in this "
            f"order: fine-tune the teacher on this task first (minimoe finetune --model TEACHER --task ...)"
        )


def teacher_logits(
    teacher: str, labels: tuple[str, ...] | None, data: TaskDataset, collate, batch_size: int, accelerator: Accelerator
) -> torch.Tensor:
    """Logits [N, C] of a fine-tuned teacher on the (tokenised) training set, cached on disk by content.

    Runs on the accelerator's device in its precision; refuses a teacher whose classification head is
    not in its checkpoint (transformers would initialise it at random) or whose labels differ.
    """
    check_teacher_labels(teacher, labels)
    precision = accelerator.mixed_precision
    digest = content_key(weights_stamp(teacher), precision, [f["input_ids"] for f in data.features])
    path = cache_dir() / "teacher-logits" / f"{digest}.pt"
    build = partial(_write_logits, teacher, data, collate, batch_size, accelerator, path)
    build_once(path, "the teacher's KD logits", build)
    return torch.load(path)


@torch.no_grad()
def _write_logits(
    teacher: str, data: TaskDataset, collate, batch_size: int, accelerator: Accelerator, path: Path
) -> None:
    model, info = load_pretrained(AutoModelForSequenceClassification, teacher, output_loading_info=True)
    if info["missing_keys"]:
        raise MiniMoEError(
            f"KD teacher {teacher} has no fine-tuned classification head ({', '.join(sorted(info['missing_keys']))} "
            f"missing from its checkpoint, so they would be random): fine-tune it on the task first"
        )
    model = model.to(accelerator.device).eval()
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)
    chunks = []
    for inputs in device_batches(loader, accelerator.device, desc="teacher logits"):
        with accelerator.autocast():
            chunks.append(model(**inputs).logits.float().cpu())  # [b, C]
    logits = torch.cat(chunks)  # [N, C]
    with atomic_path(path) as tmp:
        torch.save(logits, tmp)
