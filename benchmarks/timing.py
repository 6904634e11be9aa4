"""Timing and measurement helpers shared by the benchmark scripts (`moe_layer.py`, `run.py`).

Timing: every case is warmed up, then all cases of a group run round-robin, the order rotated every
round, `repeats` times, so clock drift or a noisy neighbour hits every variant alike. Compare two cases
with `paired_ratio`: the median over rounds of (a / b in the same round), the statistic most robust to
load bursts on a shared machine. Never compare numbers taken in different groups or runs.

Memory: `peak_memory` reports the peak of live torch CPU tensor bytes allocated during one call (from the
allocation events `torch.profiler` records with `profile_memory=True`), and, on Linux, the peak resident
set size reached during the call above the RSS before it (VmHWM after resetting it via
/proc/self/clear_refs), which includes allocator and library overheads and memory freed then reused.
`tracemalloc` sees only Python-object allocations, not tensor storage, so it is not used.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

__all__ = [
    "MALLOC_ENV",
    "MALLOC_VALUES",
    "CpuMonitor",
    "attach_peak_memory",
    "cpu_flags",
    "cpu_model",
    "hardware",
    "interleaved",
    "load_average",
    "malloc_description",
    "median_ms",
    "paired_ratio",
    "peak_memory",
    "quiet_stderr",
    "tune_malloc_now",
]

MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
MALLOC_VALUES = (str(1 << 28), str(1 << 30))


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def interleaved(
    cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Seconds and minor page faults per call of every case; round-robin, order rotated every round."""
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    faults: dict[str, list[int]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t0)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return times, faults


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median over rounds of a[i] / b[i] (both lists from the same `interleaved` call)."""
    return statistics.median(x / y for x, y in zip(a, b))


def median_ms(times: Sequence[float]) -> float:
    return 1e3 * statistics.median(times)


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (the profiler's C++ start/stop log lines bypass Python's sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _tensor_peak_bytes(fn: Callable[[], object]) -> int | None:
    """Peak live bytes of CPU tensors allocated inside fn() (0 = nothing allocated), None if unavailable."""
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    results = getattr(prof.profiler, "kineto_results", None)
    if results is None:
        return None
    events = [e for e in results.events() if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()  # allocations positive, frees negative
        peak = max(peak, live)
    return peak


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_peak_delta_bytes(fn: Callable[[], object]) -> int | None:
    """VmHWM - VmRSS around fn(), after resetting the high-water mark; None where /proc cannot do it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5 = reset the peak RSS (VmHWM) to the current RSS
    except OSError:
        return None
    before = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024


def peak_memory(fn: Callable[[], object]) -> dict[str, float | None]:
    """{"tensor_mb": peak live tensor MiB allocated in one call (torch.profiler), "rss_mb": peak RSS rise}.

    Run fn() once before (warm-up) so one-time allocations (weights' packed copies, thread pools) do not count.
    """
    tensor = _tensor_peak_bytes(fn)
    rss = _rss_peak_delta_bytes(fn)
    return {"tensor_mb": None if tensor is None else tensor / 2**20, "rss_mb": None if rss is None else rss / 2**20}


def attach_peak_memory(rows: list[dict], fns: Sequence[Callable[[], object]]) -> None:
    """Set rows[i]["tensor_peak_mb"] and ["rss_peak_mb"] from one `peak_memory` call of fns[i] each."""
    for row, fn in zip(rows, fns):
        mem = peak_memory(fn)
        row["tensor_peak_mb"], row["rss_peak_mb"] = mem["tensor_mb"], mem["rss_mb"]


# ----------------------------------------------------------------------------------------------
# Machine
# ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def load_average() -> float:
    """1-minute load average (0.0 where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def _proc_stat() -> list[int] | None:
    """The aggregate `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal ... (clock ticks)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return [int(x) for x in fields[1:9]]
    except (OSError, ValueError):
        return None


class CpuMonitor:
    """How busy the machine was besides this process, over a stretch of the run (Linux; None elsewhere).

    other_cores = (all CPUs' busy time - this process's CPU time) / wall time: ~0 on a quiet machine, ~1 when
    another process keeps one core busy. steal = share of CPU time the hypervisor gave to other guests.
    Unlike the load average it does not count the benchmark's own threads.
    """

    def __init__(self) -> None:
        self.start_stat, self.start_own, self.start_wall = _proc_stat(), os.times(), time.perf_counter()

    def result(self) -> dict[str, float | None]:
        stat, own, wall = _proc_stat(), os.times(), time.perf_counter()
        seconds = wall - self.start_wall
        if stat is None or self.start_stat is None or seconds <= 0:
            return {"seconds": seconds, "other_cores": None, "steal": None}
        delta = [b - a for a, b in zip(self.start_stat, stat)]
        hz = os.sysconf("SC_CLK_TCK")
        busy = (delta[0] + delta[1] + delta[2] + delta[5] + delta[6]) / hz  # user nice system irq softirq
        mine = (own.user - self.start_own.user) + (own.system - self.start_own.system)
        total = sum(delta) or 1
        return {"seconds": seconds, "other_cores": max(0.0, (busy - mine) / seconds), "steal": delta[7] / total}


def hardware() -> dict:
    """CPU model, cores, torch threads, library versions, vector ISA and RAM, for result files."""
    import transformers

    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    try:
        ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        ram_gib = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "isa": isa,
        "ram_gib": None if ram_gib is None else round(ram_gib, 1),
    }


def malloc_description() -> str:
    if any(k in os.environ for k in MALLOC_ENV):
        return "tuned glibc (" + ", ".join(f"{k}={os.environ[k]}" for k in MALLOC_ENV if k in os.environ) + ")"
    return "stock glibc malloc"


def tune_malloc_now() -> bool:
    """Apply the tuned mmap/trim thresholds to this running process via glibc's mallopt (False if not glibc).

    Same effect as starting under MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_, for what is allocated from
    then on: large freed blocks stay mapped, so big activations stop costing page faults on every call.
    """
    name = ctypes.util.find_library("c")
    if not name or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
        ok = libc.mallopt(m_mmap_threshold, int(MALLOC_VALUES[0])) == 1
        ok = ok and libc.mallopt(m_trim_threshold, int(MALLOC_VALUES[1])) == 1
    except (OSError, AttributeError):
        return False
    return ok


def run_benchmark(main: Callable[[], int]) -> None:
    """Run a benchmark script's main and exit 0 whatever happens, as the benchmarks promise: a failure prints its
    traceback and one line, so a suite run goes on to the next script."""
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        print("benchmark failed (see the traceback above)")
        sys.exit(0)
