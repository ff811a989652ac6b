"""Every install path finds what duet ships: the wheel (pip install <wheel>, from any
directory), the editable install (the checkout) and colcon (share/duet_ros), and the launch
files' optional extra (rviz:=) behaves where its package is absent.

The wheel test builds duet (and duet_ros) from copies of the source, installs them into a
throwaway venv that reuses this venv's packages through a .pth line (a plain path: the
editable duet finder of this venv, installed by a .pth file of its own, is NOT processed
there) and runs the CLI from an unrelated directory.
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import types
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from duet.errors import ConfigError
from duet.resources import SHIPPED, shipped_dir, shipped_files, shipped_path

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "ros2_ws" / "src" / "duet_ros"
# what a wheel build of duet reads (setup.py, the packages and the shipped folders)
DUET_SOURCES = (
    "setup.py",
    "pyproject.toml",
    "MANIFEST.in",
    "README.md",
    "duet",
    "hardware",
    "teleop",
    "data",
    "policy",
    "launch",
)


def _git_files(*folders: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--", *folders], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


def _shipped_in_repo() -> list[str]:
    """The repository's config files (yaml, json, rviz) under the shipped folders."""
    return sorted(f for f in _git_files(*SHIPPED) if f.endswith((".yaml", ".yml", ".json", ".rviz")))


def _copy_sources(root: Path, names, dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".venv")
    dest.mkdir(parents=True)
    for name in names:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    return dest


# ---------------------------------------------------------------------- the lookup (fast)


def test_every_config_in_the_repository_is_shipped():
    """A config added under launch/ or hardware/configs/ matches SHIPPED (else the wheel lacks it)."""
    assert _shipped_in_repo(), "no configs found"
    assert shipped_files() == _shipped_in_repo()


def test_shipped_files_come_from_the_package_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "launch").mkdir()
    (tmp_path / "launch" / "graph.yaml").write_text("kinds: {}\n")  # a decoy in the cwd
    assert shipped_path("launch/graph.yaml") == REPO / "launch" / "graph.yaml"
    assert shipped_dir("hardware/configs/rigs") == REPO / "hardware" / "configs" / "rigs"
    from duet.hardware.rig import load_rig, rig_path
    from duet_ros.graph import launch_dir

    assert launch_dir() == REPO / "launch"
    assert rig_path("aloha") == REPO / "hardware" / "configs" / "rigs" / "aloha.yaml"
    mine = tmp_path / "my_rig.yaml"  # a user's own rig by path still works
    shutil.copy(rig_path("aloha"), mine)
    assert rig_path(str(mine)) == mine and load_rig(str(mine)).arms


def test_missing_shipped_file_is_one_line_naming_it():
    with pytest.raises(ConfigError) as e:
        shipped_path("launch/nope.yaml")
    assert "launch/nope.yaml" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------- the wheel (slow)


def _site_packages(venv: Path) -> Path:
    rel = Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    return venv / rel


def _run(cmd, cwd, env, timeout=180):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd}: rc {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow
def test_wheel_carries_the_configs_and_the_cli_runs_from_any_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "DUET_LAUNCH_DIR")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    wheels = tmp_path / "wheels"
    src = _copy_sources(REPO, DUET_SOURCES, tmp_path / "src")  # a copy: the build leaves the checkout alone
    ros_src = _copy_sources(
        PKG, ["setup.py", "setup.cfg", "package.xml", "resource", "duet_ros"], tmp_path / "ros"
    )
    pip = [sys.executable, "-m", "pip"]
    for s in (src, ros_src):
        _run(
            [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(s)],
            tmp_path,
            env,
        )
    (wheel,) = wheels.glob("duet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = [n for n in names if n.startswith("duet/share/")]
    assert sorted(n.removeprefix("duet/share/") for n in shipped) == _shipped_in_repo()
    print(f"\nwheel {wheel.name}: {len(names)} files, shipped configs: {', '.join(shipped)}")

    # a throwaway venv reusing this venv's packages (a plain path line: no editable finder)
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    site = _site_packages(venv)
    (site / "duet_reuse.pth").write_text(str(Path(sysconfig.get_path("purelib"))) + "\n")
    vpy = venv / "bin" / "python"
    _run(
        [*pip, "--python", str(vpy), "install", "-q", "--no-deps", *map(str, wheels.glob("*.whl"))],
        tmp_path,
        env,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run(
        [
            str(vpy),
            "-c",
            "import duet, duet.hardware, duet_ros; print(duet.__file__, duet.hardware.__file__, duet_ros.__file__)",
        ],
        elsewhere,
        env,
    )
    assert all(Path(f).is_relative_to(venv) for f in where.split()), where  # the WHEEL's duet

    duet = str(venv / "bin" / "duet")
    out = _run([duet, "hw", "info", "--rig", "aloha", "--mock"], elsewhere, env)
    assert "left_follower" in out
    out = _run([duet, "hw", "info", "--rig", "aloha_sim", "--mock"], elsewhere, env)
    mine = elsewhere / "my_rig.yaml"  # the user's own rig by path, models by shipped name
    mine.write_text((REPO / "hardware" / "configs" / "rigs" / "aloha.yaml").read_text())
    out = _run([duet, "hw", "info", "--rig", str(mine), "--mock"], elsewhere, env)
    assert "left_follower" in out
    out = _run([duet, "up", "teleop", "--mock", "--dry-run"], elsewhere, env)
    assert "duet_teleop_node" in out and str(venv) in out  # parameter files from the wheel's duet/share
    assert str(REPO) not in out


# ---------------------------------------------------------------------- colcon (slow)


def _launch_stand_ins(monkeypatch, values: dict[str, str], packages: dict[str, Path] | None = None):
    """Stand-ins for launch / launch_ros (absent from the wheels environment) and, with
    `packages`, for ament_index_python (the ROS packages "installed")."""

    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return values.get(self.name, "")

    class PackageNotFoundError(KeyError):
        pass

    def share(name):
        if packages is None or name not in packages:
            raise PackageNotFoundError(name)
        return str(packages[name])

    mods = {
        "launch": types.SimpleNamespace(LaunchDescription=lambda actions: actions),
        "launch.actions": types.SimpleNamespace(
            DeclareLaunchArgument=Action, LogInfo=Action, OpaqueFunction=Action, SetEnvironmentVariable=Action
        ),
        "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=LaunchConfiguration),
        "launch_ros.actions": types.SimpleNamespace(Node=Action),
        "ament_index_python": types.SimpleNamespace(),
        "ament_index_python.packages": types.SimpleNamespace(
            PackageNotFoundError=PackageNotFoundError, get_package_share_directory=share
        ),
    }
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, "duet_ros.launch_support", raising=False)
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)
    return importlib.import_module("duet_ros.launch_support")


def _load_launch_file(path: Path):
    spec = importlib.util.spec_from_file_location(f"launch_file_{path.stem.replace('.', '_')}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_launch(mod):
    """generate_launch_description() and its OpaqueFunction: every action the launch makes."""
    actions = mod.generate_launch_description()
    (opaque,) = [a for a in actions if "function" in a.kwargs]
    return actions, opaque.kwargs["function"](types.SimpleNamespace(environment={}))


def _declared(actions) -> set[str]:
    return {a.args[0] for a in actions if a.args and isinstance(a.args[0], str)}


@pytest.mark.parametrize("symlink", [False, True], ids=["copy", "symlink_install"])
def test_colcon_installs_the_launch_files_and_everything_they_name(tmp_path, monkeypatch, symlink):
    pytest.importorskip("colcon_core")
    pytest.importorskip("colcon_ros")
    if symlink and int(metadata.version("setuptools").split(".")[0]) >= 80:
        pytest.skip("colcon --symlink-install runs `setup.py develop --editable`, gone from setuptools >= 80")
    colcon = Path(sys.executable).with_name("colcon")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DUET_LAUNCH_DIR", "COLCON_PREFIX_PATH", "AMENT_PREFIX_PATH")
    }
    cmd = [
        str(colcon),
        "--log-base",
        str(tmp_path / "log"),
        "build",
        "--base-paths",
        str(REPO / "ros2_ws" / "src"),
        "--build-base",
        str(tmp_path / "build"),
        "--install-base",
        str(tmp_path / "install"),
        "--event-handlers",
        "console_direct-",
    ]
    _run([*cmd, *(["--symlink-install"] if symlink else [])], tmp_path, env, timeout=300)

    share = tmp_path / "install" / "duet_ros" / "share" / "duet_ros"
    listing = sorted(p.relative_to(share).as_posix() for p in share.rglob("*") if p.is_file())
    print(f"\nshare/duet_ros ({'symlink' if symlink else 'copy'}): {' '.join(listing)}")
    expected = sorted(
        ["package.xml"] + [f for f in _git_files("launch") if f.endswith((".launch.py", ".yaml", ".rviz"))]
    )
    # besides them only colcon's environment hooks
    assert [f for f in listing if not f.startswith("hook/") and not f.startswith("package.")] + [
        "package.xml"
    ] == expected
    assert (
        tmp_path
        / "install"
        / "duet_ros"
        / "share"
        / "ament_index"
        / "resource_index"
        / "packages"
        / "duet_ros"
    ).is_file()

    # every launch file, run from share/ (stand-ins for launch), reads share's graph.yaml and
    # names parameter files that exist there
    values = {"config": "aloha", "use_mock_hardware": "true"}
    support = _launch_stand_ins(monkeypatch, values, packages={"duet_ros": share})
    from duet_ros.graph import load_graph

    try:
        for f in sorted((share / "launch").glob("*.launch.py")):
            mod = _load_launch_file(f)
            assert mod.GRAPH_FILE == share / "launch" / "graph.yaml", f
            desc = load_graph(mod.GRAPH_FILE)
            for g in desc.graphs:
                for p in desc.param_files(g):  # (resolved: the repository's file for --symlink-install)
                    assert p.is_file() and (symlink or p.is_relative_to(share)), p
            values.update({a: "x" for a, arg in desc.arguments(mod.GRAPH).items() if arg.required})
            actions, out = _run_launch(mod)
            assert {"use_mock_hardware", "config", "rviz"} <= _declared(actions)
            nodes = [a.kwargs for a in out if "executable" in a.kwargs]
            assert nodes and all(
                Path(p).is_file() for n in nodes for p in n["parameters"] if isinstance(p, str)
            )
        # the graph file by package share when the launch file has none beside it (a launch file
        # copied elsewhere)
        assert support.graph_file(tmp_path / "graph.yaml") == share / "launch" / "graph.yaml"
    finally:
        sys.modules.pop("duet_ros.launch_support", None)


# ---------------------------------------------------------------------- launch extras (fast)


def _extras_of(support, values):
    mod = types.SimpleNamespace(generate_launch_description=support.graph_launch("teleop"))
    _, out = _run_launch(mod)
    logs = [a.kwargs["msg"] for a in out if "msg" in a.kwargs]
    nodes = [a.kwargs for a in out if "executable" in a.kwargs]
    return logs, {n["package"]: n for n in nodes}, nodes


def test_rviz_without_its_package_says_so(monkeypatch):
    values = {"config": "aloha", "use_mock_hardware": "true", "rviz": "true"}
    support = _launch_stand_ins(monkeypatch, values, packages={})
    try:
        logs, _, nodes = _extras_of(support, values)
        assert any("rviz2 is not installed" in m for m in logs), logs
        assert {n["package"] for n in nodes} == {"duet_ros"}
    finally:
        sys.modules.pop("duet_ros.launch_support", None)


def test_rviz_where_installed(monkeypatch, tmp_path):
    values = {"config": "aloha", "use_mock_hardware": "true", "rviz": "true"}
    support = _launch_stand_ins(monkeypatch, values, packages={"rviz2": tmp_path})
    try:
        rviz = REPO / "launch" / "rviz" / "duet.rviz"
        logs, nodes, _ = _extras_of(support, values)
        assert nodes["rviz2"]["arguments"] == ["-d", str(rviz)]
        assert "duet_state_publisher_node" in {n["executable"] for n in _extras_of(support, values)[2]}
        values.update(rviz="false")
        logs, nodes, _ = _extras_of(support, values)
        assert set(nodes) == {"duet_ros"}
    finally:
        sys.modules.pop("duet_ros.launch_support", None)


def test_launch_files_name_the_graph_file_beside_them():
    for f in sorted((REPO / "launch").glob("*.launch.py")):
        tree = ast.parse(f.read_text())
        calls = [
            n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        ]
        assert "graph_file" in calls and "graph_launch" in calls, f.name
        assert f"ros2 launch duet_ros {f.name}" in f.read_text(), (
            f"{f.name}: docstring names the installed command"
        )
