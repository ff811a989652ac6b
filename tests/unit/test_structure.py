"""The project's structure: rules about where code lives, checked by scanning the product
code's syntax trees (no imports, no ROS needed).

One of each: a helper that exists once is imported everywhere else, never copied (issue 12).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# product code: the cores, the duet package, the ROS nodes and the benchmarks (not tests/)
PRODUCT = ("duet", "hardware", "teleop", "data", "policy", "ros2_ws/src/duet_ros/duet_ros", "bench")
RUNTIME = "ros2_ws/src/duet_ros/duet_ros/runtime.py"


@functools.cache
def _trees() -> dict[str, ast.Module]:
    out = {}
    for top in PRODUCT:
        for p in sorted((ROOT / top).rglob("*.py")):
            out[p.relative_to(ROOT).as_posix()] = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
    assert len(out) > 50, f"found only {len(out)} product modules under {ROOT}"
    return out


def _where(pred) -> set[str]:
    """The modules with a node for which pred(node) is true."""
    return {path for path, tree in _trees().items() if any(pred(n) for n in ast.walk(tree))}


def _attr(name: str):
    return lambda n: isinstance(n, ast.Attribute) and n.attr == name


def _defines(*names: str):
    return lambda n: isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in names


def _method_names(cls: ast.ClassDef) -> set[str]:
    return {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}


def test_one_float_sample_recorder():
    """duet.stats.Samples; no other class records floats and gives percentiles."""
    recorders = _where(
        lambda n: (
            isinstance(n, ast.ClassDef)
            and _method_names(n) & {"percentiles", "percentiles_ms", "percentiles_and_reset", "pct"}
        )
    )
    assert recorders == {"duet/stats.py"}
    assert _where(_defines("Samples", "LatencyStats")) == {"duet/stats.py"}


def test_one_realtime_scheduling_helper():
    """duet.clock.set_realtime / realtime(): the only code that sets a scheduling policy."""
    assert _where(_attr("sched_setscheduler")) == {"duet/clock.py"}
    assert _where(_attr("SCHED_FIFO")) == {"duet/clock.py"}


def test_one_latched_qos_profile():
    """duet_ros.runtime.LATCHED / latched_qos(depth): the only TRANSIENT_LOCAL profile."""
    assert _where(_attr("TRANSIENT_LOCAL")) == {RUNTIME}


def test_one_json_sanitiser_and_one_iso_time_helper():
    """duet.jsonio.jsonable and duet.clock.utc_now_iso."""
    assert _where(_attr("generic")) == {"duet/jsonio.py"}  # np.generic: numpy scalars -> Python
    assert _where(_attr("isoformat")) == {"duet/clock.py"}
    assert not _where(_defines("_jsonable", "_clean", "_json_default", "_now_iso", "_iso_now"))


def test_every_node_main_is_run_node():
    """Each node process's main() is runtime.run_node (signals, spin, safe-state close())."""
    mains = {}
    for path, tree in _trees().items():
        for f in tree.body:
            if path.startswith("ros2_ws/") and isinstance(f, ast.FunctionDef) and f.name == "main":
                mains[path] = any(
                    isinstance(c, ast.Call) and getattr(c.func, "id", None) == "run_node" for c in ast.walk(f)
                )
    assert "ros2_ws/src/duet_ros/duet_ros/sim_node.py" in mains and len(mains) >= 6
    assert [p for p, uses in mains.items() if not uses] == []
    # in duet_ros, executors are made by run_node (nodes) and the graph client (orchestrate) only
    executors = _where(
        lambda n: (
            isinstance(n, ast.Call)
            and getattr(n.func, "id", "") in ("SingleThreadedExecutor", "MultiThreadedExecutor")
        )
    )
    assert {p for p in executors if p.startswith("ros2_ws/")} <= {
        RUNTIME,
        "ros2_ws/src/duet_ros/duet_ros/orchestrate.py",
    }


def test_one_temporal_ensembler():
    """The policy server's EnsembleBuffer; ACT has no ensembling of its own."""
    ensemblers = {
        (path, n.name)
        for path, tree in _trees().items()
        for n in ast.walk(tree)
        if isinstance(n, ast.ClassDef) and "ensembl" in n.name.lower()
    }
    assert ensemblers == {("policy/server/scheduler.py", "EnsembleBuffer")}
    act = next(
        n
        for n in ast.walk(_trees()["policy/act.py"])
        if isinstance(n, ast.ClassDef) and n.name == "ACTConfig"
    )
    fields = {
        s.target.id for s in act.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
    }
    assert "temporal_ensemble_k" not in fields


def test_policies_are_prepared_for_inference_in_the_factory_only():
    """policy.factory.for_inference sets device, layout and autocast (bench_server calls it)."""
    setters = _where(
        lambda n: (
            isinstance(n, (ast.Assign, ast.AnnAssign))
            and any(
                isinstance(t, ast.Attribute) and t.attr == "autocast_dtype"
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            )
        )
    )
    assert setters == {"policy/factory.py", "policy/base.py"}  # base: the None default


def test_one_state_dict_check():
    """policy.checkpoint.state_dict_mismatch: checkpoint loads and backbone weights both use it."""

    def compares_shapes(n):  # `tuple(x.shape) != tuple(y.shape)`
        return (
            isinstance(n, ast.Compare)
            and isinstance(n.ops[0], ast.NotEq)
            and all(
                isinstance(s, ast.Call)
                and getattr(s.func, "id", "") == "tuple"
                and s.args
                and isinstance(s.args[0], ast.Attribute)
                and s.args[0].attr == "shape"
                for s in (n.left, *n.comparators)
            )
        )

    assert _where(compares_shapes) == {"policy/checkpoint.py"}
    users = _where(lambda n: isinstance(n, ast.Call) and getattr(n.func, "id", "") == "state_dict_mismatch")
    assert {"policy/checkpoint.py", "policy/backbone.py"} <= users


# ---------------------------------------------------------------------------- layers

# Every import runs down this stack (issue 12): duet core (duet/errors.py, clock.py,
# config.py, ...) <- hardware <- teleop, data <- policy <- apps <- duet_ros. teleop and data
# are side by side and do not import each other; duet/cli.py (the composition root) names
# modules by string and stands above all. A layer may import itself and what it lists here.
LAYERS_BELOW = {
    "duet": set(),
    "hardware": {"duet"},
    "teleop": {"duet", "hardware"},
    "data": {"duet", "hardware"},
    "policy": {"duet", "hardware", "data"},
    "apps": {"duet", "hardware", "teleop", "data", "policy"},
}
CORE_FOLDERS = {"hardware": "hardware", "teleop": "teleop", "data": "data", "policy": "policy"}


def _module_name(path: str) -> str:
    """The import name of a product file: hardware/sim/world.py -> duet.hardware.sim.world."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts if parts[0] == "duet" else ["duet", *parts])


def _layer(module: str) -> str:
    """The layer of a module name: duet.hardware.x -> hardware, duet.apps.x -> apps,
    duet_ros.x -> duet_ros, duet.cli -> cli, any other duet.x -> duet (the core); '' if foreign."""
    top, _, rest = module.partition(".")
    if top == "duet_ros":
        return "duet_ros"
    if top != "duet":
        return ""
    sub = rest.partition(".")[0]
    if sub in CORE_FOLDERS or sub == "apps":
        return sub
    return "cli" if sub == "cli" else "duet"


def _type_only(tree: ast.Module) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (imports for annotations only)."""
    return {
        id(n)
        for b in ast.walk(tree)
        if isinstance(b, ast.If) and getattr(b.test, "id", getattr(b.test, "attr", None)) == "TYPE_CHECKING"
        for s in b.body
        for n in ast.walk(s)
    }


def _imports(path: str, tree: ast.Module, type_only: bool = True) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, at module level or inside functions,
    relative ones resolved, plus import_module("...") / __import__("...") with a literal name;
    type_only=False leaves out the imports under `if TYPE_CHECKING:`."""
    here = _module_name(path)
    package = here if path.endswith("__init__.py") else here.rpartition(".")[0]
    skip = set() if type_only else _type_only(tree)
    out = []
    for n in ast.walk(tree):
        if id(n) in skip:
            continue
        if isinstance(n, ast.Import):
            out += [(n.lineno, a.name) for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                up = package.split(".")[: len(package.split(".")) - (n.level - 1)]
                base = ".".join([*up, base] if base else up)
            out.append((n.lineno, base))
            if base == "duet":  # from duet import apps
                out += [(n.lineno, f"duet.{a.name}") for a in n.names]
        elif (
            isinstance(n, ast.Call)
            and n.args
            and isinstance(n.args[0], ast.Constant)
            and isinstance(n.args[0].value, str)
            and (
                getattr(n.func, "attr", None) == "import_module"
                or getattr(n.func, "id", None) in ("import_module", "__import__")
            )
        ):
            out.append((n.lineno, n.args[0].value))
    return out


def _layer_of_file(path: str) -> str:
    if path.startswith("duet/apps/"):
        return "apps"
    if path == "duet/cli.py":
        return "cli"
    return _layer(_module_name(path))


def test_imports_run_down_the_layers():
    """No library (duet core, hardware, teleop, data, policy) imports an application, duet_ros
    or a layer above it, not even inside a function; the applications import no duet_ros."""
    layered = {p: t for p, t in _trees().items() if p.split("/")[0] in ("duet", *CORE_FOLDERS)}
    assert {"duet/apps/sim.py", "hardware/factory.py", "teleop/replay.py"} <= set(layered)
    wrong = []
    for path, tree in layered.items():
        mine = _layer_of_file(path)
        if mine == "cli":
            continue  # the composition root
        for line, module in _imports(path, tree):
            theirs = _layer(module)
            if theirs and theirs != mine and theirs not in LAYERS_BELOW[mine]:
                wrong.append(f"{path}:{line} ({mine}) imports {module} ({theirs})")
    assert wrong == []


def test_layer_check_sees_every_form_of_import():
    src = (
        "import duet_ros.cli\nfrom duet import apps\nfrom ..policy import train\n"
        "def f():\n    import importlib\n    importlib.import_module('duet.apps.sim')\n"
    )
    found = [m for _, m in _imports("teleop/x.py", ast.parse(src))]
    assert {"duet_ros.cli", "duet.apps", "duet.policy", "duet.apps.sim"} <= set(found)
    typed = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from duet.apps import sim\n")
    assert "duet.apps" in [m for _, m in _imports("teleop/x.py", typed)]  # an arrow all the same
    assert "duet.apps" not in [m for _, m in _imports("teleop/x.py", typed, type_only=False)]
    assert [
        _layer(m) for m in ("duet.hardware.sim", "duet.config", "duet.apps.hw", "duet_ros.x", "numpy")
    ] == ["hardware", "duet", "apps", "duet_ros", ""]


def test_mocks_are_chosen_by_the_factory():
    """use_mock_hardware is read in hardware/factory.py, the one camera (and arm) factory:
    no other library module imports hardware/mock to run it (hardware/cameras has the drivers
    only; annotations may name a mock type); of the applications, `duet hw scan --mock` scans
    a fake bus."""
    users = {
        path
        for path, tree in _trees().items()
        if path.split("/")[0] in ("duet", *CORE_FOLDERS)
        and not path.startswith("hardware/mock/")
        and any(m.startswith("duet.hardware.mock") for _, m in _imports(path, tree, type_only=False))
    }
    assert users == {"hardware/factory.py", "duet/apps/hw.py"}
    assert _where(_defines("make_camera")) == {"hardware/factory.py"}
