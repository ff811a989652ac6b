"""The sim rig through the ROS graph: one host process runs every sim arm and camera node
(one MuJoCo world) with the same node names and topics as the mock graph; /sim/reset,
/teleop/start and /sim/run_operator move the followers through leader -> teleop ->
follower; a scripted episode collected through the record graph lands in the store.

The graph-expansion tests start no process. The others run real rclpy processes in a
private ROS domain (conftest) and wait for messages with timeouts, never a fixed time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import yaml

from duet_ros.graph import expand, load_graph
from duet_ros.launcher import GraphRunner, node_params_yaml

ARMS = ["left_leader", "right_leader", "left_follower", "right_follower"]
FOLLOWERS = ["left_follower", "right_follower"]
CAMERA = "cam_high"
# A 2-core CI machine renders one small camera in real time beside the whole graph.
SMALL = ["--cameras", CAMERA, "--camera-size", "120x160", "--camera-fps", "25"]


def small_rig(path) -> str:
    from duet.config import to_dict
    from duet.hardware.rig import load_rig

    rig = load_rig("aloha_sim")
    rig.cameras = [c for c in rig.cameras if c.name == CAMERA]
    rig.cameras[0].width, rig.cameras[0].height, rig.cameras[0].fps = 160, 120, 25
    path.write_text(yaml.safe_dump(to_dict(rig), sort_keys=False))
    return str(path)


# ---------------------------------------------------------------------------- expansion (no processes)


def test_sim_rig_expands_to_one_host_with_the_same_node_names():
    mock = expand("teleop", "aloha", True)
    sim = expand("teleop", "aloha_sim", True)
    assert [s.kind for s in sim] == ["sim", "state_publisher", "teleop"]
    host = sim[0]
    assert host.executable == "duet_sim_node" and host.name == "sim"
    # the hosted nodes are the mock graph's arm and camera nodes: same names, same parameters
    hosted = {h.name: h for h in host.hosted}
    assert set(hosted) == {a for a in ARMS} | {"cam_high", "cam_left_wrist", "cam_right_wrist"}
    assert hosted["left_follower"].parameters == {
        "rig": "aloha_sim",
        "use_mock_hardware": True,
        "arm": "left_follower",
    }
    assert host.parameters["nodes"] == [f"{h.kind}:{h.name}" for h in host.hosted]
    assert sim[1].parameters == {**mock[-1].parameters, "rig": "aloha_sim"}  # teleop unchanged
    assert host.param_files == mock[0].param_files


def test_real_hardware_and_mock_rigs_keep_one_process_per_device():
    assert "sim" not in [s.kind for s in expand("teleop", "aloha", True)]
    real = expand("teleop", "aloha_sim", False)  # no use_mock_hardware: the real device nodes
    assert [s.kind for s in real].count("arm") == 4 and all(not s.hosted for s in real)


def test_host_params_file_carries_each_hosted_nodes_section_and_overrides():
    (host,) = [s for s in expand("record", "aloha_sim", True) if s.hosted]
    doc = yaml.safe_load(node_params_yaml(host, {"seed": 7}, {"left_follower": {"command_max_age_s": 0.2}}))
    assert doc["sim"]["ros__parameters"]["seed"] == 7
    assert doc["left_follower"]["ros__parameters"] == {
        "rig": "aloha_sim",
        "use_mock_hardware": True,
        "arm": "left_follower",
        "command_max_age_s": 0.2,
    }
    runner = GraphRunner(
        [host], {"left_follower": {"fault_scenario": "x"}, "*": {"diagnostics_rate_hz": 2.0}}
    )
    try:
        text = runner.children[0].argv[-1]
        doc = yaml.safe_load(open(text).read())
        assert doc["left_follower"]["ros__parameters"]["fault_scenario"] == "x"
        assert doc["cam_high"]["ros__parameters"]["diagnostics_rate_hz"] == 2.0
    finally:
        runner.stop()


def test_graph_description_declares_the_host_kind():
    desc = load_graph()
    kind = desc.kinds["sim"]
    assert kind.hosts == ("arm", "camera") and kind.host_backend == "sim"
    from duet_ros.sim_node import HOSTED_KINDS

    assert {k: desc.kinds[k].device_param for k in kind.hosts} == {k: v[1] for k, v in HOSTED_KINDS.items()}


def test_duet_up_sim_flag_is_mock_with_the_sim_rig():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "duet.cli",
            "up",
            "record",
            "--sim",
            "--dataset",
            "/tmp/never.zarr",
            "--set",
            "left_follower:command_max_age_s=0.25",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "duet_sim_node --ros-args -r __node:=sim" in out.stdout
    assert "duet_arm_node" not in out.stdout and "duet_camera_node" not in out.stdout
    assert "command_max_age_s: 0.25" in out.stdout and "rig: aloha_sim" in out.stdout


# ---------------------------------------------------------------------------- processes


class SimProbe:
    def __init__(self, probe):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Int32, String
        from std_srvs.srv import Trigger

        self.p = probe
        self.stages: list[int] = []
        self.status: dict = {}
        self.lock = threading.Lock()
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        probe.node.create_subscription(Int32, "/sim/stage", self._stage, QoSProfile(depth=50))
        probe.node.create_subscription(String, "/sim/status", self._status, latched)
        self.clients = {s: probe.node.create_client(Trigger, f"/sim/{s}") for s in ("reset", "run_operator")}

    def _stage(self, m):
        with self.lock:
            self.stages.append(m.data)

    def _status(self, m):
        with self.lock:
            self.status = json.loads(m.data)

    def call(self, name: str, timeout: float = 30.0):
        from std_srvs.srv import Trigger

        c = self.clients[name]
        self.p.wait_for(c.service_is_ready, timeout, f"/sim/{name} service")
        fut = c.call_async(Trigger.Request())
        self.p.wait_for(fut.done, timeout, f"/sim/{name} response")
        return fut.result()


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(150)
def test_sim_host_serves_mock_topics_and_the_operator_moves_the_followers(
    tmp_path, ros_domain, ros_tools, _rclpy_session
):
    rig = small_rig(tmp_path / "rig.yaml")
    up = ros_tools.DuetUp(
        "teleop",
        "--config",
        rig,
        "--set",
        "teleop:teleop.gesture.enabled=false",
        "--set",
        "teleop:teleop.leader_max_age_s=0.3",
        "--set",
        "teleop:teleop.follower_max_age_s=0.3",
        "--set",
        "teleop:teleop.track_error_limit=1.2",
        "--set",
        "*:command_max_age_s=0.3",
        log_dir=tmp_path / "logs",
    )
    probe = ros_tools.make_probe(ARMS, FOLLOWERS, [CAMERA])
    sim = SimProbe(probe)
    try:
        up.node_pid("duet_sim_node")
        with pytest.raises(AssertionError):
            up.node_pid("duet_arm_node", timeout=0.5)  # the sim host replaces the per-device processes
        # the mock graph's topics, from one process
        for a in ARMS:
            probe.wait_for(lambda a=a: probe.samples(probe.joints, a), 90, f"/{a}/joint_states\n{up.logs()}")
        probe.wait_for(lambda: probe.samples(probe.images, CAMERA), 30, f"/{CAMERA}/image/compressed")
        probe.wait_for(lambda: probe.diag_since("duet/sim", 0.0), 30, "sim diagnostics")
        probe.wait_for(lambda: probe.diag_since("duet/arm/left_follower", 0.0), 30, "arm diagnostics")

        r = sim.call("reset")
        assert r.success and "seed 0" in r.message, r.message
        probe.wait_state("idle", 30)
        assert probe.call("start").success
        probe.wait_state("mirroring", 30)
        start = probe.samples(probe.joints, "right_follower")[-1][2]
        r = sim.call("run_operator", timeout=60)
        assert r.success, r.message
        probe.wait_for(lambda: sim.status.get("operator") == "running", 20, "operator running (/sim/status)")

        def moved():
            now = probe.samples(probe.joints, "right_follower")[-1][2]
            return float(np.max(np.abs(now[:6] - start[:6]))) > 0.1

        probe.wait_for(moved, 30, f"the right follower to follow the operator\n{up.logs()}")
        assert probe.samples(probe.commands, "right_follower"), "teleop commanded the follower"
        probe.wait_for(lambda: sim.stages, 10, "/sim/stage messages")
        assert sim.status["task"] == "transfer_cube" and sim.status["seed"] == 0
        assert 0 <= sim.status["max_stage_reached"] <= sim.status["max_stage"] == 4
    finally:
        probe.close()
        rc = up.stop()
    assert rc == 0, up.logs()


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.timeout(150)
def test_one_episode_collected_through_the_ros_graph_is_committed(tmp_path, ros_domain):
    from duet.data.store import EpisodeStore

    store = tmp_path / "demos.zarr"
    report = tmp_path / "report.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "duet.cli",
            "sim",
            "collect",
            "--via-ros",
            "--episodes",
            "1",
            "--seed",
            "3",
            "--keep-failed",
            "--out",
            str(store),
            *SMALL,
            "--report",
            str(report),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        capture_output=True,
        text=True,
        timeout=140,
    )
    logs = "\n".join(
        f"== {f.name}\n{f.read_text()[-1500:]}" for f in sorted((tmp_path / "logs").glob("*.log"))
    )
    assert out.returncode in (0, 1), out.stdout + out.stderr + logs  # 1: the task failed (machine load)
    (ep,) = json.loads(report.read_text())["episodes"]
    assert ep["kept"] and ep["seed"] == 3, ep
    assert "episode 0" in ep["line"]
    s = EpisodeStore.open(store)
    assert s.n_episodes == 1
    meta = s.episode_meta(0)
    assert meta["task"] == "transfer_cube" and meta["operator"] == "scripted"
    # The outcome the orchestrator knows and the recorder does not, set through the
    # recorder's episode_meta parameter before the commit.
    assert meta["seed"] == 3 and meta["sim"] is True and meta["success"] == ep["success"]
    assert meta["max_stage"] == ep["max_stage_reached"] and set(meta["object_poses"]) == {"box"}
    # the whole scripted episode (8 s of operator) recorded at the 50 Hz tick
    assert int(s.episode_lengths[0]) >= 0.8 * 8.0 * 50
    data = s.read_episode(0, images=True)
    assert any(k.endswith(CAMERA) or CAMERA in k for k in data), list(data)
    assert "episode 0 seed 3" in out.stdout
