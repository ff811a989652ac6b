"""ROS test support: a unique ROS domain per test run, `duet up` process groups, and a
probe node that watches a running graph. Tests wait for DDS matching and for messages
with timeouts (>= 5 s), never for a fixed time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
import pytest

try:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage
    from sensor_msgs.msg import JointState as JointStateMsg
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from duet_ros import convert
except ImportError:  # no ROS 2 in this environment: the ROS tests are not collected
    collect_ignore_glob = ["test_*.py"]
    Node = object

# One ROS domain per test run (pytest process), so parallel runs do not see each other.
DOMAIN_ID = str(10 + os.getpid() % 90)


@pytest.fixture(scope="session", autouse=True)
def ros_domain():
    old = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    os.environ["ROS_DOMAIN_ID"] = DOMAIN_ID
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    yield DOMAIN_ID
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


class DuetUp:
    """`duet up GRAPH --mock ...` as a subprocess (its nodes are its children)."""

    def __init__(self, graph: str, *args: str, log_dir: Path):
        self.log_dir = log_dir
        cmd = [sys.executable, "-m", "duet.cli", "up", graph, "--mock", "--log-dir", str(log_dir), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def node_pid(self, executable: str, timeout: float = 20.0) -> int:
        import psutil

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                try:
                    if any(executable in part for part in child.cmdline()):
                        return child.pid
                except psutil.Error:
                    continue
            time.sleep(0.05)
        raise AssertionError(f"no {executable} process under duet up")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                import psutil

                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def logs(self) -> str:
        out = []
        for f in sorted(self.log_dir.glob("*.log")):
            out.append(f"== {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)


@pytest.fixture
def duet_up(tmp_path):
    """Factory: duet_up(graph, *args) starts a graph; every one is stopped at teardown."""
    started: list[DuetUp] = []

    def start(graph: str, *args: str) -> DuetUp:
        d = DuetUp(graph, *args, log_dir=tmp_path / f"logs{len(started)}")
        started.append(d)
        return d

    yield start
    for d in reversed(started):
        d.stop()


class Probe:
    """Subscribes to joint states, commands, images, diagnostics and the teleop state;
    spins in a background thread; offers waits with timeouts (never fixed sleeps)."""

    def __init__(self, arms: list[str], followers: list[str], cameras: list[str]):
        if not rclpy.ok():
            rclpy.init()
        self.node = Node(f"duet_test_probe_{os.getpid()}")
        self.mapper = convert.TimeMapper()
        self.lock = threading.Lock()
        self.joints: dict[str, deque] = defaultdict(
            lambda: deque(maxlen=5000)
        )  # (recv_mono, stamp, position)
        self.commands: dict[str, deque] = defaultdict(lambda: deque(maxlen=5000))
        self.images: dict[str, deque] = defaultdict(lambda: deque(maxlen=500))  # (recv_mono, stamp, nbytes)
        self.diag: dict[str, deque] = defaultdict(
            lambda: deque(maxlen=200)
        )  # (recv_mono, level, message, values)
        self.teleop_state = ""
        self.events: list[str] = []
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for a in arms:
            self.node.create_subscription(
                JointStateMsg, f"/{a}/joint_states", lambda m, a=a: self._js(self.joints, a, m), rel
            )
        for f in followers:
            self.node.create_subscription(
                JointStateMsg, f"/{f}/command", lambda m, f=f: self._js(self.commands, f, m), rel
            )
        for c in cameras:
            self.node.create_subscription(
                CompressedImage,
                f"/{c}/image/compressed",
                lambda m, c=c: self._img(c, m),
                qos_profile_sensor_data,
            )
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._diag, rel)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.node.create_subscription(String, "/teleop/state", self._state, latched)
        self.node.create_subscription(
            String, "/teleop/events", lambda m: self.events.append(m.data), QoSProfile(depth=50)
        )
        self.clients = {
            a: self.node.create_client(Trigger, f"/teleop/{a}") for a in ("start", "stop", "pause")
        }
        self.last_image: dict[str, CompressedImage] = {}
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop and rclpy.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.node.destroy_node()

    def _js(self, store, name, msg):
        with self.lock:
            store[name].append(
                (time.monotonic(), self.mapper.from_msg(msg.header.stamp), np.array(msg.position))
            )

    def _img(self, name, msg):
        with self.lock:
            self.images[name].append(
                (time.monotonic(), self.mapper.from_msg(msg.header.stamp), len(msg.data))
            )
            self.last_image[name] = msg

    def _diag(self, msg):
        with self.lock:
            for st in msg.status:
                self.diag[st.name].append(
                    (time.monotonic(), st.level, st.message, convert.diagnostic_values(st))
                )

    def _state(self, msg):
        self.teleop_state = msg.data

    # ---------------------------------------------------------------- waits

    def wait_for(self, predicate, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = predicate()
            if v:
                return v
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

    def wait_state(self, state: str, timeout: float):
        self.wait_for(
            lambda: self.teleop_state == state, timeout, f"teleop state {state!r} (now {self.teleop_state!r})"
        )

    def call(self, action: str, timeout: float = 10.0):
        client = self.clients[action]
        self.wait_for(lambda: client.service_is_ready(), timeout, f"/teleop/{action} service")
        fut = client.call_async(Trigger.Request())
        self.wait_for(lambda: fut.done(), timeout, f"/teleop/{action} response")
        return fut.result()

    def samples(self, store, name, since: float = 0.0):
        with self.lock:
            return [s for s in store[name] if s[0] >= since]

    def diag_since(self, name: str, since: float):
        with self.lock:
            return [d for d in self.diag[name] if d[0] >= since]


@pytest.fixture(scope="session")
def _rclpy_session():
    if not rclpy.ok():
        rclpy.init()
    yield
    rclpy.try_shutdown()


def make_probe(arms, followers, cameras) -> Probe:
    return Probe(list(arms), list(followers), list(cameras))


def lag_aligned_errors(leader, follower, mapping, max_lag: float = 0.3, step: float = 0.01):
    """Per follower sample, |follower - mapping(leader at stamp - lag)| per joint, for the lag
    (leader capture -> follower capture) that fits best. leader/follower: lists of
    (recv, stamp, position). Returns (lag, errors (m, n))."""
    ls = np.array([s[1] for s in leader])
    lp = np.array([s[2] for s in leader])
    fs = np.array([s[1] for s in follower])
    fp = np.array([s[2] for s in follower])
    best = None
    for lag in np.arange(0.0, max_lag + 1e-9, step):
        t = fs - lag
        ok = (t >= ls[0]) & (t <= ls[-1])
        if ok.sum() < 10:
            continue
        lead = np.stack([np.interp(t[ok], ls, lp[:, j]) for j in range(lp.shape[1])], axis=1)
        err = np.abs(fp[ok] - np.apply_along_axis(mapping, 1, lead))
        score = float(np.median(err.max(axis=1)))
        if best is None or score < best[0]:
            best = (score, lag, err)
    assert best is not None, "leader and follower samples do not overlap in time"
    return best[1], best[2]


@pytest.fixture(scope="session")
def ros_tools():
    """The helpers above for test modules (test files do not import conftest)."""
    import types

    return types.SimpleNamespace(DuetUp=DuetUp, make_probe=make_probe, lag_aligned_errors=lag_aligned_errors)
