"""Task readers: GLUE TSVs exactly as distributed, our packaged tasks, and generic CSV/TSV/JSONL files.

Labels become indices into `TaskSpec.labels`, ordered as in the Hugging Face GLUE datasets so that
`load_task` and `load_hf_task` give the same label ids; regression tasks (labels None) give floats.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from minimoe.data.metrics import METRICS, compute_metrics
from minimoe.errors import MiniMoEError
from minimoe.textfiles import decode_utf8, read_lines

logger = logging.getLogger(__name__)

FORMATS = (".tsv", ".csv", ".jsonl")
NLI_LABELS = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class TaskSpec:
    """How to read a task: text and label columns, label set (None = regression), metrics, and each split's file."""

    name: str
    text_columns: tuple[str, ...]
    label_column: str
    labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    splits: Mapping[str, str]
    columns: tuple[str, ...] | None = None  # column names of a headerless file (CoLA); None = header row
    label_names: tuple[str, ...] | None = None  # what each label value means (0 -> negative); None = the values

    def __post_init__(self) -> None:
        if len(self.text_columns) not in (1, 2):
            raise MiniMoEError(f"task {self.name!r}: needs 1 or 2 text columns, got {list(self.text_columns)}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            known = ", ".join(METRICS)
            raise MiniMoEError(f"task {self.name!r}: unknown metrics {unknown or '(none given)'}; known: {known}")
        bad_files = [f for f in self.splits.values() if Path(f).suffix.lower() not in FORMATS]
        if bad_files or not self.splits:
            formats = ", ".join(FORMATS)
            raise MiniMoEError(f"task {self.name!r}: data files must end in {formats}, got {bad_files or 'none'}")

    @property
    def num_labels(self) -> int:
        """Output size of a head for this task: the number of classes, or 1 for regression."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def names(self) -> tuple[str, ...]:
        """The label names a model saves as id2label: the meanings, the values themselves, or ("score",)."""
        return self.label_names or self.labels or ("score",)

    def score(self, preds, labels) -> dict[str, float]:
        """The task's metrics (and "score", their mean) of predictions: class ids, logits [n, C] or values."""
        return compute_metrics(self.metrics, preds, labels, self.labels is not None, self.name)


@dataclass(frozen=True)
class Example:
    """One task example: its 1 or 2 texts and its label (class index, or float for regression)."""

    texts: tuple[str, ...]
    label: int | float


_BINARY = ("0", "1")
_SENTIMENT = ("negative", "positive")
_NLI2 = ("entailment", "not_entailment")
_PAIR = ("sentence1", "sentence2")
_SPLITS = {"train": "train.tsv", "dev": "dev.tsv"}

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "cola",
            ("sentence",),
            "label",
            _BINARY,
            ("mcc",),
            _SPLITS,
            columns=("source", "label", "original_mark", "sentence"),
            label_names=("unacceptable", "acceptable"),
        ),
        TaskSpec("sst2", ("sentence",), "label", _BINARY, ("accuracy",), _SPLITS, label_names=_SENTIMENT),
        TaskSpec(
            "mrpc",
            ("#1 String", "#2 String"),
            "Quality",
            _BINARY,
            ("accuracy", "f1"),
            _SPLITS,
            label_names=("not_equivalent", "equivalent"),
        ),
        TaskSpec("stsb", _PAIR, "score", None, ("pearson", "spearman"), _SPLITS),
        TaskSpec(
            "qqp",
            ("question1", "question2"),
            "is_duplicate",
            _BINARY,
            ("accuracy", "f1"),
            _SPLITS,
            label_names=("not_duplicate", "duplicate"),
        ),
        TaskSpec(
            "mnli",
            _PAIR,
            "gold_label",
            NLI_LABELS,
            ("accuracy",),
            {"train": "train.tsv", "dev": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv"},
        ),
        TaskSpec("qnli", ("question", "sentence"), "label", _NLI2, ("accuracy",), _SPLITS),
        TaskSpec("rte", _PAIR, "label", _NLI2, ("accuracy",), _SPLITS),
        TaskSpec("wnli", _PAIR, "label", _BINARY, ("accuracy",), _SPLITS, label_names=("not_entailment", "entailment")),
        # packaged tasks, in the layouts written by minimoe.assets.fetch
        TaskSpec("snli", _PAIR, "label", NLI_LABELS, ("accuracy",), _SPLITS),
        TaskSpec("movie-sentiment", ("sentence",), "label", _BINARY, ("accuracy",), _SPLITS, label_names=_SENTIMENT),
    )
}
GLUE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def get_task(name: str) -> TaskSpec:
    """Look up a registered task by name, with a helpful error listing the known ones."""
    if name not in TASKS:
        known = ", ".join(TASKS)
        raise MiniMoEError(f"unknown task {name!r}; known tasks: {known} (or describe your own files with custom_task)")
    return TASKS[name]


def custom_task(
    name: str,
    files: Mapping[str, str | Path],
    text_columns: tuple[str, ...] | list[str],
    label_column: str,
    labels: tuple[str, ...] | list[str] | None = None,
    metrics: tuple[str, ...] | list[str] | None = None,
) -> TaskSpec:
    """Describe a user's CSV/TSV/JSONL task: split -> file, text/label column names, label values (None = regression)."""
    return TaskSpec(
        name=name,
        text_columns=tuple(text_columns),
        label_column=label_column,
        labels=None if labels is None else tuple(str(label) for label in labels),
        metrics=tuple(metrics or (("pearson", "spearman") if labels is None else ("accuracy",))),
        splits={split: str(Path(path).resolve()) for split, path in files.items()},
    )


def custom_task_name(train_file: str | Path) -> str:
    """A task name for a user's file: its stem (its folder's name for train.*), never a registered task's name."""
    path = Path(train_file)
    name = path.parent.resolve().name if path.stem.lower() in {"train", "training"} else path.stem
    return f"custom-{name}" if name in TASKS or not name else name


def read_labels(spec: TaskSpec, split: str = "train") -> tuple[str, ...] | None:
    """The label set of a custom task's file: its values sorted (numerically when all are integers), or None
    (regression) when they are numbers and some have a fraction.
    """
    path = Path(spec.splits[split])
    if not path.is_file():
        raise MiniMoEError(f"{path}: file not found (task {spec.name!r}, split {split!r})")
    values = set()
    for lineno, row in _records(path, spec.columns):
        if isinstance(row, str):
            raise MiniMoEError(f"{path}:{lineno}: {row}")
        if spec.label_column not in row:
            raise MiniMoEError(f"{path}:{lineno}: no column {spec.label_column!r}; columns are {list(row)}")
        values.add(str(row[spec.label_column]))
    if not values:
        raise MiniMoEError(f"{path}: no examples (empty file or only a header)")
    numbers = [_number(v) for v in values]
    if all(n is not None for n in numbers):
        if any(not n.is_integer() for n in numbers):
            return None
        return tuple(sorted(values, key=float))
    return tuple(sorted(values))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _delimited_records(path: Path, columns: tuple[str, ...] | None) -> Iterator[tuple[int, dict[str, object] | str]]:
    tsv = path.suffix.lower() == ".tsv"
    # GLUE TSVs hold stray quote characters, so TSVs are read with no quoting at all; MRPC starts with a BOM
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        header = list(columns) if columns else next(reader, [])
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                yield reader.line_num, f"expected {len(header)} columns {header}, found {len(fields)}"
            else:
                yield reader.line_num, dict(zip(header, fields, strict=True))


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, object] | str]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, f"invalid JSON ({exc})"
                continue
            yield lineno, row if isinstance(row, dict) else f"expected a JSON object, found {type(row).__name__}"


def _records(path: Path, columns: tuple[str, ...] | None) -> Iterator[tuple[int, dict[str, object] | str]]:
    """(line number, row or the row's problem) of a JSONL or CSV/TSV file; a file that is not UTF-8 (or not
    CSV) is one error naming it.
    """
    try:
        yield from _jsonl_records(path) if path.suffix.lower() == ".jsonl" else _delimited_records(path, columns)
    except UnicodeDecodeError:
        decode_utf8(path.read_bytes(), str(path))  # raises the error naming the line and the byte
        raise
    except csv.Error as exc:
        raise MiniMoEError(f"{path}: cannot be read as {path.suffix[1:].upper()} ({exc})") from None


def _example(row: dict[str, object] | str, spec: TaskSpec, where: str) -> Example:
    if isinstance(row, str):
        raise MiniMoEError(f"{where}: {row}")
    missing = [c for c in (*spec.text_columns, spec.label_column) if c not in row]
    if missing:
        raise MiniMoEError(f"{where}: no column {missing[0]!r}; columns are {list(row)}")
    texts = tuple(row[c] for c in spec.text_columns)
    if not all(isinstance(t, str) for t in texts):
        raise MiniMoEError(f"{where}: text columns {list(spec.text_columns)} must hold strings, got {texts!r}")
    raw = row[spec.label_column]
    if spec.labels is None:
        try:
            return Example(texts, float(raw))
        except (TypeError, ValueError):
            raise MiniMoEError(f"{where}: label {raw!r} in column {spec.label_column!r} is not a number") from None
    if str(raw) not in spec.labels:
        raise MiniMoEError(
            f"{where}: unknown label {raw!r} in column {spec.label_column!r}; expected one of {list(spec.labels)}"
        )
    return Example(texts, spec.labels.index(str(raw)))


def load_task(
    spec: TaskSpec | str, data_dir: str | Path, split: str = "train", *, skip_bad_rows: bool = False
) -> list[Example]:
    """Read one split of a task from `data_dir` (ignored for custom tasks' absolute paths).

    Every malformed row raises MiniMoEError naming file and line, unless `skip_bad_rows` (the real GLUE
    QQP train file has a few rows broken by newlines inside questions): then they are skipped and counted.
    """
    spec = get_task(spec) if isinstance(spec, str) else spec
    if split not in spec.splits:
        raise MiniMoEError(f"task {spec.name!r} has no split {split!r}; splits: {', '.join(spec.splits)}")
    path = Path(data_dir) / spec.splits[split]
    if not path.is_file():
        raise MiniMoEError(f"{path}: file not found (task {spec.name!r}, split {split!r})")
    examples, skipped = [], 0
    for lineno, row in _records(path, spec.columns):
        try:
            examples.append(_example(row, spec, f"{path}:{lineno}"))
        except MiniMoEError:
            if not skip_bad_rows:
                raise
            skipped += 1
    if skipped:
        logger.warning("%s: skipped %d malformed rows", path, skipped)
    if not examples:
        raise MiniMoEError(f"{path}: no examples (empty file or only a header)")
    return examples


def read_texts(
    path: str | Path, text_columns: tuple[str, ...] | list[str], stream: BinaryIO | None = None
) -> list[tuple[str | None, ...]]:
    """Unlabelled inputs, one per line or row: the text columns of a CSV/TSV/JSONL file (header row; a JSON null
    stays None), or every line of any other file or of a binary `stream` (stdin), blank lines included.
    """
    path = Path(path)
    if stream is not None or path.suffix.lower() not in FORMATS:
        return [(line,) for line in read_lines(path, stream)]
    if not path.is_file():
        raise MiniMoEError(f"{path}: file not found")
    texts = []
    for lineno, row in _records(path, None):
        if isinstance(row, str):
            raise MiniMoEError(f"{path}:{lineno}: {row}")
        missing = [c for c in text_columns if c not in row]
        if missing:
            raise MiniMoEError(
                f"{path}:{lineno}: no column {missing[0]!r}; columns are {list(row)} (see --text_columns)"
            )
        texts.append(tuple(None if row[c] is None else str(row[c]) for c in text_columns))
    return texts


_HUB_SPLITS = {"train": "train", "dev": "validation", "dev_mismatched": "validation_mismatched"}


def load_hf_task(name: str, split: str = "train") -> list[Example]:
    """Read a GLUE task from the Hugging Face hub (needs network) with the same label ids as `load_task`."""
    import datasets

    spec = get_task(name)
    if name not in GLUE_TASKS or split not in spec.splits:
        glue = ", ".join(GLUE_TASKS)
        raise MiniMoEError(f"the hub loader serves GLUE tasks {glue} with splits train/dev; got {name!r}/{split!r}")
    hub_split = "validation_matched" if (name, split) == ("mnli", "dev") else _HUB_SPLITS[split]
    try:
        dataset = datasets.load_dataset("nyu-mll/glue", name, split=hub_split)
    except Exception as exc:  # any hub/network/cache failure becomes one actionable message
        raise MiniMoEError(
            f"could not load GLUE {name!r} ({hub_split}) from the Hugging Face hub: {exc}. "
            "Without hub access, download the GLUE TSVs and use load_task(name, data_dir)."
        ) from exc
    text_columns = [c for c in dataset.column_names if c not in ("label", "idx")]
    return [Example(tuple(row[c] for c in text_columns), row["label"]) for row in dataset]


def subsample(examples: list, limit: int) -> list:
    """A fixed (seed 0) random subset, the same for every run and seed, or all examples."""
    return random.Random(0).sample(examples, limit) if 0 < limit < len(examples) else examples
