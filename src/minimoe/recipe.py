"""Job configs as recipes: dataclass <-> YAML <-> CLI flags.

A recipe YAML mirrors the job's dataclass; nested dataclasses are nested mappings, and the flag of a nested
field joins the names with a dot (`--train.lr 1e-4`). Each field's help text is its attribute docstring (the
string on the line after it, as litgpt does), so the code and `--help` cannot drift apart; a `Literal[...]` field
lists its choices, checked here once for YAML and flags alike. Recipes shipped with the package
(`minimoe/configs/*.yaml`) are found by name: `--config bert-base-minimoe-3L-384H`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import types
import typing
from importlib import resources
from pathlib import Path

import yaml

from minimoe.errors import MiniMoEError


def _field_type(tp) -> tuple[type, str | None, tuple | None]:
    """(scalar type argparse parses, nargs, choices): list[str] -> (str, "+", None), Literal["a", "b"] -> (str, None,
    ("a", "b")), Optional[T] -> T."""
    origin = typing.get_origin(tp)
    if origin is dict:
        return yaml_mapping, None, None
    if origin in (list, tuple):
        return typing.get_args(tp)[0], "+", None
    if origin in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None)), None, None
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        return type(choices[0]), None, choices
    return tp, None, None


def yaml_mapping(value) -> dict:
    """A mapping field's value: as YAML gives it, or a flag's YAML text (`--variants '{a: {x.y: 0}}'`)."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(value) from None
    if not isinstance(value, dict):
        raise ValueError(value)
    return value


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """Field name -> its attribute docstring (the string statement right after the field) in the class source."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    docs = {}
    for field, doc in zip(body, body[1:]):
        if isinstance(field, ast.AnnAssign) and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant):
            docs[field.target.id] = " ".join(str(doc.value.value).split())
    return docs


def _walk(config, prefix=""):
    """(dotted name, type, default, help) for every leaf field of a config instance, nested ones included.

    Defaults come from the instance, so a job that changes its section's defaults shows its own.
    """
    hints, docs = typing.get_type_hints(type(config)), field_docs(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _walk(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name], value, docs.get(f.name, "")


def leaf_values(config) -> dict[str, object]:
    """Every leaf field of a config instance, nested ones included, as {dotted name: value}."""
    return {name: value for name, _, value, _ in _walk(config)}


def add_flags(parser: argparse.ArgumentParser, cls) -> None:
    """`--config`, `--print_config` and one `--dotted.name` flag per leaf field (help and default shown).

    Flags default to None so that only the ones given override the recipe.
    """
    parser.add_argument(
        "--config",
        help="a recipe YAML (a path, or the name of a recipe shipped with minimoe); flags override its values",
    )
    parser.add_argument("--print_config", action="store_true", help="print the effective recipe as YAML and exit")
    docs = getattr(cls, "FLAG_HELP", {})  # a config that gives a section's field another meaning says so here
    for name, tp, default, doc in _walk(cls()):
        doc = docs.get(name, doc)
        scalar, nargs, choices = _field_type(tp)
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        help_text = f"{doc} (default: {shown!s})" if doc else f"(default: {shown!s})"
        help_text = help_text.replace("%", "%%")
        if scalar is bool:
            parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            metavar = "{" + ",".join(map(str, choices)) + "}" if choices else name.split(".")[-1].upper()
            if scalar is yaml_mapping:  # the text goes through the recipe loader, which names a bad one
                scalar, metavar = str, "YAML"
            parser.add_argument(f"--{name}", type=scalar, nargs=nargs, default=None, help=help_text, metavar=metavar)


def _convert(scalar, nargs, choices, key: str, value, source: str):
    if choices and value not in choices:
        raise MiniMoEError(f"{source}: field {key} must be one of {', '.join(map(str, choices))}, got {value!r}")
    try:
        if nargs:
            return [scalar(v) for v in (value if isinstance(value, list) else [value])]
        if scalar is bool and not isinstance(value, bool):
            raise ValueError
        return scalar(value) if value is not None else None
    except (TypeError, ValueError):
        what = "a mapping" if scalar is yaml_mapping else getattr(scalar, "__name__", scalar)
        raise MiniMoEError(f"{source}: field {key} must be {what}, got {value!r}") from None


def _build(base, values: dict, source: str):
    """`base` (a dataclass instance holding the defaults) with `values` applied, naming unknown keys and bad types."""
    cls = type(base)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise MiniMoEError(f"{source}: unknown field(s) {sorted(unknown)} for {cls.__name__}; known: {sorted(names)}")
    changes = {}
    for key, value in values.items():
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise MiniMoEError(f"{source}: field {key} must be a mapping, got {value!r}")
            changes[key] = _build(getattr(base, key), value, f"{source} [{key}]")
        else:
            changes[key] = _convert(*_field_type(hints[key]), key, value, source)
    return dataclasses.replace(base, **changes)


def find_recipe(name: str | Path) -> Path:
    """A recipe path as given, or a recipe shipped with minimoe by name (with or without .yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = resources.files("minimoe") / "configs"
    candidate = shipped / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
    if candidate.is_file():
        return Path(str(candidate))
    names = sorted(p.name.removesuffix(".yaml") for p in shipped.iterdir() if p.name.endswith(".yaml"))
    raise MiniMoEError(f"recipe {name} does not exist; shipped recipes: {', '.join(names)}")


def load_recipe(cls, path: str | Path | None = None, overrides: dict | None = None):
    """A job config: dataclass defaults, then the YAML at `path` (or a shipped recipe's name), then dotted `overrides`."""
    values: dict = {}
    if path:
        path = find_recipe(path)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as err:
            raise MiniMoEError(f"recipe {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise MiniMoEError(f"recipe {path} is not valid YAML: {problem}{where}") from None
        if not isinstance(values, dict):
            raise MiniMoEError(f"recipe {path} must hold a mapping of fields")
    for dotted, value in (overrides or {}).items():
        _set_dotted(values, dotted, value)
    return _build(cls(), values, str(path) if path else "flags")


def _set_dotted(values: dict, dotted: str, value) -> None:
    """values["a"]["b"] = value for dotted "a.b", making the mappings on the way."""
    *parents, leaf = dotted.split(".")
    for p in parents:
        values = values.setdefault(p, {})
        if not isinstance(values, dict):
            raise MiniMoEError(f"{dotted}: {p} is a field, not a section")
    values[leaf] = value


def apply_overrides(config, overrides: dict, source: str):
    """`config` with dotted `overrides` ({"distill.student.router_noise": 0}) applied and checked as a recipe is."""
    values: dict = {}
    for dotted, value in overrides.items():
        _set_dotted(values, str(dotted), value)
    return _build(config, values, source)


def recipe_from_args(cls, args: argparse.Namespace):
    """The config given by `--config` and the flags `add_flags` made."""
    given = {name: getattr(args, name) for name, *_ in _walk(cls()) if getattr(args, name, None) is not None}
    return load_recipe(cls, args.config, given)


def dump_recipe(config) -> str:
    """The config as YAML, saved beside every run so it can be repeated."""
    return yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)


_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def join_negative_values(argv: list[str]) -> list[str]:
    """`--flag -1e-4` -> `--flag=-1e-4`: argparse reads a negative number in scientific notation as an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_NUMBER.match(arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out
