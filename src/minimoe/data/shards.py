"""A token corpus built as shards, in parallel and resumably, then merged into one set of memory-mappable arrays.

The build follows Megatron-LM's preprocess_data (token ids plus offsets, shards and then a merge) and the
MiniMoE authors' builder (fixed-size pieces of the input, a process pool): the source is read in order and
cut into shards of about `shard_chars` characters; worker processes encode the shards, each written
atomically when it is done, so a killed build resumes by skipping the shards already on disk. The merge
concatenates the shards in source order, so its bytes do not depend on the number of workers. Memory stays
bounded: a few shards in flight, and every array streamed to disk.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from itertools import chain, islice
from multiprocessing.pool import AsyncResult
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from minimoe.data.sources import Source
from minimoe.data.text import Document
from minimoe.files import atomic_path

TOKEN_ARRAYS = {"input_ids": np.int32, "token_type_ids": np.uint8}  # flat over all tokens; offsets index them
IN_FLIGHT = 2  # shards queued per worker: enough to keep each busy while the reader cuts the next

Encoder = Callable[[list[Document]], dict[str, np.ndarray]]
"""Documents -> TOKEN_ARRAYS plus `lengths` (tokens of each sequence, in order)."""


def default_workers() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class Shard:
    """Consecutive documents of the source, named by their index range; `position` is the source's at their end."""

    name: str
    documents: list[Document]
    position: int


def cut(source: Source, shard_chars: int) -> Iterator[Shard]:
    """The source's documents in shards of at least `shard_chars` characters (the last one may be smaller)."""
    first, documents, size = 0, [], 0
    for document in chain(source.documents(), [None]):
        if document is not None:
            documents.append(document)
            size += sum(map(len, document))
        if documents and (document is None or size >= shard_chars):
            yield Shard(f"shard-{first:012d}-{first + len(documents):012d}.npz", documents, source.position)
            first, documents, size = first + len(documents), [], 0


def write_shard(encode: Encoder, documents: list[Document], path: Path) -> int:
    """Encode documents into one .npz shard, written atomically; return its token count."""
    arrays = encode(documents)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
    return len(arrays["input_ids"])


_worker_encode: Encoder | None = None


def _start_worker(encode: Encoder) -> None:
    global _worker_encode
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread each: the workers are the parallelism
    _worker_encode = encode


def _write_in_worker(documents: list[Document], path: Path) -> int:
    return write_shard(_worker_encode, documents, path)


def _pool(encode: Encoder, workers: int) -> multiprocessing.pool.Pool:
    """Worker processes holding the encoder: forked on Linux (no re-import, the tokenizer shared), else spawned."""
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    return context.Pool(workers, initializer=_start_worker, initargs=(encode,))


def build_shards(source: Source, encode: Encoder, work: Path, workers: int, shard_chars: int) -> list[Path]:
    """Write every shard of `source` under `work`, skipping those already there; return their paths in order.

    A source of one shard is encoded in this process; otherwise `workers` processes encode while this one
    reads. A progress bar shows the source read (bytes or documents) with its ETA, and the tokens/s.
    """
    work.mkdir(parents=True, exist_ok=True)
    shards = cut(source, shard_chars)
    head = list(islice(shards, 2))
    parallel = _pool(encode, workers) if len(head) > 1 else nullcontext()
    bar = tqdm(total=source.total, unit=source.unit, unit_scale=True, desc="corpus", mininterval=1.0)
    paths: list[Path] = []
    pending: deque[tuple[int, AsyncResult | int]] = deque()
    tokens, start = 0, time.perf_counter()

    def finish(position: int, result: AsyncResult | int) -> None:
        nonlocal tokens
        tokens += result.get() if isinstance(result, AsyncResult) else result
        bar.update(position - bar.n)
        bar.set_postfix_str(f"{tokens / (time.perf_counter() - start):,.0f} tokens/s", refresh=False)

    with parallel as pool, bar:
        for shard in chain(head, shards):
            path = work / shard.name
            paths.append(path)
            if path.is_file():  # written by an earlier, interrupted build
                result: AsyncResult | int = 0
            elif pool is None:
                result = write_shard(encode, shard.documents, path)
            else:
                result = pool.apply_async(_write_in_worker, (shard.documents, path))
            pending.append((shard.position, result))
            while len(pending) > IN_FLIGHT * workers:
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
    return paths


def _npy(stack: ExitStack, path: Path, dtype: type, length: int):
    """An open .npy file of `length` items of `dtype`, its header written, for the data to be appended."""
    f = stack.enter_context(path.open("wb"))
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (length,)}
    np.lib.format.write_array_header_1_0(f, header)
    return f


def merge_shards(paths: list[Path], directory: Path) -> dict[str, int]:
    """Concatenate shards into TOKEN_ARRAYS .npy files and offsets.npy (sequences + 1), streamed; return the counts."""
    sequences = tokens = 0
    for path in paths:
        with np.load(path) as shard:
            sequences += len(shard["lengths"])
            tokens += int(shard["lengths"].sum())
    with ExitStack() as stack:
        files = {name: _npy(stack, directory / f"{name}.npy", dtype, tokens) for name, dtype in TOKEN_ARRAYS.items()}
        offsets = _npy(stack, directory / "offsets.npy", np.int64, sequences + 1)
        np.zeros(1, np.int64).tofile(offsets)
        end = 0
        for path in paths:
            with np.load(path) as shard:
                for name, dtype in TOKEN_ARRAYS.items():
                    shard[name].astype(dtype, copy=False).tofile(files[name])
                ends = end + np.cumsum(shard["lengths"], dtype=np.int64)
                ends.tofile(offsets)
                end = int(ends[-1])
    documents = int(paths[-1].stem.rsplit("-", 1)[1])  # the last shard's name ends at the document count
    return {"documents": documents, "sequences": sequences, "tokens": tokens}
