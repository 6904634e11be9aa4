"""Run a `minimoe` command and record every host sync by where it happens: `python sync_count.py REPORT ARGS...`.

On CUDA, `torch.cuda.set_sync_debug_mode("warn")` makes torch warn at every operation that waits for the GPU
(`.item()`, a value read on the host, `nonzero`, `bincount`, a sized split, ...); each warning is caught with the
Python stack that made it. A CPU has nothing to wait for, so on CPU (`benchmarks/gpu.py --smoke`) the host reads
that are syncs on a GPU are counted instead: `Tensor.item / tolist / numpy / __bool__ / __int__ / __float__`
(syncs inside a kernel, such as bincount's, are not seen there).

Each event gets a phase from the stack: inside `Trainer.loop` it is the training step itself, its logging
(`read_window`), a checkpoint (`save_checkpoint`), an evaluation or the multi-process stop check; anything else is
"outside the loop" (setup, caches, saving the model). Its site is the innermost frame outside torch. REPORT
receives {"mode", "events": [{"phase", "site", "count"}]}; the command's exit code is this script's.
"""

from __future__ import annotations

import collections
import json
import sys
import traceback
import warnings
from pathlib import Path

import torch

PHASES = {  # a frame of this name, inside Trainer.loop, names the phase (innermost wins)
    "read_window": "logging",
    "save_checkpoint": "checkpoint",
    "run_eval": "evaluation",
    "stop_requested": "stop check",
}
HOST_READS = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__")
NOT_SITES = (str(Path(torch.__file__).parent), warnings.__file__, __file__)  # frames that only relay the event
counts: collections.Counter = collections.Counter()


def phase_and_site(stack: traceback.StackSummary) -> tuple[str, str]:
    """Which part of the training loop a sync happened in, and the innermost frame outside torch and this file."""
    names = [(Path(f.filename).name, f.name) for f in stack]
    phase = "outside the loop"
    if ("trainer.py", "loop") in names:
        inner = [PHASES[name] for file, name in names if file == "trainer.py" and name in PHASES]
        phase = inner[-1] if inner else "step"
    sites = [f for f in stack if not f.filename.startswith(NOT_SITES)]
    frame = sites[-1] if sites else stack[-1]
    site = "/".join(Path(frame.filename).parts[-3:]) + f":{frame.lineno} {frame.name}"
    return phase, site


def record() -> None:
    """Count one event at the stack of whoever caused it."""
    counts[phase_and_site(traceback.extract_stack())] += 1


def watch_cuda() -> None:
    """Every CUDA sync warns; the warnings are counted (not printed), whatever the warning filters say."""
    torch.cuda.set_sync_debug_mode("warn")
    warnings.filterwarnings("always", message=".*synchronizing CUDA operation")
    show = warnings.showwarning

    def counted(message, category, filename, lineno, file=None, line=None):
        if "synchronizing CUDA operation" in str(message):
            record()
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = counted


def watch_host_reads() -> None:
    """On CPU: count the tensor value reads that would be host syncs on a GPU."""
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            record()
            return _original(self, *args, **kwargs)

        setattr(torch.Tensor, name, counted)


def main(argv: list[str]) -> int:
    report, args = Path(argv[0]), argv[1:]
    cuda = torch.cuda.is_available()
    if cuda:
        watch_cuda()
    else:
        watch_host_reads()
    from minimoe.cli import main as minimoe

    try:
        return minimoe(args)
    finally:
        events = [{"phase": p, "site": s, "count": n} for (p, s), n in counts.most_common()]
        mode = "CUDA syncs (set_sync_debug_mode)" if cuda else "CPU host reads (would be syncs on a GPU)"
        report.write_text(json.dumps({"mode": mode, "events": events}, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
