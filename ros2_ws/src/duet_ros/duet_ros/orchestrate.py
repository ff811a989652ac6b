"""Scripted teleop demonstrations THROUGH THE ROS GRAPH on the MuJoCo sim rig.

`duet sim collect --via-ros` brings up the record graph on a sim rig (`duet up record --sim`:
the sim host process with every arm and camera node, the teleop node, the recorder node;
real-time clock) and drives it as an operator would, per episode:

  1. /teleop/stop (followers hold), /sim/reset (objects placed by the next seed)
  2. /teleop/start: the followers ramp to the leaders' pose, then mirror them at 50 Hz
  3. /recorder/start once mirroring (the recorder then samples every device at its 50 Hz tick;
     episodes are driven by service here, so a teleop pause never commits a failed episode)
  4. /sim/run_operator: the task's scripted operator moves the leader puppets; the followers
     only ever see it through leader -> teleop -> follower command topics
  5. when the operator is done: /recorder/stop (commit) or, for a flagged episode (task not
     done at the end), /recorder/discard unless keep_failed; then /teleop/stop

Every node's output goes to LOG_DIR/<node>.log. This module is the ROS client side; the
hardware, data and policy cores stay ROS-free.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duet.errors import DuetError


@dataclass
class CollectOptions:
    dataset: str  # episode store directory
    episodes: int = 4
    seed: int = 0  # seed of the first episode (then seed+1, ...)
    rig: str = "aloha_sim"  # sim rig name or YAML path
    task_label: str = ""  # task name stored with every episode (default: the rig's sim task)
    keep_failed: bool = False
    log_dir: Path | None = None
    settle_s: float = 0.3  # recorded after the operator finished (the task held at the end)
    start_timeout_s: float = 90.0  # graph up: MuJoCo load, GL contexts, DDS discovery
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> params (duet up --set)
    isolate: bool = True  # a private ROS domain on localhost (unless ROS_DOMAIN_ID is set)


@dataclass
class EpisodeOutcome:
    index: int
    seed: int | None
    success: bool
    stage: int
    max_stage_reached: int
    max_stage: int
    stage_name: str
    flagged: bool
    kept: bool
    line: str  # the recorder's health line (or why nothing was stored)
    wall_s: float

    def summary(self) -> str:
        verdict = "success" if self.success else "failure"
        why = (
            "task failed"
            if not self.success
            else "not held at the end"
            if self.stage < self.max_stage
            else "teleop left mirroring or the operator's IK fell short"
        )
        flag = f"  FLAGGED ({why})" if self.flagged else ""
        return (
            f"episode {self.index} seed {self.seed}: {verdict}, stage {self.max_stage_reached}/{self.max_stage} "
            f"({self.stage_name}), end stage {self.stage}, {self.wall_s:.1f} s{flag} -> {self.line}"
        )


# The teleop settings scripted collection needs: the ALOHA start gesture off (the operator
# closes both grippers during a hand-over), and sample-age limits that a loaded 2-core
# machine keeps (the defaults suit a dedicated workstation).
DEFAULT_OVERRIDES: dict[str, dict[str, Any]] = {
    "teleop": {
        "teleop.gesture.enabled": False,
        "teleop.leader_max_age_s": 0.3,
        "teleop.leader_lost_s": 3.0,
        "teleop.follower_max_age_s": 0.3,
        # a follower gripper closed on the cube stays ~0.7 (normalized) from its leader's
        "teleop.track_error_limit": 1.2,
        "teleop.track_error_time_s": 2.0,
    },
    "recorder": {"follow_teleop": False, "operator": "scripted"},
    "*": {"command_max_age_s": 0.3},
}


def isolate_ros_domain() -> None:
    """A private ROS domain on localhost for this run, unless the user chose one."""
    if "ROS_DOMAIN_ID" not in os.environ:
        os.environ["ROS_DOMAIN_ID"] = str(120 + os.getpid() % 100)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def start_graph(graph: str, rig: str, overrides: dict[str, dict[str, Any]], log_dir: Path | None):
    """`duet up GRAPH --mock --config RIG` as child processes (duet_ros.launcher)."""
    from duet_ros.graph import expand, load_graph
    from duet_ros.launcher import GraphRunner

    desc = load_graph()
    specs = expand(graph, rig, True, desc)
    runner = GraphRunner(specs, overrides, log_dir=log_dir)
    runner.start()
    return runner


class GraphClient:
    """A client node beside a running graph: service calls and latched state topics, spun
    in a background thread; waits have timeouts and fail early when a node died."""

    def __init__(self, runner=None, log_dir: Path | None = None):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from std_msgs.msg import String

        from duet_ros.runtime import LATCHED, latched_qos

        self.runner = runner
        self.log_dir = log_dir
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(f"duet_orchestrator_{os.getpid()}", context=self.context)
        self.state: dict[str, str] = {}
        self.sim: dict[str, Any] = {}
        self.health: list[str] = []
        self._lock = threading.Lock()
        for topic in ("/teleop/state", "/recorder/state", "/policy/state"):
            self.node.create_subscription(String, topic, lambda m, t=topic: self._set(t, m.data), LATCHED)
        self.node.create_subscription(String, "/sim/status", self._sim, LATCHED)
        self.node.create_subscription(
            String, "/recorder/health", lambda m: self.health.append(m.data), latched_qos(10)
        )
        self._clients: dict[str, Any] = {}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="orchestrator-spin", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down while spinning
                return

    def _set(self, topic: str, value: str) -> None:
        with self._lock:
            self.state[topic] = value

    def _sim(self, msg) -> None:
        try:
            s = json.loads(msg.data)
        except ValueError:
            return
        with self._lock:
            self.sim = s

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    # ------------------------------------------------------------------ waits and calls

    def _check_alive(self) -> None:
        if self.runner is None:
            return
        dead = [
            (c.spec.name, c.proc.returncode)
            for c in self.runner.children
            if c.proc is not None and c.proc.poll() is not None
        ]
        if dead:
            name, rc = dead[0]
            log = f" (log: {self.log_dir / (name + '.log')})" if self.log_dir else ""
            raise DuetError(f"node {name} exited with status {rc}{log}")

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        end = time.monotonic() + timeout
        while True:
            v = predicate()
            if v:
                return v
            self._check_alive()
            if time.monotonic() > end:
                raise DuetError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.02)

    def _client(self, service: str):
        from std_srvs.srv import Trigger

        client = self._clients.get(service)
        if client is None:
            client = self._clients[service] = self.node.create_client(Trigger, service)
        return client

    def wait_service(self, service: str, timeout: float) -> None:
        self.wait_for(self._client(service).service_is_ready, timeout, f"service {service}")

    def call(self, service: str, timeout: float = 30.0) -> tuple[bool, str]:
        from std_srvs.srv import Trigger

        client = self._client(service)
        self.wait_for(client.service_is_ready, timeout, f"service {service}")
        fut = client.call_async(Trigger.Request())
        self.wait_for(fut.done, timeout, f"{service} response")
        r = fut.result()
        return bool(r.success), str(r.message)

    def set_parameter(self, node: str, name: str, value: str, timeout: float = 10.0) -> tuple[bool, str]:
        """Set a string parameter of a node (rcl_interfaces SetParameters); (ok, reason)."""
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        service = f"/{node}/set_parameters"
        client = self._clients.get(service)
        if client is None:
            client = self._clients[service] = self.node.create_client(SetParameters, service)
        self.wait_for(client.service_is_ready, timeout, f"service {service}")
        req = SetParameters.Request(
            parameters=[
                Parameter(
                    name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
                )
            ]
        )
        fut = client.call_async(req)
        self.wait_for(fut.done, timeout, f"{service} response")
        (r,) = fut.result().results
        return bool(r.successful), str(r.reason)

    def topic_state(self, topic: str) -> str:
        with self._lock:
            return self.state.get(topic, "")

    def sim_status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self.sim)


def start_recording(client: GraphClient, timeout: float) -> None:
    """/recorder/start, retried while the recorder has no fresh data from every device yet
    (right after bring-up: DDS discovery)."""
    end = time.monotonic() + timeout
    reason = ""
    while time.monotonic() < end:
        ok, reason = client.call("/recorder/start")
        if ok or reason.startswith("already recording"):
            client.wait_for(
                lambda: client.topic_state("/recorder/state") == "recording", 5.0, "recorder state"
            )
            return
        time.sleep(0.5)
    raise DuetError(f"the recorder did not start within {timeout:g} s ({reason}); see the recorder log")


def run_episode(
    client: GraphClient, index: int, opts: CollectOptions, log: Callable[[str], None]
) -> EpisodeOutcome:
    """One scripted teleop episode through the graph (module doc, steps 1-5)."""
    wall0 = time.monotonic()
    if client.topic_state("/teleop/state") not in ("", "idle"):
        client.call("/teleop/stop")
        client.wait_for(lambda: client.topic_state("/teleop/state") == "idle", 10.0, "teleop idle")
    ok, msg = client.call("/sim/reset")
    if not ok:
        raise DuetError(f"/sim/reset refused: {msg}")
    resets = client.wait_for(
        lambda: client.sim_status().get("resets", 0) and client.sim_status(),
        10.0,
        "the sim status after reset",
    )
    seed = resets.get("seed")
    log(f"  reset: {msg}")
    ok, msg = client.call("/teleop/start")
    if not ok:
        raise DuetError(f"/teleop/start refused: {msg}")
    client.wait_for(
        lambda: client.topic_state("/teleop/state") == "mirroring",
        30.0,
        "teleop mirroring (ramp to the leader pose)",
    )
    start_recording(client, 30.0)
    ok, msg = client.call("/sim/run_operator", timeout=60.0)
    if not ok:
        client.call("/recorder/discard")
        raise DuetError(f"/sim/run_operator refused: {msg}")
    log(f"  {msg}")
    duration = client.wait_for(
        lambda: client.sim_status().get("operator_duration_s"), 10.0, "the operator's plan"
    )
    last = -1.0
    while True:  # the operator runs; report progress, watch teleop
        s = client.sim_status()
        if s.get("operator") == "done":
            break
        if client.topic_state("/teleop/state") != "mirroring":
            break  # teleop left mirroring (paused on a fault): the recorder committed; judged below
        t = float(s.get("operator_time_s", 0.0))
        if t - last >= 2.0:
            last = t
            log(
                f"  operator {t:4.1f}/{duration:.1f} s, stage {s.get('stage')} (max {s.get('max_stage_reached')})"
            )
        client._check_alive()
        time.sleep(0.1)
        if time.monotonic() - wall0 > 4 * duration + 60:
            raise DuetError(f"episode {index}: the operator did not finish within {4 * duration + 60:.0f} s")
    time.sleep(opts.settle_s)
    s = client.sim_status()
    teleop_ok = client.topic_state("/teleop/state") == "mirroring"
    done = (
        bool(s.get("success"))
        and int(s.get("stage", 0)) >= int(s.get("max_stage", 1))
        and s.get("plan_reachable", True) is not False
    )
    flagged = not (done and teleop_ok)
    n_health = len(client.health)
    # What the recorder cannot know: the scene's seed and how the demonstration went.
    outcome = {
        "seed": seed,
        "sim": True,
        "success": bool(s.get("success")),
        "max_stage": int(s.get("max_stage_reached", 0)),
        "final_stage": int(s.get("stage", 0)),
        "object_poses": s.get("object_poses"),
    }
    ok, why = client.set_parameter(
        "recorder", "episode_meta", json.dumps({k: v for k, v in outcome.items() if v is not None})
    )
    if not ok:
        log(f"  recorder refused the episode metadata: {why}")
    if flagged and not opts.keep_failed:
        ok, line = client.call("/recorder/discard", timeout=90.0)
        kept = False
        if not ok:
            line = f"discard refused: {line}"
    else:
        ok, line = client.call("/recorder/stop", timeout=90.0)
        kept = ok
        if not ok:
            line = f"stop refused: {line}"
            if not teleop_ok and len(client.health) > n_health:  # already committed when teleop paused
                line, kept = client.health[-1], True
    if not teleop_ok:
        line += f" (teleop left mirroring: {client.topic_state('/teleop/state')})"
    client.call("/teleop/stop")
    return EpisodeOutcome(
        index=index,
        seed=seed,
        success=bool(s.get("success")),
        stage=int(s.get("stage", 0)),
        max_stage_reached=int(s.get("max_stage_reached", 0)),
        max_stage=int(s.get("max_stage", 0)),
        stage_name=str(s.get("stage_name", "")),
        flagged=flagged,
        kept=kept,
        line=line,
        wall_s=time.monotonic() - wall0,
    )


def collect(opts: CollectOptions, log: Callable[[str], None] = print) -> list[EpisodeOutcome]:
    """Bring up the record graph on a sim rig and record opts.episodes scripted teleop
    episodes into opts.dataset. Returns one outcome per episode."""
    from duet.hardware.rig import load_rig

    rig = load_rig(opts.rig)
    if rig.mock_backend != "sim":
        raise DuetError(f"rig {rig.name!r}: collection through the graph needs a sim rig (mock_backend: sim)")
    if opts.isolate:
        isolate_ros_domain()
    overrides: dict[str, dict[str, Any]] = {k: dict(v) for k, v in DEFAULT_OVERRIDES.items()}
    overrides["recorder"].update(dataset=str(opts.dataset), task=opts.task_label or rig.sim_task)
    overrides["sim"] = {"seed": int(opts.seed)}
    for node, params in opts.overrides.items():
        overrides.setdefault(node, {}).update(params)
    log_dir = opts.log_dir
    t0 = time.monotonic()
    runner = start_graph("record", opts.rig, overrides, log_dir)
    names = ", ".join(c.spec.name for c in runner.children)
    log(f"graph record on {rig.name} (sim, real time): {names}; logs in {log_dir}")
    client = None
    outcomes: list[EpisodeOutcome] = []
    try:
        client = GraphClient(runner, log_dir)
        for svc in (
            "/sim/reset",
            "/sim/run_operator",
            "/teleop/start",
            "/recorder/stop",
            "/recorder/discard",
        ):
            client.wait_service(svc, opts.start_timeout_s)
        client.wait_for(lambda: client.sim_status(), opts.start_timeout_s, "/sim/status")
        log(
            f"graph up in {time.monotonic() - t0:.1f} s (ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')})"
        )
        for i in range(opts.episodes):
            log(f"episode {i + 1}/{opts.episodes}")
            out = run_episode(client, i, opts, log)
            outcomes.append(out)
            log(out.summary())
    finally:
        if client is not None:
            client.close()
        runner.stop()
    return outcomes


# ---------------------------------------------------------------------------- deploy


@dataclass
class DeployOutcome:
    seconds: float  # how long the policy commanded
    commands: dict[str, int]  # follower -> command messages seen on /<follower>/command
    command_rate_hz: float  # per follower, mean
    max_stage_reached: int
    max_stage: int
    success: bool
    policy_state: str
    events: list[str]

    def summary(self) -> str:
        n = ", ".join(f"{k} {v}" for k, v in self.commands.items())
        return (
            f"policy commanded {self.seconds:.1f} s: {n} commands ({self.command_rate_hz:.1f} Hz per follower), "
            f"stage {self.max_stage_reached}/{self.max_stage} ({'success' if self.success else 'no success'})"
        )


def deploy(
    rig: str,
    checkpoint: str,
    seconds: float = 15.0,
    seed: int = 100000,
    log_dir: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    isolate: bool = True,
    start_timeout_s: float = 120.0,
    log: Callable[[str], None] = print,
) -> DeployOutcome:
    """`duet up deploy --sim --checkpoint DIR` in real time: reset the sim, /policy/start,
    let the policy drive the followers for `seconds` (counting the commands that reach the
    followers' command topics), /policy/stop."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState as JointStateMsg
    from std_msgs.msg import String

    from duet.hardware.rig import load_rig

    rig_cfg = load_rig(rig)
    if rig_cfg.mock_backend != "sim":
        raise DuetError(f"rig {rig_cfg.name!r}: deploying in sim needs a sim rig (mock_backend: sim)")
    if isolate:
        isolate_ros_domain()
    # observation age limits a loaded 2-core machine keeps (the server's defaults suit a workstation)
    over: dict[str, dict[str, Any]] = {
        "policy": {
            "checkpoint": str(checkpoint),
            "device": "cpu",
            "server.max_state_age_s": 0.3,
            "server.max_camera_age_s": 0.4,
        },
        "sim": {"seed": int(seed)},
        "*": {"command_max_age_s": 0.3},
    }
    for node, params in (overrides or {}).items():
        over.setdefault(node, {}).update(params)
    t0 = time.monotonic()
    runner = start_graph("deploy", rig, over, log_dir)
    log(
        f"graph deploy on {rig_cfg.name} (sim, real time): {', '.join(c.spec.name for c in runner.children)}; "
        f"logs in {log_dir}"
    )
    client = None
    try:
        client = GraphClient(runner, log_dir)
        followers = [p[1] for p in rig_cfg.pairs]
        counts = dict.fromkeys(followers, 0)
        events: list[str] = []
        lock = threading.Lock()

        def _count(name: str) -> None:
            with lock:
                counts[name] += 1

        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for f in followers:
            client.node.create_subscription(JointStateMsg, f"/{f}/command", lambda m, f=f: _count(f), rel)
        client.node.create_subscription(
            String, "/policy/events", lambda m: events.append(m.data), QoSProfile(depth=50)
        )
        for svc in ("/sim/reset", "/policy/start", "/policy/stop"):
            client.wait_service(svc, start_timeout_s)
        client.wait_for(lambda: client.sim_status(), start_timeout_s, "/sim/status")
        log(f"graph up in {time.monotonic() - t0:.1f} s")
        ok, msg = client.call("/sim/reset")
        log(f"  reset: {msg}")
        ok, msg = client.call("/policy/start", timeout=60.0)
        if not ok:
            raise DuetError(f"/policy/start refused: {msg} (log: {log_dir})")
        log(f"  /policy/start: {msg}")
        with lock:
            base = dict(counts)
        start = time.monotonic()
        last = start
        while time.monotonic() - start < seconds:
            client._check_alive()
            time.sleep(0.1)
            if time.monotonic() - last >= 3.0:
                last = time.monotonic()
                s = client.sim_status()
                with lock:
                    n = sum(counts[f] - base[f] for f in followers)
                log(
                    f"  {last - start:4.1f}/{seconds:g} s: {n} commands, stage {s.get('stage')} "
                    f"(max {s.get('max_stage_reached')})"
                )
        elapsed = time.monotonic() - start
        with lock:
            got = {f: counts[f] - base[f] for f in followers}
        s = client.sim_status()
        ok, msg = client.call("/policy/stop")
        return DeployOutcome(
            seconds=elapsed,
            commands=got,
            command_rate_hz=sum(got.values()) / max(1, len(got)) / max(elapsed, 1e-9),
            max_stage_reached=int(s.get("max_stage_reached", 0)),
            max_stage=int(s.get("max_stage", 0)),
            success=bool(s.get("success")),
            policy_state=client.topic_state("/policy/state"),
            events=events[-10:],
        )
    finally:
        if client is not None:
            client.close()
        runner.stop()
