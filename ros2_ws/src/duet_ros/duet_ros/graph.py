"""The node graph (ROS-free): launch/graph.yaml expanded against a rig into node specs.

Both runners read this: launch/*.launch.py turn each NodeSpec into a launch_ros Node,
`duet up` into a subprocess running the node's console script with the same parameter
files and the same per-node parameters. Selecting mock hardware changes one parameter
(use_mock_hardware); every node, topic and other parameter is identical.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duet.config import read_yaml
from duet.errors import ConfigError
from duet.resources import shipped_dir

PACKAGE = "duet_ros"
GRAPH_FILE = "graph.yaml"


def launch_dir() -> Path:
    """The folder holding graph.yaml and its parameter files: $DUET_LAUNCH_DIR, else the one
    duet ships (duet.resources: launch/ of the checkout for an editable install, duet/share/launch
    in the wheel); never the current directory."""
    env = os.environ.get("DUET_LAUNCH_DIR")
    if env:
        return Path(env)
    return shipped_dir("launch")


@dataclass(frozen=True)
class NodeKind:
    name: str
    executable: str  # console script of the duet_ros package
    config: str  # "module:Class" of the parameter dataclass
    for_each: str = ""  # "", "arms" or "cameras"
    device_param: str = ""  # the parameter naming the device (for_each kinds)
    node_name: str = ""  # the node name (single kinds)
    roles: tuple[str, ...] = ()  # for_each arms: only these roles (empty: all)
    # A host kind: with use_mock_hardware and a rig whose mock_backend is `host_backend`, ONE
    # process of this kind runs the nodes of the `hosts` kinds a graph starts (e.g. every sim
    # arm and camera in one MuJoCo world); their node names, topics and parameters stay the same.
    hosts: tuple[str, ...] = ()
    host_backend: str = ""

    def config_class(self) -> type:
        module, _, cls = self.config.partition(":")
        try:
            obj = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            raise ConfigError(
                f"graph kind {self.name!r}: config {self.config!r} not found (module:Class)"
            ) from None
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"graph kind {self.name!r}: {self.config} is not a dataclass")
        return obj


@dataclass(frozen=True)
class NodeSpec:
    """One node of an expanded graph."""

    name: str  # node name (also its topic namespace: /<name>/...)
    kind: str
    package: str
    executable: str
    param_files: tuple[Path, ...]  # ROS parameter files, in order
    parameters: dict[str, Any]  # per-node parameters applied after the files
    hosted: tuple[NodeSpec, ...] = ()  # nodes this process runs in-process (host kinds)

    def node_names(self) -> list[str]:
        """This node's name and those of the nodes it hosts."""
        return [self.name, *(h.name for h in self.hosted)]

    def launch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for launch_ros.actions.Node."""
        return {
            "package": self.package,
            "executable": self.executable,
            "name": self.name,
            "output": "screen",
            "parameters": [*(str(p) for p in self.param_files), dict(self.parameters)],
        }


@dataclass(frozen=True)
class GraphArgument:
    """A named argument of a graph: `duet up GRAPH --NAME VALUE` and `ros2 launch
    launch/GRAPH.launch.py NAME:=VALUE` set parameter `param` of node `node` (a string)."""

    name: str
    node: str
    param: str
    help: str = ""
    required: bool = False


@dataclass(frozen=True)
class GraphDescription:
    path: Path
    kinds: dict[str, NodeKind]
    graphs: dict[str, dict[str, Any]]

    def graph_names(self) -> list[str]:
        return list(self.graphs)

    def param_files(self, graph: str) -> list[Path]:
        out: list[Path] = []
        for g in self._chain(graph):
            for f in self.graphs[g].get("parameters", []) or []:
                p = (self.path.parent / f).resolve()
                if p not in out:
                    out.append(p)
        return out

    def kinds_of(self, graph: str) -> list[str]:
        out: list[str] = []
        for g in self._chain(graph):
            for k in self.graphs[g].get("nodes", []) or []:
                if k not in out:
                    out.append(k)
        return out

    def arguments(self, graph: str) -> dict[str, GraphArgument]:
        """The graph's arguments (`arguments:` of the graph and of the graphs it includes)."""
        out: dict[str, GraphArgument] = {}
        for g in self._chain(graph):
            for name, a in (self.graphs[g].get("arguments") or {}).items():
                if not isinstance(a, dict) or ":" not in str(a.get("set", "")):
                    raise ConfigError(f"{self.path}: graph {g!r} argument {name!r} needs set: NODE:PARAM")
                node, _, param = str(a["set"]).partition(":")
                out[name] = GraphArgument(
                    name, node, param, str(a.get("help", "")), bool(a.get("required", False))
                )
        return out

    def all_arguments(self) -> dict[str, GraphArgument]:
        """Every graph's arguments, by name (for command-line options)."""
        out: dict[str, GraphArgument] = {}
        for g in self.graphs:
            out.update(self.arguments(g))
        return out

    def argument_parameters(
        self, graph: str, values: dict[str, Any], nodes: list[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """{node: {param: value}} for the given argument values (None = not given). Raises
        ConfigError for an argument the graph does not have, or a required one missing
        (only for `nodes`, when given)."""
        args = self.arguments(graph)
        out: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if value is None:
                continue
            if name not in args:
                have = ", ".join(args) or "none"
                raise ConfigError(
                    f"argument {name!r} is not an argument of graph {graph!r} (its arguments: {have})"
                )
            a = args[name]
            out.setdefault(a.node, {})[a.param] = value
        for a in args.values():
            if a.required and values.get(a.name) is None and (nodes is None or a.node in nodes):
                raise ConfigError(
                    f"graph {graph!r} needs argument {a.name!r}: {a.help} (e.g. --{a.name} VALUE)"
                )
        return out

    def _chain(self, graph: str, seen: tuple[str, ...] = ()) -> list[str]:
        if graph not in self.graphs:
            raise ConfigError(f"graph {graph!r} unknown (have {', '.join(self.graphs)}); see {self.path}")
        if graph in seen:
            raise ConfigError(f"{self.path}: graph {graph!r} includes itself")
        out: list[str] = []
        for inc in self.graphs[graph].get("include", []) or []:
            for g in self._chain(inc, (*seen, graph)):
                if g not in out:
                    out.append(g)
        out.append(graph)
        return out


def load_graph(path: str | Path | None = None) -> GraphDescription:
    p = Path(path) if path else launch_dir() / GRAPH_FILE
    data = read_yaml(p)
    kinds: dict[str, NodeKind] = {}
    for name, k in (data.get("kinds") or {}).items():
        if not isinstance(k, dict) or "executable" not in k or "config" not in k:
            raise ConfigError(f"{p}: kind {name!r} needs executable and config")
        for_each = k.get("for_each", "")
        if for_each not in ("", "arms", "cameras"):
            raise ConfigError(f"{p}: kind {name!r}: for_each must be arms or cameras, got {for_each!r}")
        if for_each and not k.get("device_param"):
            raise ConfigError(
                f"{p}: kind {name!r}: for_each needs device_param (the parameter naming the device)"
            )
        if not for_each and not k.get("name"):
            raise ConfigError(f"{p}: kind {name!r}: give name (the node name) or for_each")
        kinds[name] = NodeKind(
            name=name,
            executable=k["executable"],
            config=k["config"],
            for_each=for_each,
            device_param=k.get("device_param", ""),
            node_name=k.get("name", ""),
            roles=tuple(k.get("roles", ()) or ()),
            hosts=tuple(k.get("hosts", ()) or ()),
            host_backend=str(k.get("host_backend", "") or ""),
        )
        if bool(kinds[name].hosts) != bool(kinds[name].host_backend) or (kinds[name].hosts and for_each):
            raise ConfigError(
                f"{p}: kind {name!r}: a host kind needs name, hosts and host_backend (no for_each)"
            )
    graphs = data.get("graphs") or {}
    for g, spec in graphs.items():
        for k in spec.get("nodes", []) or []:
            if k not in kinds:
                raise ConfigError(f"{p}: graph {g!r} uses unknown kind {k!r} (kinds: {', '.join(kinds)})")
    desc = GraphDescription(p, kinds, graphs)
    for g in graphs:
        desc._chain(g)
        desc.arguments(g)
    return desc


def expand(
    graph: str,
    rig: str = "aloha",
    use_mock_hardware: bool = False,
    description: GraphDescription | None = None,
) -> list[NodeSpec]:
    """The nodes of `graph` for a rig (shipped name or YAML path)."""
    from duet.hardware.rig import load_rig

    desc = description or load_graph()
    rig_cfg = load_rig(rig)
    files = tuple(desc.param_files(graph))
    common = {"rig": rig, "use_mock_hardware": bool(use_mock_hardware)}
    out: list[NodeSpec] = []
    for kind_name in desc.kinds_of(graph):
        kind = desc.kinds[kind_name]
        if kind.for_each == "arms":
            devices = [a.name for a in rig_cfg.arms if not kind.roles or a.role in kind.roles]
        elif kind.for_each == "cameras":
            devices = [c.name for c in rig_cfg.cameras]
        else:
            devices = [None]
        for dev in devices:
            params = dict(common)
            if dev is not None:
                params[kind.device_param] = dev
            out.append(NodeSpec(dev or kind.node_name, kind_name, PACKAGE, kind.executable, files, params))
    if use_mock_hardware:
        out = _host(out, desc, rig_cfg, files, common)
    names = [n for s in out for n in s.node_names()]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(
            f"graph {graph!r}: two nodes named {dup[0]!r}; rename the device or the kind's node"
        )
    return out


def _host(specs: list[NodeSpec], desc: GraphDescription, rig_cfg, files, common) -> list[NodeSpec]:
    """Replace the nodes of hosted kinds by one host node (see NodeKind.hosts): its
    parameter `nodes` lists them as KIND:NAME; it runs them in its own process."""
    for kind in desc.kinds.values():
        if not kind.hosts or kind.host_backend != getattr(rig_cfg, "mock_backend", ""):
            continue
        hosted = [s for s in specs if s.kind in kind.hosts]
        if not hosted:
            continue
        at = specs.index(hosted[0])
        params = {**common, "nodes": [f"{s.kind}:{s.name}" for s in hosted]}
        host = NodeSpec(kind.node_name, kind.name, PACKAGE, kind.executable, files, params, tuple(hosted))
        rest = [s for s in specs if s not in hosted]
        specs = [*rest[:at], host, *rest[at:]]
    return specs
