"""YAML -> frozen attrs objects via cattrs, with one-line errors.

Unknown keys are rejected with their dotted path and the closest valid key;
wrong types name the path and the expected type.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs
import cattrs
import yaml
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from vidur.errors import VidurError
from vidur.plugins import suggest

converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)


def _strict_int(value: Any, _cls: type) -> int:
    """An integer, or an integral float (``1e9``, ``512.0``); never a truncated ``512.5`` or a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VidurError(f"must be an integer, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise VidurError(f"must be an integer, got {value!r}")
    return int(value)


def _strict_float(value: Any, _cls: type) -> float:
    """A number (int or float), never a bool or text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VidurError(f"must be a number, got {value!r}")
    return float(value)


def _strict_bool(value: Any, _cls: type) -> bool:
    """``true`` or ``false``: not ``maybe`` (which ``bool()`` would read as true), not 0/1."""
    if not isinstance(value, bool):
        raise VidurError(f"must be true or false, got {value!r}")
    return value


converter.register_structure_hook(int, _strict_int)
converter.register_structure_hook(float, _strict_float)
converter.register_structure_hook(bool, _strict_bool)


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader that also reads ``1e9`` and ``5E-3`` as numbers (YAML 1.2 does; 1.1 needs a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text as the scenario files are read (:class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)

#: scenario keys naming a plugin: ``{name: ..., <options>}`` or just the name
PLUGIN_SECTIONS = ("replica_scheduler", "global_scheduler", "memory_planner", "runtime_estimator", "arrival", "lengths")


def _path_from_notes(exc: BaseException) -> list[str]:
    out = []
    for note in getattr(exc, "__notes__", []) or []:
        note = str(note)
        if "@ attribute " in note:
            out.append(note.rsplit("@ attribute ", 1)[1].strip())
        elif "@ key " in note:  # a mapping's key, as cattrs quotes it ("@ key 'ttft'")
            out.append(note.rsplit("@ key ", 1)[1].strip().strip("'\""))
        elif "@ index " in note:
            out.append(note.rsplit("@ index ", 1)[1].strip())
    return out


def _first_error(exc: BaseException, path: list[str]) -> tuple[list[str], BaseException]:
    """Descend a cattrs exception group to the first leaf error and its path."""
    if isinstance(exc, (ClassValidationError, IterableValidationError)) or (
        isinstance(exc, BaseExceptionGroup) and not isinstance(exc, ForbiddenExtraKeysError)
    ):
        for sub in exc.exceptions:
            return _first_error(sub, path + _path_from_notes(sub))
    return path, exc


def explain(exc: BaseException, root: str = "") -> str:
    """One line describing a structuring failure."""
    path, leaf = _first_error(exc, _path_from_notes(exc) if not isinstance(exc, ClassValidationError) else [])
    where = ".".join(p for p in [root, *path] if p)
    if isinstance(leaf, ForbiddenExtraKeysError):
        valid = [a.name for a in attrs.fields(leaf.cl)] if attrs.has(leaf.cl) else []
        key = sorted(leaf.extra_fields)[0]
        full = f"{where}.{key}" if where else key
        return f"unknown key '{full}'{suggest(key, valid)}; valid keys here: {', '.join(valid) or 'none'}"
    if isinstance(leaf, VidurError):
        msg = str(leaf)
        if where and msg.startswith("must "):
            return f"{where} {msg}"
        return f"{where}: {msg}" if where and not msg.startswith(where) else msg
    if isinstance(leaf, KeyError):
        key = str(leaf.args[0]) if leaf.args else ""
        if path and path[-1] == key:  # cattrs notes the missing attribute and raises KeyError(it)
            return f"missing required key '{where}'"
        return f"missing required key '{where + '.' if where else ''}{key}'".replace("'.", "'")
    return f"invalid value for '{where or root}': {leaf}"


_SEQUENCES = (tuple, list, set, frozenset)


def _refuse_mapping_for_sequence(data: dict, cls: type, root: str) -> None:
    """A YAML mapping given for a tuple/list field is an error (cattrs would keep its keys)."""
    import collections.abc as cabc
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: leave it to cattrs
        return
    for key, value in data.items():
        if not isinstance(value, dict) or key not in hints:
            continue
        hint = hints[key]
        opts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) else (hint,)
        for h in opts:
            origin = typing.get_origin(h) or h
            if origin in _SEQUENCES or origin in (cabc.Sequence, cabc.Set):
                where = f"{root}.{key}" if root else key
                raise VidurError(f"{where} must be a list (- item lines or [a, b]), got a mapping {value!r}")


def structure(data: Any, cls: type, root: str = "") -> Any:
    """Structure ``data`` into ``cls``; any failure becomes a one-line VidurError."""
    if data is None:
        data = {}
    if attrs.has(cls) and not isinstance(data, dict):
        raise VidurError(f"'{root or 'scenario'}' must be a mapping of keys to values, got {type(data).__name__}")
    if attrs.has(cls):
        _refuse_mapping_for_sequence(data, cls, root)
    try:
        return converter.structure(data, cls)
    except VidurError as exc:
        sep = " " if str(exc).startswith("must ") else ": "
        raise VidurError(f"{root}{sep}{exc}" if root else str(exc)) from None
    except Exception as exc:  # cattrs wraps everything in exception groups
        raise VidurError(explain(exc, root)) from None


def unstructure(obj: Any) -> Any:
    return converter.unstructure(obj)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; unreadable or invalid files are one-line errors."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise VidurError(f"file not found: {p}") from None
    except OSError as exc:
        raise VidurError(f"cannot read {p}: {exc.strerror}") from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise VidurError(f"{p}{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise VidurError(f"{p}: expected a mapping of keys to values at the top level, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """Parse a ``-s key value`` override value as YAML (so 1, 0.5, true, [1,2] work)."""
    try:
        return yaml_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """``data['a']['b'] = value`` for ``dotted='a.b'``, creating mappings on the way."""
    keys = dotted.split(".")
    if not all(keys):
        raise VidurError(f"invalid override key '{dotted}': use a dotted path like replica_scheduler.chunk_size")
    node = data
    for i, k in enumerate(keys[:-1]):
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        elif isinstance(nxt, str) and k in PLUGIN_SECTIONS:  # `global_scheduler: lor` shorthand
            nxt = node[k] = {"name": nxt}
        if not isinstance(nxt, dict):
            raise VidurError(f"cannot set '{dotted}': '{'.'.join(keys[: i + 1])}' is a value, not a mapping")
        node = nxt
    node[keys[-1]] = value
