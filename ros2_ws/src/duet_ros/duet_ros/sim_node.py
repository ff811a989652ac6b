"""Sim host node: every sim arm and camera node of a graph in ONE process (one MuJoCo world).

With use_mock_hardware and a rig whose mock_backend is sim (e.g. config aloha_sim), the
graph (launch/graph.yaml, kind `sim`) starts this process instead of one process per arm
and camera: the sim devices must share one SimWorld, which lives in one process. It runs
the very same ArmNode / CameraNode classes, one per device listed in its `nodes` parameter
(KIND:NAME), each with its own node name, the graph's parameter files and its own
parameters, so every topic, service and parameter downstream is identical to the mock and
real graphs: each hosted camera node publishes /<camera>/camera_info beside its images, with
intrinsics from the scene camera's field of view and the render size
(hardware/sim/cameras.py sim_intrinsics). The world runs in real time (the nodes give the devices the wall clock).

On top, the sim itself (topics relative to the node name, /sim/...):
  ~/reset          std_srvs/Trigger: start an episode: operator detached, arms and leader
                   puppets at the start pose, objects placed by the next seed (seed, seed+1,
                   ...); the reply names the seed. Stop teleop first (followers jump).
  ~/run_operator   std_srvs/Trigger: the task's scripted operator plans this episode from
                   the object poses and starts moving the leader puppets (a person at the
                   leaders); the reply gives the plan's duration
  ~/stop_operator  std_srvs/Trigger: the puppets stay where they are
  ~/stage          std_msgs/Int32, the task stage now (0 .. max stage), at status_rate_hz
  ~/status         std_msgs/String, latched JSON at status_rate_hz: episode, seed, stage,
                   max_stage_reached, max_stage, success, operator (idle|running|done),
                   operator_time_s, operator_duration_s, plan_reachable, sim and lag figures
  /diagnostics     1 Hz: the world's health (mode, physics steps, real-time lag resets)
"""

from __future__ import annotations

import inspect
import json
import sys
import threading
from dataclasses import dataclass
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile
from std_msgs.msg import Int32, String
from std_srvs.srv import Trigger

from duet.clock import MonotonicClock
from duet.config import field
from duet.errors import ConfigError, DuetError
from duet.hardware.rig import load_rig
from duet_ros import convert
from duet_ros.arm_node import DIAG_QOS
from duet_ros.params import declare_config
from duet_ros.runtime import LATCHED, run_node

# hosted kind -> (module:Class of the node, the parameter naming its device); the kinds of
# launch/graph.yaml this host can run
HOSTED_KINDS = {
    "arm": ("duet_ros.arm_node:ArmNode", "arm"),
    "camera": ("duet_ros.camera_node:CameraNode", "camera"),
}


@dataclass
class SimNodeConfig:
    rig: str = field(
        "aloha_sim", help="rig: a shipped rig name or a rig YAML path (its mock_backend must be sim)"
    )
    use_mock_hardware: bool = field(True, help="must be true: the sim is the mock backend of a sim rig")
    nodes: list[str] = field(
        factory=list,
        help="the nodes to host, KIND:NAME (arm:left_follower, camera:cam_high); set by the graph",
    )
    seed: int = field(0, help="seed of the first /sim/reset (then seed+1, ...)")
    render_quality: str = field("fast", help="sim cameras: fast (no shadows / multisampling) or full")
    operator_correct: bool = field(
        True, help="the scripted operator looks at the scene mid-episode and corrects its path"
    )
    status_rate_hz: float = field(10.0, help="~/stage and ~/status publish rate, Hz")
    diagnostics_rate_hz: float = field(1.0, help="diagnostics publish rate, Hz")

    def __post_init__(self):
        if not self.use_mock_hardware:
            raise ConfigError(
                "sim node: use_mock_hardware must be true (the sim is the mock backend of a sim rig)"
            )
        for n in self.nodes:
            kind, sep, name = str(n).partition(":")
            if not sep or not name or kind not in HOSTED_KINDS:
                raise ConfigError(
                    f"sim node: nodes entry {n!r}: expected KIND:NAME with KIND one of {', '.join(HOSTED_KINDS)}"
                )
        if self.render_quality not in ("fast", "full"):
            raise ConfigError(f"sim node: render_quality {self.render_quality!r}: fast or full")
        if self.status_rate_hz <= 0 or self.diagnostics_rate_hz <= 0:
            raise ConfigError("sim node: status_rate_hz and diagnostics_rate_hz must be > 0")


class _StartedOperator:
    """A scripted operator started at episode time t0: its plan runs from then on."""

    def __init__(self, operator: Any, t0: float):
        self.operator = operator
        self.t0 = t0

    def pose(self, side: str, t: float):
        return self.operator.pose(side, t - self.t0)


class SimHostNode(Node):
    """The sim node itself: world, services, stage. The hosted device nodes are built by
    `host_nodes` beside it (same process, each node its own executor thread)."""

    # two executor threads (runtime.run_node): planning in ~/run_operator must not stop ~/status
    executor_threads = 2

    def __init__(self, **node_kwargs: Any):
        super().__init__("sim", **node_kwargs)
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

        from duet.hardware.sim.world import world_for

        self.cfg = declare_config(self, SimNodeConfig)
        self.rig = load_rig(self.cfg.rig)
        if self.rig.mock_backend != "sim":
            raise ConfigError(
                f"sim node: rig {self.rig.name!r} has mock_backend {self.rig.mock_backend!r}; "
                "use a sim rig (e.g. --config aloha_sim)"
            )
        self.world = world_for(self.rig)
        self.world.render_quality = self.cfg.render_quality
        self.clock = MonotonicClock()
        self.mapper = convert.TimeMapper()
        self._lock = threading.Lock()
        self._next_seed = int(self.cfg.seed)
        self._resets = 0
        self._op: _StartedOperator | None = None
        self._plan = None
        self._last_error = ""
        # planning takes a while: the sim services get their own callback group (and thread)
        group = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=group)
        self.create_service(Trigger, "~/run_operator", self._on_run_operator, callback_group=group)
        self.create_service(Trigger, "~/stop_operator", self._on_stop_operator, callback_group=group)
        self.pub_stage = self.create_publisher(Int32, "~/stage", QoSProfile(depth=10))
        self.pub_status = self.create_publisher(String, "~/status", LATCHED)
        self.pub_diag = self.create_publisher(convert.DiagnosticArray, "/diagnostics", DIAG_QOS)
        self.create_timer(1.0 / self.cfg.status_rate_hz, self._publish_status)
        self.create_timer(1.0 / self.cfg.diagnostics_rate_hz, self._publish_diagnostics)

    # ------------------------------------------------------------------ services

    def _on_reset(self, req, resp):
        with self._lock:
            seed = self._next_seed
            self._next_seed += 1
            self.world.set_operator(None)
            self._op, self._plan = None, None
            poses = self.world.reset(seed=seed)
            self._resets += 1
        where = ", ".join(f"{k} at ({v[0]:.3f}, {v[1]:.3f})" for k, v in poses.items())
        resp.success = True
        resp.message = f"episode {self.world.episode} seed {seed}: {self.world.task.name}, {where}"
        self.get_logger().info(f"reset: {resp.message}")
        self._publish_status()
        return resp

    def _on_run_operator(self, req, resp):
        from duet.hardware.sim.operator import ScriptedOperator, plan_episode

        try:
            plan = plan_episode(self.world, rate_hz=self.world.control_rate_hz)
        except DuetError as e:
            resp.success, resp.message = False, f"no plan: {e}"
            return resp
        with self._lock:
            op = _StartedOperator(
                ScriptedOperator(plan, world=self.world if self.cfg.operator_correct else None),
                self.world.episode_time(),
            )
            self._op, self._plan = op, plan
            self.world.set_operator(op)
        resp.success = True
        resp.message = f"operator running: {plan.task}, {plan.duration:.2f} s" + (
            "" if plan.reachable else " (IK could not reach every waypoint)"
        )
        self.get_logger().info(resp.message)
        return resp

    def _on_stop_operator(self, req, resp):
        with self._lock:
            running = self._op is not None
            if running:
                for side in ("left", "right"):
                    self.world.set_puppet(side, self.world.puppet_pose(side))  # detaches the operator
                self._op = None
        resp.success, resp.message = True, "operator stopped" if running else "no operator running"
        return resp

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        w = self.world
        with self._lock:
            op, plan = self._op, self._plan
        t = w.episode_time()
        if op is None:
            state, op_t = ("done" if plan is not None else "idle"), 0.0
        else:
            op_t = max(0.0, t - op.t0)
            state = "running" if op_t < plan.duration else "done"
        return {
            "episode": int(w.episode),
            "resets": self._resets,
            "seed": w.seed,
            "object_poses": {k: [round(float(x), 6) for x in v] for k, v in w.object_poses.items()},
            "task": w.task.name,
            "stage": int(w.stage),
            "max_stage_reached": int(w.max_stage_reached),
            "max_stage": int(w.task.max_stage),
            "stage_name": w.task.stage_name(int(w.max_stage_reached)) if w.max_stage_reached else "none",
            "success": bool(w.success),
            "operator": state,
            "operator_time_s": round(op_t, 3),
            "operator_duration_s": round(plan.duration, 3) if plan is not None else 0.0,
            "plan_reachable": bool(plan.reachable) if plan is not None else None,
            "episode_time_s": round(t, 3),
            "mode": w.mode,
            "realtime_lag_resets": int(w.rt_lag_resets),
        }

    def _publish_status(self) -> None:
        try:
            s = self.status()
        except Exception as e:  # never kill the executor over a status line
            self._last_error = f"status: {type(e).__name__}: {e}"
            return
        self.pub_stage.publish(Int32(data=s["stage"]))
        self.pub_status.publish(String(data=json.dumps(s)))

    def _publish_diagnostics(self) -> None:
        now = self.clock.now()
        values = dict(self.world.health())
        values.update(resets=self._resets, next_seed=self._next_seed, last_error=self._last_error)
        level, msg = convert.OK, f"{self.world.mode}, stage {self.world.stage}/{self.world.task.max_stage}"
        if self._last_error:
            level, msg = convert.WARN, self._last_error
        status = convert.diagnostic_status("duet/sim", self.rig.name, level, msg, values)
        self.pub_diag.publish(convert.diagnostic_array([status], now, self.mapper))

    def close(self) -> None:
        self.world.set_operator(None)


def _class(target: str) -> type:
    import importlib

    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def make_hosted(cls: type, **node_kwargs: Any):
    """An instance of a duet node class built with rclpy Node keyword arguments (its own
    name, parameter files and overrides). Node classes that take **node_kwargs get them
    directly; for one whose __init__ takes none, they are injected into its base class's
    __init__ through a subclass (the class itself runs unchanged)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return cls(**node_kwargs)
    base = next(b for b in cls.__mro__[1:] if issubclass(b, Node))

    def _init(self, name, *args, **kwargs):
        base.__init__(self, name, *args, **{**kwargs, **node_kwargs})

    inject = type(f"_{cls.__name__}Kwargs", (base,), {"__init__": _init})
    return type(f"Hosted{cls.__name__}", (cls, inject), {})()


def ros_param_files(argv: list[str]) -> list[str]:
    """The --params-file arguments of a node command line (the graph's files and ours)."""
    out, ros = [], False
    for i, a in enumerate(argv):
        if a == "--ros-args":
            ros = True
        elif a == "--" and ros:
            ros = False
        elif ros and a == "--params-file" and i + 1 < len(argv):
            out.append(argv[i + 1])
    return out


def host_nodes(host: SimHostNode, argv: list[str], context=None) -> list[Node]:
    """Build every node of host.cfg.nodes: its own name, the command line's parameter files
    (the graph's files and, under `duet up`, a section per hosted node), and the graph
    parameters rig / use_mock_hardware / device set explicitly (ros2 launch passes them
    to the host only)."""
    from rclpy.parameter import Parameter

    files = ros_param_files(argv)
    nodes: list[Node] = []
    for entry in host.cfg.nodes:
        kind, _, name = entry.partition(":")
        target, device_param = HOSTED_KINDS[kind]
        cli = ["--ros-args", "-r", f"__node:={name}"]
        for f in files:
            cli += ["--params-file", f]
        overrides = [
            Parameter("rig", value=host.cfg.rig),
            Parameter("use_mock_hardware", value=True),
            Parameter(device_param, value=name),
        ]
        kwargs: dict[str, Any] = {
            "cli_args": cli,
            "use_global_arguments": False,
            "parameter_overrides": overrides,
        }
        if context is not None:
            kwargs["context"] = context
        nodes.append(make_hosted(_class(target), **kwargs))
    return nodes


def _make_nodes():
    """The sim node, then every hosted node (run_node closes those already made if one fails)."""
    host = SimHostNode()
    yield host
    hosted = host_nodes(host, sys.argv)
    host.get_logger().info(
        f"sim {host.rig.name} ({host.world.task.name}, {host.world.mode}): hosting "
        + ", ".join(n.get_name() for n in hosted)
    )
    yield from hosted


def main() -> int:
    # run_node spins each node in its own executor and thread, as if every node were its own
    # process (as in the mock and real graphs). One executor for all would rebuild a wait set
    # of every node's entities (lifecycle and parameter services, QoS events...) in Python on
    # every message and timer of any node: with 4 arms that kept a core half busy and starved
    # the arms' and cameras' loops of the GIL.
    return run_node(_make_nodes, "duet_sim_node")


if __name__ == "__main__":
    raise SystemExit(main())
