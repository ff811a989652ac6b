"""Configuration: dataclasses in, YAML / CLI overrides / ROS parameters out.

One schema per component, written as a dataclass whose fields carry a help string
(``field(default, "what it is, unit")``) and whose ``__post_init__`` raises ConfigError
for bad values. The same schema feeds:

- YAML files:            ``load_yaml(Cls, path, overrides)``
- CLI overrides:         ``["arms.0.port=/dev/ttyUSB0", "rate_hz=50"]`` (values read as the
                         field's type; list items by index or name)
- ROS 2 parameters:      ``flatten(cfg)`` -> {"a.b": scalar or list}; ``unflatten`` back

No eval/exec: values are parsed with PyYAML's safe loaders and checked against the field types.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

from duet.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
_MISSING = dataclasses.MISSING


def field(default: Any = _MISSING, help: str = "", *, factory: Any = _MISSING) -> Any:  # noqa: A002
    """A dataclass field with a help string. Mutable defaults (lists, dicts, dataclasses)
    are copied per instance automatically."""
    meta = {"help": help}
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=functools.partial(copy.deepcopy, default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def help_of(cls: type, name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


# ---------------------------------------------------------------------------- dict -> dataclass


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {_type_name(tp)}, got {value!r}")
        return from_dict(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in tp)
            raise ConfigError(f"{where}: {value!r} is not one of {choices}") from None
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(k, kt, where): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """Build a config dataclass from a plain dict, checking names and types.

    Unknown keys are errors (typos must not be silently ignored); missing keys take the
    field default. ``where`` prefixes error messages (a file name, a parent key).
    """
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (valid keys: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{where}.{name}")
        elif f.default is _MISSING and f.default_factory is _MISSING:
            raise ConfigError(f"{where}: missing required key {name!r} ({f.metadata.get('help', '')})")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def to_dict(obj: Any) -> Any:
    """A config dataclass as plain YAML/JSON-able data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------- overrides, files


def _split_override(text: str) -> tuple[list[str], str]:
    """'a.b.c=value' -> (['a', 'b', 'c'], 'value'), checking the form."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. rate_hz=50")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or not all(p.strip() for p in parts):
        raise ConfigError(f"override {text!r}: empty key (use key=value or a.b.c=value)")
    return [p.strip() for p in parts], raw


def _yaml_guess(raw: str) -> Any:
    """YAML's reading of a value: 50 -> int, off -> False, [1, 2] -> list. Unparsable: the text."""
    if not raw.strip():
        return ""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b.c=value' -> (['a','b','c'], value as YAML reads it). Without a schema to say what the
    value should be (ROS parameters); config overrides go through :func:`apply_overrides`."""
    path, raw = _split_override(text)
    return path, _yaml_guess(raw)


_NULL_WORDS = {"", "~", "null"}
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _guess_all(value: Any) -> Any:
    """Text scalars (YAML BaseLoader) -> what YAML would have read, recursively."""
    if isinstance(value, str):
        return _yaml_guess(value)
    if isinstance(value, list):
        return [_guess_all(v) for v in value]
    if isinstance(value, dict):
        return {_guess_all(k): _guess_all(v) for k, v in value.items()}
    return value


def _coerce(value: Any, tp: Any) -> Any:
    """An override's value, every scalar still its text, read as the field type ``tp`` expects:
    a string or enum field keeps the word (``off`` stays "off"); a bool field takes
    true/false/yes/no/on/off; numbers, lists and mappings follow the item types. Text that does
    not fit is left as YAML reads it, for :func:`_convert` to reject with its message."""
    origin = get_origin(tp)
    if tp is Any:
        return _guess_all(value)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if type(None) in get_args(tp) and isinstance(value, str) and value.strip().lower() in _NULL_WORDS:
            return None
        for a in args:
            c = _coerce(value, a)
            try:
                _convert(c, a, "")
                return c
            except ConfigError:
                continue
        return _guess_all(value)
    if isinstance(value, str):
        if origin is typing.Literal:
            choices = get_args(tp)
            if value in choices:
                return value
            g = _yaml_guess(value)
            return g if g in choices else value
        if tp in (str, Path):
            return value
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return value if any(m.value == value for m in tp) else _yaml_guess(value)
        if tp is bool:
            return _BOOL_WORDS.get(value.strip().lower(), value)
        return _yaml_guess(value)
    if isinstance(value, list):
        args = list(get_args(tp))
        if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
            if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
                return [_coerce(v, args[i]) if i < len(args) else _guess_all(v) for i, v in enumerate(value)]
            item = args[0] if args else Any
            return [_coerce(v, item) for v in value]
        return _guess_all(value)
    if isinstance(value, dict):
        if dataclasses.is_dataclass(tp):
            hints = get_type_hints(tp)
            return {k: _coerce(v, hints.get(k, Any)) for k, v in value.items()}
        if origin is dict:
            kt, vt = get_args(tp) or (Any, Any)
            return {_coerce(k, kt): _coerce(v, vt) for k, v in value.items()}
        return _guess_all(value)
    return value


def _override_value(raw: str, tp: Any) -> Any:
    """The value of one override: as the field type reads it when the schema knows the field,
    otherwise as YAML reads it."""
    if tp is Any:
        return _yaml_guess(raw)
    if not raw.strip():
        return None if type(None) in get_args(tp) else ""
    try:
        text = yaml.load(raw, Loader=yaml.BaseLoader)  # structure, with every scalar as text
    except yaml.YAMLError:
        return raw
    return _coerce(text if text is not None else raw, tp)


def _child_type(tp: Any, key: str, text: str, here: str) -> tuple[Any, Any]:
    """The type of field ``key`` of a mapping of type ``tp`` (Any when unknown) and its default
    as plain data (None when it has none). An unknown key of a dataclass is an error."""
    tp = _strip_optional(tp)
    if dataclasses.is_dataclass(tp):
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        if key not in fields:
            raise ConfigError(
                f"override {text!r}: {here!r} does not exist: unknown key {key!r} "
                f"(valid keys: {', '.join(sorted(fields))})"
            )
        f = fields[key]
        default = (
            f.default_factory()
            if f.default_factory is not _MISSING
            else None
            if f.default is _MISSING
            else f.default
        )
        return get_type_hints(tp)[key], to_dict(default)
    if get_origin(tp) is dict:
        return (get_args(tp) or (Any, Any))[1], None
    return Any, None


def _is_container(tp: Any) -> bool:
    """Whether a value of type tp can hold keys (unknown types: assume it can)."""
    tp = _strip_optional(tp)
    if get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_container(a) for a in get_args(tp))
    return tp is Any or dataclasses.is_dataclass(tp) or get_origin(tp) is dict or tp is dict


def _item_type(tp: Any, index: int) -> Any:
    tp = _strip_optional(tp)
    args = get_args(tp)
    if get_origin(tp) is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        return args[index] if index < len(args) else Any
    if get_origin(tp) in (list, tuple, typing.Sequence) and args:
        return args[0]
    return Any


def _list_index(items: list, key: str, text: str, where: str, here: str) -> int:
    """A list item by position (arms.0) or by its ``name`` (arms.left_follower)."""
    if key.isdigit() and int(key) < len(items):
        return int(key)
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == key:
            return i
    if not items:
        have = "it is empty"
    else:
        have = "items: " + ", ".join(
            f"{i} {item['name']}" if isinstance(item, dict) and "name" in item else str(i)
            for i, item in enumerate(items)
        )
    what = f"no item {int(key)}" if key.isdigit() else f"no item {key!r}"
    raise ConfigError(f"override {text!r}: {here!r} does not exist: {where!r} has {what} ({have})")


def _apply_one(root: dict[str, Any], text: str, cls: Any) -> None:
    path, raw = _split_override(text)
    node: Any = root
    tp = cls if cls is not None else Any
    where = ""
    for i, key in enumerate(path):
        last = i == len(path) - 1
        here = f"{where}.{key}" if where else key
        if isinstance(node, list):
            idx = _list_index(node, key, text, where, here)
            tp = _item_type(tp, idx)
            if last:
                node[idx] = _override_value(raw, tp)
                return
            child = node[idx]
            if child is None:
                child = node[idx] = {}
        else:
            tp, default = _child_type(tp, key, text, here)
            if last:
                node[key] = _override_value(raw, tp)
                return
            child = node.get(key)
            if child is None:
                if isinstance(default, (dict, list)):
                    child = node[key] = default
                elif _is_container(tp):
                    child = node[key] = {}
                elif get_origin(_strip_optional(tp)) in (list, tuple, typing.Sequence):
                    child = node[key] = []
                else:
                    child = default
        if not isinstance(child, (dict, list)):
            kind = _type_name(_strip_optional(tp)) if child is None else type(child).__name__
            raise ConfigError(
                f"override {text!r}: {here + '.' + path[i + 1]!r} does not exist: "
                f"{here!r} is a {kind}" + ("" if child is None else f" ({child!r})")
            )
        node, where = child, here


def apply_overrides(
    data: dict[str, Any], overrides: list[str] | tuple[str, ...], cls: type | None = None
) -> dict[str, Any]:
    """Return a copy of data with 'a.b=value' overrides applied (creating nested maps).

    The one parser of ``key=value`` overrides (``duet ... -o``, ``duet train --set``, presets).
    List items are reached by index or by name: ``arms.0.port=...``, ``arms.left_follower.port=...``.
    With the config dataclass ``cls``, keys are checked as they are walked and each value is read
    as its field's type (``compile=off`` stays the word "off" for an enum field, ``name=yes`` a
    string); without it, values are read as YAML. A bad key, index or name raises ConfigError in
    one line naming it and what exists.
    """
    out = copy.deepcopy(data)
    for text in overrides:
        _apply_one(out, text, cls)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found (check the path)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{at} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def load_yaml(
    cls: type[T], path: str | Path, overrides: list[str] | tuple[str, ...] = (), key: str | None = None
) -> T:
    """Load cls from a YAML file (optionally from one top-level key), applying overrides."""
    data = read_yaml(path)
    if key is not None:
        if key not in data:
            raise ConfigError(f"{path}: no top-level key {key!r}")
        data = data[key]
    return from_dict(cls, apply_overrides(data, overrides, cls), where=str(path))


# ---------------------------------------------------------------------------- ROS parameters


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested config -> {'a.b': value} with ROS-parameter-compatible leaves.

    Lists of mappings (e.g. a list of joints) become JSON strings: ROS parameters cannot
    hold them.
    """
    import json

    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            if v:
                out.update(flatten(v, key + "."))
            else:
                out[key] = "{}"
        elif isinstance(v, list) and any(isinstance(i, (dict, list)) for i in v):
            out[key] = json.dumps(v)
        elif v is None:
            out[key] = ""
        else:
            out[key] = v
    return out


def unflatten(flat: dict[str, Any], cls: type | None = None) -> dict[str, Any]:
    """Inverse of flatten. With cls, JSON-string leaves and '' for None are decoded where
    the schema expects structure."""
    import json

    out: dict[str, Any] = {}
    for key, v in flat.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(v, str) and v[:1] in ("[", "{"):
            try:
                v = json.loads(v)
            except ValueError:
                pass
        node[parts[-1]] = v
    if cls is not None:
        _restore_none(out, cls)
    return out


def _restore_none(data: dict[str, Any], cls: type) -> None:
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        v = data[f.name]
        if v == "" and type(None) in get_args(tp):
            data[f.name] = None
        elif isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(v, dict):
            _restore_none(v, tp)
