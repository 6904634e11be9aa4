"""Teacher Q/K/V computed once per corpus and memory-mapped, for runs that distil many students.

The teacher is frozen and in eval mode, so its relation inputs depend only on the sequence: caching
them makes every further student cost only its own forward and backward (the teacher dominates a
small student's step). Stored as float16 [tokens, 3, H] with per-sequence offsets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from minimoe.assets.cache import content_key, weights_stamp
from minimoe.distill.teachers import Teacher
from minimoe.errors import MiniMoEError
from minimoe.files import atomic_path


def _identity(data: Dataset):
    """What a corpus dataset is made of: cache directories, concatenations and leading subsets."""
    if isinstance(data, Subset):
        return [_identity(data.dataset), len(data.indices)]
    if isinstance(data, ConcatDataset):
        return [_identity(d) for d in data.datasets]
    return str(Path(data.directory).resolve())


def cache_key(teacher_dir: str, layer: int, data: Dataset) -> str:
    """Names a cache by the teacher's weights (path + mtime), the layer and the corpus it covers."""
    return content_key(weights_stamp(teacher_dir), layer, _identity(data))


def packed_qkv(teacher: Teacher, input_ids, attention_mask, token_type_ids=None, layer: int = -1) -> torch.Tensor:
    """The teacher's Q/K/V of `layer` as the cache stores them: float16 [B, T, 3, H]."""
    q, k, v = teacher.qkv(input_ids, attention_mask, token_type_ids, layer=layer)
    return torch.stack((q, k, v), dim=2).to(torch.float16)


@torch.no_grad()
def build_teacher_cache(
    teacher: Teacher, data: Dataset, collate, layer: int, directory: Path, batch_size: int = 64
) -> Path:
    """Run the teacher over every sequence once and store its Q/K/V of `layer` (skipped if present)."""
    if (directory / "qkv.npy").is_file():
        return directory
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
        for batch in tqdm(loader, desc="teacher Q/K/V cache", unit="batch"):
            qkv = packed_qkv(teacher, batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), layer)
            for seq in qkv:
                store[offsets[row] : offsets[row + 1]] = seq[: lengths[row]].numpy()
                row += 1
        store.flush()
        del store
    return directory


class CachedTeacherCorpus(Dataset):
    """The corpus' segment pairs, each with the cached teacher Q/K/V of its tokens [T, 3, H]."""

    def __init__(self, data: Dataset, directory: Path):
        self.data = data
        self.offsets = np.load(directory / "offsets.npy")
        self.qkv = np.load(directory / "qkv.npy", mmap_mode="r")
        if len(self.offsets) != len(data) + 1:
            raise MiniMoEError(
                f"teacher cache {directory} holds {len(self.offsets) - 1} sequences, the corpus "
                f"{len(data)}: delete the cache directory to rebuild it"
            )

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
        T = batch["input_ids"].shape[1]
        padded = qkv[0].new_zeros(len(qkv), T, *qkv[0].shape[1:])  # [B, T, 3, H] (right padding)
        for i, x in enumerate(qkv):
            padded[i, : x.shape[0]] = x
        batch["teacher_qkv"] = padded
        return batch

    return collate
