"""The policy node in its graph (real rclpy processes): `duet up deploy --mock` with a micro
ACT checkpoint (random weights). Start over the service, commands reach both followers,
the diagnostics report chunks, stop returns to idle."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]
rclpy = pytest.importorskip("rclpy")

FOLLOWERS = ("left_follower", "right_follower")
CAMS = ("cam_high", "cam_low")


def micro_checkpoint(path):
    from duet.policy.checkpoint import save_checkpoint
    from duet.policy.factory import make_config, make_policy

    home = np.array([0, -0.96, 1.16, 0, -0.3, 0, 0.5] * 2, np.float32)
    cfg = make_config(
        "act",
        "micro",
        base={"camera_names": list(CAMS), "state_dim": 14, "action_dim": 14, "image_size": [96, 128]},
    )
    stats = {k: {"mean": home, "std": np.full(14, 0.05, np.float32)} for k in ("observation.state", "action")}
    return save_checkpoint(path, make_policy("act", cfg, stats))


class Probe:
    def __init__(self, domain: int):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String
        from std_srvs.srv import Trigger

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = Node("server_probe", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        rel = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.cmds = {f: [] for f in FOLLOWERS}
        self.state: list[str] = []
        self.diag: list[dict] = []
        for f in FOLLOWERS:
            self.node.create_subscription(
                JointState,
                f"/{f}/command",
                lambda m, f=f: self.cmds[f].append((time.monotonic(), np.array(m.position))),
                rel,
            )
        self.node.create_subscription(String, "/policy/state", lambda m: self.state.append(m.data), latched)
        self.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diag.extend(
                {kv.key: kv.value for kv in s.values} for s in m.status if s.name == "duet/policy"
            ),
            rel,
        )
        self.clients = {a: self.node.create_client(Trigger, f"/policy/{a}") for a in ("start", "stop")}
        self.Trigger = Trigger

    def spin_until(self, cond, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.05)
            v = cond()
            if v:
                return v
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def call(self, action: str):
        c = self.clients[action]
        self.spin_until(lambda: c.service_is_ready(), 60, f"/policy/{action}")
        fut = c.call_async(self.Trigger.Request())
        self.spin_until(fut.done, 20, f"/policy/{action} answer")
        return fut.result()

    def close(self):
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.mark.timeout(180)
def test_policy_node_drives_both_followers_from_a_checkpoint(tmp_path, monkeypatch):
    ckpt = micro_checkpoint(tmp_path / "ckpt")
    domain = 10 + (os.getpid() + 41) % 90
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # the probe, in this process
    cmd = [
        sys.executable,
        "-m",
        "duet.cli",
        "up",
        "deploy",
        "--mock",
        "--skip",
        "cam_left_wrist,cam_right_wrist",
        "--log-dir",
        str(tmp_path / "logs"),
        "--checkpoint",
        str(ckpt),
        "--device",
        "cpu",
    ]
    up = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    probe = Probe(domain)
    try:
        probe.spin_until(lambda: probe.state and probe.state[-1] == "idle", 90, "policy state idle")
        assert not any(probe.cmds.values())  # idle: nothing commanded
        resp = probe.call("start")
        assert resp.success, resp.message
        probe.spin_until(
            lambda: all(len(v) >= 50 for v in probe.cmds.values()), 60, "50 commands per follower"
        )
        probe.spin_until(
            lambda: probe.diag and int(probe.diag[-1].get("server.chunks_received", 0)) > 0,
            30,
            "diagnostics reporting chunks",
        )
        # The chunk checks run on a real model's chunks and pass them (t_rel from 0, within the limits).
        diag = probe.diag[-1]
        assert int(diag["server.rejected_chunks"]) == 0 and int(diag["server.limit_faults"]) == 0, diag
        for f in FOLLOWERS:
            pos = np.array([p for _, p in probe.cmds[f]])
            assert pos.shape[1] == 7 and np.isfinite(pos).all()
        assert probe.call("stop").success
        probe.spin_until(lambda: probe.state[-1] == "idle", 10, "policy state idle after stop")
    except AssertionError as e:
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}"
            for p in sorted((tmp_path / "logs").glob("*.log"))
            if p.name.startswith(("policy", "left_follower"))
        )
        pytest.fail(f"{e}\n{logs}")
    finally:
        probe.close()
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(5)
