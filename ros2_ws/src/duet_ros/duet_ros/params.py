"""ROS parameters from config dataclasses: one parameter per flattened leaf.

    cfg = declare_config(node, ArmNodeConfig)

declares ``a.b.c`` parameters with the dataclass defaults and help strings (dynamic
typing: the dataclass validation is the single type check), then rebuilds the config from
the parameters' values (file overrides, -p overrides) with duet.config.from_dict. A bad
value ends in a one-line ConfigError naming the parameter. Parameters are read once, at
startup: a later `ros2 param set` is refused with a reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, get_type_hints

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

from duet.config import flatten, from_dict, to_dict, unflatten
from duet.errors import ConfigError

T = TypeVar("T")


def defaults_of(cls: type) -> dict[str, Any]:
    """Field defaults of a config dataclass as plain data (without running validation of
    the top-level class, whose required fields may be empty by default)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = to_dict(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = to_dict(f.default_factory())
    return out


def help_for(cls: type, key: str) -> str:
    """The help string of a flattened key ('teleop.gesture.hold_s')."""
    parts = key.split(".")
    tp: Any = cls
    text = ""
    for p in parts:
        if not dataclasses.is_dataclass(tp):
            break
        fields = {f.name: f for f in dataclasses.fields(tp)}
        if p not in fields:
            break
        text = fields[p].metadata.get("help", "")
        tp = get_type_hints(tp).get(p)
    return text


def declared_parameters(cls: type) -> dict[str, Any]:
    """{flattened name: default} for every parameter a node of this config declares."""
    return flatten(defaults_of(cls))


def declare_config(node, cls: type[T]) -> T:
    names = declared_parameters(cls)
    for name, default in names.items():
        node.declare_parameter(
            name, default, ParameterDescriptor(description=help_for(cls, name), dynamic_typing=True)
        )
    values = {name: _plain(node.get_parameter(name).value) for name in names}

    def _read_only(params):  # the config is built once: say so instead of silently ignoring a set
        bad = [p.name for p in params if p.name in names]
        if bad:
            return SetParametersResult(
                successful=False,
                reason=f"{bad[0]} is read at startup; set it in the YAML / launch and restart the node",
            )
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(_read_only)
    try:
        return from_dict(cls, unflatten(values, cls), where=f"node {node.get_name()}")
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"node {node.get_name()}: bad parameter ({e})") from None


def _plain(v: Any) -> Any:
    if isinstance(v, (bytes, bytearray)):
        return list(v)
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return list(v)
    return v
