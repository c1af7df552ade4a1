"""Config dataclass fields that are also command-line options.

`option(default, help)` keeps a field's help text beside its default; `add_config_arguments` derives a stage's
flags from its config dataclass (field `batch_size` -> `--batch-size` and `--batch_size`, a `Literal` type ->
choices, a bool -> a switch that also takes true / false), so an option is declared once. A class attribute
`_argument_group_name` names the group the flags are listed under in `--help`. The config modules import
nothing heavy, so a stage's `--help` needs neither torch nor transformers.

`--config FILE` (every stage): `apply_options` makes the file's values the parser's defaults, so flags given on
the command line override them; each run folder keeps the options it ran with (`options_yaml`).
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, field, fields
from pathlib import Path
from typing import Any, Literal

from adabert import __version__
from adabert.core.errors import AdabertError
from adabert.core.fileio import read_json, read_yaml


def option(default: Any, help: str) -> Any:
    """A dataclass field with a default and the help text of its command-line flag."""
    return field(default=default, metadata={"help": help})


def from_options(cls: type, values: object) -> Any:
    """An instance of the config dataclass `cls` from the same-named attributes of `values` (a parsed
    argparse namespace)."""
    return cls(**{f.name: getattr(values, f.name) for f in fields(cls) if f.init})


def _to_bool(text: str) -> bool:
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


def _flag_type(annotation: Any) -> tuple[Any, list | None]:
    """(type converter, choices) of a field annotation: int, float, str, bool, Path, a Literal, or X | None."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return _flag_type(next(a for a in args if a is not type(None)))
    if typing.get_origin(annotation) is Literal:
        return type(args[0]), list(args)
    if annotation is bool:
        return _to_bool, None
    return annotation, None


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the config dataclass `cls` (`--name-with-dashes` and `--name_with_underscores`,
    dest = the field name), under the group `cls._argument_group_name` when it has one. A bool field is a switch
    (`--inherit`) that also accepts a value (`--inherit false`)."""
    group = parser.add_argument_group(cls._argument_group_name) if hasattr(cls, "_argument_group_name") else parser
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if not f.init:
            continue
        kind, choices = _flag_type(hints[f.name])
        names = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        kwargs: dict[str, Any] = {"dest": f.name, "type": kind, "help": f.metadata.get("help")}
        if choices is not None:
            kwargs["choices"] = choices
        if kind is _to_bool:
            kwargs.update(nargs="?", const=True)
        if f.default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        group.add_argument(*names, **kwargs)


OPTIONS_FILE = "options.yaml"


def read_options_file(path: Path) -> dict[str, Any]:
    """The mapping of a --config file (YAML, or JSON by its suffix): option name -> value."""
    path = Path(path)
    data = read_json(path, "config file") if path.suffix.lower() == ".json" else read_yaml(path, "config file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AdabertError(f"{path}: config file must map option names to values, got {type(data).__name__}")
    return data


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    """`value` from a config file as the flag of `action` would have parsed it."""
    if value is None:
        return None
    if action.nargs == 0:  # a switch: --force, --resume
        if not isinstance(value, bool):
            raise AdabertError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*"):
        values = value if isinstance(value, list) else [value]
        return [_convert_one(action, v, where) for v in values]
    return _convert_one(action, value, where)


def _convert_one(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(value, (dict, list)):
        raise AdabertError(f"{where}: expected a single value, got a {type(value).__name__}")
    text = str(value)
    try:
        out = action.type(text) if callable(action.type) else text
    except argparse.ArgumentTypeError as e:  # a converter that words its own message (`_to_bool`)
        raise AdabertError(f"{where}: {e}") from None
    except (ValueError, TypeError):
        raise AdabertError(f"{where}: expected {getattr(action.type, '__name__', 'a valid value')}, got "
                           f"{value!r}") from None
    if action.choices is not None and out not in action.choices:
        raise AdabertError(f"{where}: expected one of {', '.join(map(str, action.choices))}, got {value!r}")
    return out


class _AppendOverConfig(argparse._AppendAction):
    """A repeatable flag (`--cross-arch A --cross-arch B`) whose default list came from a --config file: given on
    the command line, its values replace the file's list instead of extending it, as any flag overrides the file
    (a run's options.yaml lists what it ran with, so extending would repeat every entry on the next run)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is self.default:  # first use: drop the file's list
            setattr(namespace, self.dest, [])
        super().__call__(parser, namespace, values, option_string)


def apply_options(parser: argparse.ArgumentParser, values: dict[str, Any], source: object) -> None:
    """Make `values` (from a --config file) the defaults of `parser`, so that flags on the command line still
    override them (a repeatable flag's values replace the file's list); an option the file gives is no longer
    required on the command line."""
    actions: dict[str, argparse.Action] = {}
    for a in parser._actions:
        if a.dest not in ("help", "config", "func") and a.option_strings:
            actions.setdefault(a.dest, a)  # the --x of a --x / --no_x pair
    for key, value in values.items():
        dest = str(key).replace("-", "_")
        action = actions.get(dest)
        if action is None:
            raise AdabertError(f"{source}: unknown option {str(key)!r} for `{parser.prog}` (see --help)")
        parser.set_defaults(**{dest: _convert(action, value, f"{source}: {key}")})
        action.required = False
        if type(action) is argparse._AppendAction:
            action.__class__ = _AppendOverConfig


def options_yaml(stage: str, values: dict[str, Any]) -> bytes:
    """The options of a finished run as a --config file that repeats it."""
    import yaml

    plain = {k: (str(v) if isinstance(v, Path) else list(map(str, v)) if isinstance(v, (list, tuple)) else v)
             for k, v in values.items()}
    head = (f"# adabert {__version__}: the options `adabert {stage}` ran with; repeat the run with\n"
            f"#   adabert {stage} --config {OPTIONS_FILE}\n")
    return (head + yaml.safe_dump(plain, sort_keys=False)).encode("utf-8")
