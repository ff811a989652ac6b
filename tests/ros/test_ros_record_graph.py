"""The record graph over real rclpy processes with mock hardware: `duet up record --mock
--dataset PATH --task NAME` (4 mock arms, 2 mock cameras, the teleop node and the recorder
node), episodes started and ended by the recorder's services and by teleop mirroring, the
store read back with plain zarr, and a recorder killed with SIGKILL mid-episode.

Tests wait for DDS matching, services and messages with timeouts, never a fixed time.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ARMS = ["left_leader", "right_leader", "left_follower", "right_follower"]
FOLLOWERS = ["left_follower", "right_follower"]
CAMERAS = ["cam_high", "cam_low"]  # the wrist cameras are skipped: 2 shared CPU cores in CI
ARGS = [
    "--skip",
    "cam_left_wrist,cam_right_wrist",
    "--task",
    "pick_cube",
    "--operator",
    "ci",
    "--set",
    f"recorder:cameras=[{','.join(CAMERAS)}]",
    "--set",
    "teleop:teleop.gesture.enabled=false",  # the wave motion would start teleop by itself
    "--set",
    "teleop:teleop.leader_max_age_s=0.3",
    "--set",
    "teleop:teleop.follower_max_age_s=0.3",
    "--set",
    "teleop:teleop.leader_lost_s=5.0",
    "--set",
    "*:command_max_age_s=0.3",
]
LATCHED = QoSProfile(
    depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


class RecordProbe:
    """Watches the recorder (state, health lines, diagnostics) and the teleop state; calls
    the recorder's and teleop's services. Spins in a background thread."""

    def __init__(self):
        if not rclpy.ok():
            rclpy.init()
        self.node = Node(f"duet_record_probe_{os.getpid()}")
        self.lock = threading.Lock()
        self.state = ""
        self.teleop_state = ""
        self.health: list[str] = []
        self.diag: list[dict[str, str]] = []
        self.node.create_subscription(
            String, "/recorder/state", lambda m: setattr(self, "state", m.data), LATCHED
        )
        self.node.create_subscription(
            String, "/teleop/state", lambda m: setattr(self, "teleop_state", m.data), LATCHED
        )
        self.node.create_subscription(String, "/recorder/health", self._health, LATCHED)
        self.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            self._diag,
            QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
        )
        self.clients = {
            f"recorder/{a}": self.node.create_client(Trigger, f"/recorder/{a}")
            for a in ("start", "stop", "discard")
        }
        self.clients.update(
            {f"teleop/{a}": self.node.create_client(Trigger, f"/teleop/{a}") for a in ("start", "stop")}
        )
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

    def _health(self, msg):
        with self.lock:
            self.health.append(msg.data)

    def _diag(self, msg):
        from duet_ros.convert import diagnostic_values

        with self.lock:
            for st in msg.status:
                if st.name == "duet/recorder":
                    self.diag.append({"level": st.level, "message": st.message, **diagnostic_values(st)})

    def steps(self) -> int:
        with self.lock:
            d = self.diag[-1] if self.diag else {}
        return int(d.get("episode_steps", 0)) if d.get("state") == "recording" else 0

    def wait_for(self, predicate, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = predicate()
            if v:
                return v
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

    def call(self, service: str, timeout: float = 30.0):
        client = self.clients[service]
        self.wait_for(client.service_is_ready, timeout, f"/{service} service")
        fut = client.call_async(Trigger.Request())
        self.wait_for(fut.done, timeout, f"/{service} response")
        return fut.result()

    def call_until_accepted(self, service: str, timeout: float):
        """Call until success (a start is refused until every sensor delivered)."""
        last = []

        def ok():
            r = self.call(service)
            last.append(r.message)
            return r if r.success else None

        try:
            return self.wait_for(ok, timeout, f"/{service} accepted")
        except AssertionError as e:
            raise AssertionError(f"{e}; last answer: {last[-1] if last else None}") from None

    def wait_steps(self, n: int, timeout: float = 30.0):
        self.wait_for(lambda: self.steps() >= n, timeout, f"{n} recorded steps (diagnostics)")


@pytest.fixture(scope="module")
def graph(tmp_path_factory, ros_domain, ros_tools):
    root = tmp_path_factory.mktemp("record_graph")
    dataset = root / "demos.zarr"
    up = ros_tools.DuetUp("record", "--dataset", str(dataset), *ARGS, log_dir=root / "logs")
    probe = RecordProbe()
    try:
        probe.wait_for(lambda: probe.state == "idle", 90, "the recorder node (state idle)")
        probe.wait_for(lambda: probe.teleop_state == "idle", 60, "the teleop node (state idle)")
        yield {"up": up, "probe": probe, "dataset": dataset}
    except AssertionError as e:
        pytest.fail(f"{e}\n{up.logs()}")
    finally:
        probe.close()
        up.stop()


def _n_episodes(path) -> int:
    import zarr

    return int(zarr.open(str(path), mode="r")["meta/episode_ends"].shape[0])


def _flushed(path) -> int:
    """Steps of the episode being recorded that are durable (the store's recovery marker)."""
    from duet.data.store import EpisodeStore

    return int((EpisodeStore.open(path).pending or {}).get("flushed", 0))


def _episode(path, i: int) -> tuple[dict[str, np.ndarray], dict]:
    """Episode i read with plain zarr (no duet reader): its rows of every array."""
    import zarr

    g = zarr.open(str(path), mode="r")
    ends = g["meta/episode_ends"][:]
    sl = slice(int(ends[i - 1]) if i else 0, int(ends[i]))
    out = {}
    for key in g["data"].array_keys():
        arr = g["data"][key]
        out[key] = (
            arr[sl] if not key.endswith(".color") else arr[[sl.start, sl.stop - 1]]
        )  # first / last frame
    return out, dict(g["meta"].attrs)["episodes"][i]


def _check_episode(data: dict[str, np.ndarray], meta: dict, n: int) -> None:
    t = data["t"]
    assert len(t) == n == meta["length"] and n >= 50
    assert np.all(np.diff(t) > 0), "tick times not strictly increasing"
    for a in ARMS:
        pos, stamp, age = data[f"{a}.position"], data[f"{a}.stamp"], data[f"{a}.age"]
        assert pos.shape == (n, 7) and pos.dtype == np.float32
        assert np.all(np.isfinite(pos))
        assert np.all(np.diff(stamp) >= 0), f"{a}: capture stamps go back in time"
        assert np.allclose(t - stamp, age, atol=1e-3)
        assert np.all(age >= -1e-3) and np.median(age) < 0.2, f"{a}: sample ages {np.median(age):.3f} s"
    assert np.ptp(data["left_leader.position"], axis=0).max() > 0.01  # the scripted leader moved
    assert data["action"].shape == (n, 14) and data["action.stamp"].shape == (n, 2)
    for c in CAMERAS:
        img = data[f"{c}.color"]
        assert img.shape == (2, 480, 640, 3) and img.dtype == np.uint8
        assert img[-1].std() > 1.0, f"{c}: last frame is blank"
        stamp, idx = data[f"{c}.stamp"], data[f"{c}.index"]
        assert np.all(np.diff(stamp) >= 0) and np.all(np.diff(idx) >= 0)
        assert idx[-1] > idx[0], f"{c}: no new frames during the episode"
        assert np.all(data[f"{c}.age"] >= -1e-3)
    assert "cam_left_wrist.color" not in data  # only the configured cameras are recorded


@pytest.mark.timeout(240)
def test_service_episode_is_committed_readable_with_plain_zarr_and_reported(graph):
    probe, path = graph["probe"], graph["dataset"]
    try:
        n0 = len(probe.health)
        start = probe.call_until_accepted("recorder/start", 60)
        assert "recording episode" in start.message
        probe.wait_for(lambda: probe.state == "recording", 10, "state recording")
        assert probe.call("recorder/start").success is False  # already recording
        probe.wait_steps(150)
        stop = probe.call("recorder/stop")
        probe.wait_for(lambda: len(probe.health) > n0, 15, "a health line on /recorder/health")
    except AssertionError as e:
        pytest.fail(f"{e}\n{graph['up'].logs()}")
    assert stop.success, stop.message
    line = probe.health[-1]
    print("health line:", line)
    assert stop.message == line and line.startswith("episode ")
    assert " steps, " in line and " Hz, jitter p99 " in line and "dropped frames" in line and " MB" in line
    assert probe.state == "idle"
    i = _n_episodes(path) - 1
    data, meta = _episode(path, i)
    _check_episode(data, meta, int(line.split(": ", 1)[1].split(" steps")[0]))
    assert meta["task"] == "pick_cube" and meta["operator"] == "ci" and meta["started_by"] == "service"
    assert meta["use_mock_hardware"] is True and meta["mb_written"] > 0
    # teleop idle: no commands, so the action is the followers' measured position (age inf)
    assert np.all(np.isinf(data["action.age"]))
    assert np.allclose(data["action"][:, :7], data["left_follower.position"])
    # the recorder's diagnostics: a status after the episode and 1 Hz ones
    assert probe.wait_for(
        lambda: any(d["state"] == "idle" and int(d["episodes"]) == i + 1 for d in probe.diag),
        10,
        "idle diagnostics counting the episode",
    )
    assert probe.call("recorder/stop").success is False  # nothing to stop


@pytest.mark.timeout(120)
def test_discard_leaves_no_episode(graph):
    probe, path = graph["probe"], graph["dataset"]
    n = _n_episodes(path)
    try:
        probe.call_until_accepted("recorder/start", 30)
        probe.wait_steps(60)
        res = probe.call("recorder/discard")
    except AssertionError as e:
        pytest.fail(f"{e}\n{graph['up'].logs()}")
    assert res.success and "discarded" in res.message, res.message
    assert _n_episodes(path) == n
    import zarr

    g = zarr.open(str(path), mode="r")
    end = int(g["meta/episode_ends"][-1]) if n else 0
    assert g["data/t"].shape[0] == end  # the discarded rows are gone, not just hidden
    from duet.data.store import EpisodeStore

    assert EpisodeStore.open(path).pending is None


@pytest.mark.timeout(150)
def test_episode_follows_teleop_mirroring(graph):
    probe, path = graph["probe"], graph["dataset"]
    n = _n_episodes(path)
    n_health = len(probe.health)
    try:
        probe.call_until_accepted("teleop/start", 30)
        probe.wait_for(lambda: probe.teleop_state == "mirroring", 60, "teleop mirroring")
        probe.wait_for(lambda: probe.state == "recording", 10, "the recorder following teleop")
        probe.wait_steps(100)
        assert probe.call("teleop/stop").success
        probe.wait_for(lambda: len(probe.health) > n_health, 20, "the health line of the teleop episode")
    except AssertionError as e:
        pytest.fail(f"{e}\n{graph['up'].logs()}")
    assert probe.state == "idle"
    assert _n_episodes(path) == n + 1
    data, meta = _episode(path, n)
    assert meta["started_by"] == "teleop"
    # while mirroring, the actions are teleop's commands: stamped leader capture times
    cmd_age = data["action.age"]
    has_cmd = np.isfinite(cmd_age).all(axis=1)
    assert has_cmd.mean() > 0.8, f"only {has_cmd.mean():.0%} of ticks saw a command"
    assert np.median(cmd_age[has_cmd]) < 0.2
    act = data["action"][has_cmd]
    assert not np.allclose(
        act[:, :7], data["left_follower.position"][has_cmd], atol=1e-6
    )  # commands, not states


@pytest.mark.timeout(150)
def test_sigkill_mid_episode_keeps_committed_episodes(graph):
    from duet.data.store import EpisodeStore

    probe, path, up = graph["probe"], graph["dataset"], graph["up"]
    if _n_episodes(path) == 0:  # run alone: commit one episode first
        probe.call_until_accepted("recorder/start", 60)
        probe.wait_steps(60)
        assert probe.call("recorder/stop").success
    before = EpisodeStore.open(path)
    n = before.n_episodes
    committed = [before.read_episode(i, images=False) for i in range(n)]
    try:
        probe.call_until_accepted("recorder/start", 30)
        probe.wait_steps(60)
        # the writer flushes the partial episode's rows at least once a second
        probe.wait_for(lambda: _flushed(path) >= 50 or time.sleep(0.1), 30, "a flush of the partial episode")
    except AssertionError as e:
        pytest.fail(f"{e}\n{up.logs()}")
    os.kill(up.node_pid("duet_recorder_node"), signal.SIGKILL)
    marker = EpisodeStore.open(path).pending

    store = EpisodeStore.open(path)  # reopens fine: committed episodes intact
    assert store.n_episodes == n
    for i in range(n):
        again = store.read_episode(i, images=False)
        for k, v in committed[i].items():
            np.testing.assert_array_equal(again[k], v, err_msg=f"episode {i} {k} changed")
    assert store.read_frames("cam_high", [0]).shape == (1, 480, 640, 3)
    assert store.pending is not None  # the partial episode's marker, for `duet data recover`
    assert _n_episodes(path) == n  # plain zarr agrees

    res = EpisodeStore.open(path, "a").recover(commit=True)
    assert res["action"] == "committed" and res["steps"] >= 50, (res, marker)
    store = EpisodeStore.open(path)
    assert store.n_episodes == n + 1 and store.episode_meta(n)["recovered"] is True
    t = store.read_episode(n, ["t"])["t"]
    assert len(t) == res["steps"] and np.all(np.diff(t) > 0)
