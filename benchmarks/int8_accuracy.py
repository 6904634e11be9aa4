"""What an ONNX export and its int8 quantisation cost in task accuracy: PyTorch vs onnxruntime fp32 vs int8.

For each fine-tuned model directory, through the same jobs a user runs (`minimoe export`, `minimoe evaluate
--onnx`): the dev score in PyTorch, of the fp32 ONNX export and of the dynamic-int8 one, and the files' sizes.

    python benchmarks/int8_accuracy.py --task snli MODEL_DIR [MODEL_DIR ...] [--json out.json]

Accuracy does not depend on timing, so this may share the cores with other work (it only runs slower).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without install

from minimoe.jobs.evaluate import EvaluateConfig  # noqa: E402
from minimoe.jobs.evaluate import run as evaluate  # noqa: E402
from minimoe.jobs.export import ExportConfig  # noqa: E402
from minimoe.jobs.export import run as export  # noqa: E402
from minimoe.report import markdown_table  # noqa: E402

COLUMNS = ["model", "task", "examples", "PyTorch", "ONNX fp32", "ONNX int8", "int8 - PyTorch", "MB fp32", "MB int8"]


def measure(model: str, task: str, workdir: Path) -> dict:
    """Dev scores (x100) of the model in PyTorch and of its fp32 and int8 ONNX exports, and the exports' sizes."""
    row: dict = {"model": model, "task": task}
    for name, kind in (("PyTorch", ""), ("ONNX fp32", "fp32"), ("ONNX int8", "int8")):
        onnx = str(workdir / f"{kind}.onnx") if kind else ""
        if kind:
            row[f"MB {kind}"] = export(ExportConfig(model=model, output=onnx, int8=kind == "int8"))["size_mb"]
        out = str(workdir / f"{name}.json")
        scores = evaluate(EvaluateConfig(model=model, task=task, onnx=onnx, output=out))
        row[name], row["examples"] = round(100 * scores["score"], 2), scores["examples"]["dev"]
    row["int8 - PyTorch"] = round(row["ONNX int8"] - row["PyTorch"], 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="fine-tuned model directories")
    parser.add_argument("--task", required=True, help="a GLUE or packaged task the models were fine-tuned on")
    parser.add_argument("--json", default="", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = []
    for model in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(measure(model, args.task, Path(tmp)))
    print(markdown_table(rows, COLUMNS))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
