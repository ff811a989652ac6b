"""Network exposure of a running graph, over real rclpy processes (issue 11, item 4).

One mock follower started by `duet up` WITHOUT ROS_AUTOMATIC_DISCOVERY_RANGE in its
environment (the conftest sets LOCALHOST for the test process; this module removes it for
the graph it starts, as a user's shell would), reused by every test of the module:

- a command stamped in the future (a sender's clock ahead, or a forged stamp meant to
  outlive the staleness watchdog) is rejected at intake, counted in the arm's diagnostics,
  and never moves the arm; a command stamped now still does;
- `duet up --mock` starts its nodes with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; every
  graph (real hardware first of all) says its discovery range and ROS domain at start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ARM = "left_follower"
WAIST = 0  # joint index of the waist
N_FUTURE = 20  # future-stamped commands sent (each would move the arm by up to one max_step)


@pytest.fixture(scope="module")
def graph(tmp_path_factory, ros_domain, ros_tools):
    logs = tmp_path_factory.mktemp("security_graph")
    saved = os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    try:  # the graph's environment as a user's shell has it: no discovery range set
        up = ros_tools.DuetUp("bringup", "--only", ARM, "--set", f"{ARM}:command_max_age_s=0.3", log_dir=logs)
    finally:
        if saved is not None:
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = saved
    probe = ros_tools.make_probe([ARM], [ARM], [])
    try:
        probe.wait_for(lambda: len(probe.joints[ARM]) > 10, 60, f"joint states from {ARM}")
        yield {"up": up, "probe": probe}
    except AssertionError as e:
        pytest.fail(f"{e}\n{up.logs()}")
    finally:
        probe.close()
        up.stop()


def _diag_values(probe, since: float) -> list[dict]:
    return [d[3] for d in probe.diag_since(f"duet/arm/{ARM}", since)]


@pytest.mark.timeout(120)
def test_future_stamped_commands_are_rejected_counted_and_never_move_the_arm(graph):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState as JointStateMsg

    from duet_ros import convert

    probe = graph["probe"]
    names = _joint_names()
    pub = probe.node.create_publisher(
        JointStateMsg, f"/{ARM}/command", QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    )
    try:
        probe.wait_for(lambda: pub.get_subscription_count() > 0, 15, f"{ARM} subscribed to its command topic")
        start = probe.samples(probe.joints, ARM)[-1][2].copy()
        target = start.copy()
        target[WAIST] += 0.5
        t_sent = time.monotonic()
        for _ in range(N_FUTURE):  # stamped one hour ahead: passed the old age-only watchdog
            pub.publish(convert.command_to_msg(names, target, time.monotonic() + 3600.0, probe.mapper))
            time.sleep(0.02)  # a 50 Hz sender (the arm keeps the newest 5 commands)
        values = probe.wait_for(
            lambda: next(
                (v for v in _diag_values(probe, t_sent) if int(v.get("commands_rejected_future", 0)) >= 1),
                None,
            ),
            15,
            "diagnostics counting the future-stamped commands",
        )
        assert int(values["commands_received"]) == 0 and int(values["commands_applied"]) == 0, values
        assert "future" in values["last_error"], values["last_error"]
        assert float(values["command_future_tolerance_s"]) < 1.0
        # a joint state captured after that report: the arm never moved
        t_report = time.monotonic()
        probe.wait_for(
            lambda: probe.samples(probe.joints, ARM, since=t_report), 10, "a joint state after the report"
        )
        after = np.array([s[2] for s in probe.samples(probe.joints, ARM, since=t_sent)])
        assert np.abs(after - start).max() < 1e-3, np.abs(after - start).max(axis=0)

        # the same target stamped now is applied: the intake path itself still works
        def moved():
            pub.publish(convert.command_to_msg(names, target, time.monotonic(), probe.mapper))
            last = probe.samples(probe.joints, ARM)[-1][2]
            return abs(last[WAIST] - start[WAIST]) > 0.05

        probe.wait_for(moved, 15, "the waist to move on commands stamped now")
    finally:
        probe.node.destroy_publisher(pub)


def _joint_names() -> tuple[str, ...]:
    """The follower's joint names, from the rig (an arm describes itself while disconnected)."""
    from duet.hardware.factory import make_arm
    from duet.hardware.rig import load_rig

    return tuple(make_arm(load_rig("aloha"), ARM, True).features.joint_names)


@pytest.mark.timeout(60)
def test_mock_graph_nodes_discover_on_localhost_only(graph):
    import psutil

    pid = graph["up"].node_pid("duet_arm_node")
    env = psutil.Process(pid).environ()
    assert env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST", env.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
    assert env.get("ROS_DOMAIN_ID") == os.environ["ROS_DOMAIN_ID"]


def _network_line(*args: str, env: dict[str, str]) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "duet.cli", "up", "bringup", "--dry-run", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return next(ln for ln in r.stderr.splitlines() if ln.startswith("[duet up] network:"))


def test_every_graph_says_its_discovery_range_and_domain_and_a_set_range_is_kept():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY")
    }
    env["ROS_DOMAIN_ID"] = "42"
    real = _network_line(env=env)  # real hardware: the ROS default, said out loud
    assert "discovery range SUBNET" in real and "ROS domain 42" in real and "no DDS security" in real, real
    mock = _network_line("--mock", env=env)
    assert "discovery range LOCALHOST (set by duet" in mock, mock
    # the user's explicit choice wins, for mock graphs too
    mine = _network_line("--mock", env={**env, "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert "discovery range SUBNET (from ROS_AUTOMATIC_DISCOVERY_RANGE)" in mine, mine
    from duet_ros.graph import expand
    from duet_ros.launcher import GraphRunner

    for set_env, want in (
        ({}, "LOCALHOST"),
        ({"ROS_AUTOMATIC_DISCOVERY_RANGE": "SYSTEM_DEFAULT"}, "SYSTEM_DEFAULT"),
        ({"ROS_LOCALHOST_ONLY": "1"}, None),
    ):
        runner = GraphRunner(expand("bringup", "aloha", True), env=set_env)
        try:
            assert runner.environment().get("ROS_AUTOMATIC_DISCOVERY_RANGE") == want
        finally:
            runner.stop()
    runner = GraphRunner(expand("bringup", "aloha", False), env={})
    try:
        assert "ROS_AUTOMATIC_DISCOVERY_RANGE" not in runner.environment()  # real hardware: the user decides
    finally:
        runner.stop()
