"""The single graph description (launch/graph.yaml), its parameter files, the launch files
and `duet up`, checked without ROS (launch / launch_ros are not installable here: the
launch files are parsed, not executed)."""

from __future__ import annotations

import ast
import dataclasses
from importlib import metadata, util
from pathlib import Path

import pytest
import yaml

from duet.config import flatten, from_dict, unflatten
from duet.errors import ConfigError
from duet_ros.graph import expand, launch_dir, load_graph
from duet_ros.params import declared_parameters, help_for

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
PKG = REPO / "ros2_ws" / "src" / "duet_ros"


def setup_py_nodes() -> dict[str, str]:
    tree = ast.parse((PKG / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "NODES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no NODES mapping")


def test_graph_file_is_the_one_in_launch():
    assert launch_dir().resolve() == LAUNCH.resolve()
    desc = load_graph()
    assert {"bringup", "teleop"} <= set(desc.graph_names())


def test_every_kind_has_an_existing_executable_and_config():
    desc = load_graph()
    nodes = setup_py_nodes()
    installed = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    for kind in desc.kinds.values():
        assert kind.executable in nodes, f"{kind.executable} is not a console script in duet_ros/setup.py"
        target = nodes[kind.executable]
        module, _, func = target.partition(":")
        assert util.find_spec(module) is not None, f"{target}: module missing"
        assert f"def {func}(" in Path(util.find_spec(module).origin).read_text()
        assert installed.get(kind.executable) == target, (
            f"{kind.executable}: pip install -e ros2_ws/src/duet_ros"
        )
        cls = kind.config_class()
        assert dataclasses.is_dataclass(cls)
        assert all(help_for(cls, k) for k in declared_parameters(cls)), (
            f"{cls.__name__}: a field without help"
        )


def test_package_files_for_colcon():
    assert (PKG / "resource" / "duet_ros").is_file()
    xml = (PKG / "package.xml").read_text()
    assert "<name>duet_ros</name>" in xml and "<build_type>ament_python</build_type>" in xml
    cfg = (PKG / "setup.cfg").read_text()
    assert "install_scripts=$base/lib/duet_ros" in cfg  # where ros2 run / launch_ros look


def _param_sections(path: Path) -> dict[str, dict]:
    data = yaml.safe_load(path.read_text())
    out = {}
    for node, body in data.items():
        assert set(body) == {"ros__parameters"}, f"{path.name}: {node}: only ros__parameters allowed"
        out[node] = flatten(body["ros__parameters"])
    return out


@pytest.mark.parametrize("graph", ["bringup", "teleop"])
def test_parameter_files_exist_and_name_only_declared_parameters(graph):
    desc = load_graph()
    specs = expand(graph, "aloha", True, desc)
    declared_by_node = {s.name: set(declared_parameters(desc.kinds[s.kind].config_class())) for s in specs}
    every = set().union(*declared_by_node.values())
    files = desc.param_files(graph)
    assert files and all(f.is_file() for f in files)
    for f in files:
        for node, params in _param_sections(f).items():
            names = every if node == "/**" else declared_by_node.get(node)
            assert names is not None, f"{f.name}: section {node!r} is not a node of graph {graph!r}"
            unknown = sorted(set(params) - names)
            assert not unknown, f"{f.name}: {node}: {unknown[0]!r} is not a declared parameter (typo?)"


@pytest.mark.parametrize("graph", ["bringup", "teleop"])
def test_parameters_build_valid_configs(graph):
    """Files + graph parameters -> each node's config, exactly as the nodes will build it."""
    desc = load_graph()
    for spec in expand(graph, "aloha", True, desc):
        cls = desc.kinds[spec.kind].config_class()
        values = dict(declared_parameters(cls))
        for f in spec.param_files:
            for node, params in _param_sections(f).items():
                if node in ("/**", spec.name):
                    values.update({k: v for k, v in params.items() if k in values})
        values.update(spec.parameters)
        cfg = from_dict(cls, unflatten(values, cls))
        assert cfg.rig == "aloha" and cfg.use_mock_hardware is True


def test_expand_teleop_graph_and_mock_changes_only_one_parameter():
    real = expand("teleop", "aloha", False)
    mock = expand("teleop", "aloha", True)
    assert [s.name for s in real] == [
        "left_leader",
        "right_leader",
        "left_follower",
        "right_follower",
        "cam_high",
        "cam_low",
        "cam_left_wrist",
        "cam_right_wrist",
        "state_publisher",
        "teleop",
    ]
    for r, m in zip(real, mock):
        assert (r.name, r.executable, r.param_files) == (m.name, m.executable, m.param_files)
        assert {k: v for k, v in r.parameters.items() if k != "use_mock_hardware"} == {
            k: v for k, v in m.parameters.items() if k != "use_mock_hardware"
        }
        assert (r.parameters["use_mock_hardware"], m.parameters["use_mock_hardware"]) == (False, True)
    kw = mock[0].launch_kwargs()
    assert kw["package"] == "duet_ros" and kw["executable"] == "duet_arm_node" and kw["name"] == "left_leader"
    assert kw["parameters"][-1]["arm"] == "left_leader"
    assert [Path(p).name for p in kw["parameters"][:-1]] == ["bringup.yaml", "teleop.yaml"]


def test_bad_graph_descriptions_fail_with_one_line(tmp_path):
    g = tmp_path / "graph.yaml"
    g.write_text(
        "kinds: {a: {executable: x, config: 'duet_ros.configs:ArmNodeConfig', for_each: arms}}\n"
        "graphs: {g: {nodes: [a]}}\n"
    )
    with pytest.raises(ConfigError, match="device_param"):
        load_graph(g)
    g.write_text("kinds: {}\ngraphs: {g: {nodes: [nope]}}\n")
    with pytest.raises(ConfigError, match="unknown kind 'nope'"):
        load_graph(g)
    g.write_text("kinds: {}\ngraphs: {a: {include: [b]}, b: {include: [a]}}\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_graph(g)
    with pytest.raises(ConfigError, match="graph 'no_such_graph' unknown"):
        expand("no_such_graph", "aloha", True)


def _launch_graph(path: Path) -> tuple[str, set[str]]:
    tree = ast.parse(path.read_text())
    consts = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)
    }
    imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imports |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    defined = {
        t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
    }
    defined |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in defined, f"{path.name}: no generate_launch_description"
    assert "graph.yaml" in strings, f"{path.name} must read launch/graph.yaml"
    return consts["GRAPH"], imports


def test_launch_files_reference_only_existing_graphs_and_modules():
    desc = load_graph()
    files = sorted(LAUNCH.glob("*.launch.py"))
    graphs = set()
    for f in files:
        graph, imports = _launch_graph(f)
        assert graph in desc.graphs, f"{f.name}: graph {graph!r} not in graph.yaml"
        assert f.name == f"{graph}.launch.py"
        for mod in imports:
            top = mod.split(".")[0]
            assert top in ("pathlib", "launch", "launch_ros", "duet_ros"), f"{f.name}: imports {mod}"
            if top == "duet_ros":  # launch / launch_ros exist only on a ROS workstation
                assert util.find_spec(mod) is not None, f"{f.name}: imports {mod}, which does not exist"
        graphs.add(graph)
    assert graphs == set(desc.graphs), "every graph has its launch file and vice versa"
    support = (PKG / "duet_ros" / "launch_support.py").read_text()
    declared = {}  # DeclareLaunchArgument(name, default_value=...) calls, by name
    for node in ast.walk(ast.parse(support)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            default = next((k.value for k in node.keywords if k.arg == "default_value"), None)
            declared[node.args[0].value] = default.value if isinstance(default, ast.Constant) else default
    assert declared.get("use_mock_hardware") == "false"
    assert "config" in declared


def test_duet_up_dry_run_and_errors(capsys):
    from duet.cli import main

    assert (
        main(
            [
                "up",
                "teleop",
                "--mock",
                "--dry-run",
                "--set",
                "left_follower:fault_scenario=lossy_1pct",
                "--set",
                'teleop:teleop.pairs=[{"leader": "left_leader", "follower": "left_follower"}]',
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("/")]
    assert len(lines) == 10  # 4 arms, 4 cameras, state_publisher, teleop
    assert all("--params-file" in ln and "__node:=" in ln for ln in lines)
    assert "fault_scenario: lossy_1pct" in out
    assert "teleop.pairs: '[{" in out  # structures travel as JSON strings (ROS parameters are flat)
    assert main(["up", "teleop", "--mock", "--dry-run", "--only", "teleop,cam_high"]) == 0
    assert len([ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("/")]) == 2
    assert main(["up", "teleop", "--mock", "--set", "nobody:x=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nobody" in err
    assert main(["up", "teleop", "--only", "cam_nope", "--dry-run"]) == 2
    assert main(["up", "bringup", "--set", "left_leader:rate_hz"]) == 2
