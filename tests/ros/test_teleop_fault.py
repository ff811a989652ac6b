"""A bus fault on one follower (fault_scenario via a parameter override, real rclpy
processes): the faulted arm goes to its safe state and says why in its diagnostics; every
other node keeps its rate and the other pair keeps mirroring."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ARMS = ["left_leader", "right_leader", "left_follower", "right_follower"]
FOLLOWERS = ["left_follower", "right_follower"]
CAMERAS = ["cam_high", "cam_low"]


@pytest.mark.timeout(150)
def test_bus_fault_on_one_follower_is_reported_and_the_rest_keeps_its_rate(tmp_path, ros_tools):
    up = ros_tools.DuetUp(
        "teleop",
        "--skip", "cam_left_wrist,cam_right_wrist",
        # the right follower's gripper servo latches an overload error 2 s after its bus starts
        "--set", "right_follower:fault_scenario=overload_gripper_at_2s",
        "--set", "*:command_max_age_s=0.3",
        "--set", "teleop:teleop.start_on_launch=true",
        "--set", "teleop:teleop.leader_max_age_s=0.3",
        "--set", "teleop:teleop.leader_lost_s=5.0",
        "--set", "teleop:teleop.gesture.enabled=false",
        log_dir=tmp_path / "logs",
    )
    probe = ros_tools.make_probe(ARMS, FOLLOWERS, CAMERAS)
    try:
        fault = probe.wait_for(
            lambda: next((d for d in probe.diag["duet/arm/right_follower"] if d[1] == b"\x02"), None),
            60, "an ERROR diagnostic from right_follower")
        t_fault = time.monotonic()
        probe.wait_state("mirroring", 60)
        t0 = max(time.monotonic(), t_fault)
        probe.wait_for(lambda: time.monotonic() - t0 > 3.0, 10, "3 s after the fault")
        # a full diagnostics window of every other node after the fault
        probe.wait_for(lambda: all(probe.diag_since(f"duet/arm/{a}", t0 + 1.0)
                                   for a in ("left_leader", "right_leader", "left_follower")), 10, "diagnostics")
    except AssertionError as e:
        probe.close()
        up.stop()
        pytest.fail(f"{e}\n{up.logs()}")
    t1 = time.monotonic()
    try:
        assert "overload" in fault[2], fault[2]
        assert "safe state" in fault[2]
        assert fault[3]["health.bus.hardware_errors"] != "0"

        # the faulted arm stops publishing; every other arm keeps its rate
        window = t1 - t0
        for a in ("left_leader", "right_leader", "left_follower"):
            n = len(probe.samples(probe.joints, a, since=t0))
            assert n > 0.5 * 50 * window, f"{a}: {n} joint states in {window:.1f} s"
            last = probe.diag_since(f"duet/arm/{a}", t0)[-1]
            assert last[1] != b"\x02", f"{a}: {last[2]}"
            assert float(last[3]["rate_hz"]) > 25.0
        late = probe.samples(probe.joints, "right_follower", since=t0 + 1.0)
        assert len(late) == 0, "the faulted arm is in its safe state: no more samples"
        # teleop keeps mirroring the healthy pair at its rate
        cmds = probe.samples(probe.commands, "left_follower", since=t0)
        assert len(cmds) > 0.5 * 50 * window
        assert probe.teleop_state == "mirroring"
        tele = probe.diag_since("duet/teleop", t0)[-1]
        assert float(tele[3]["rate_hz"]) > 25.0
        follower = np.array([s[2] for s in probe.samples(probe.joints, "left_follower", since=t0)])
        assert np.ptp(follower, axis=0).max() > 0.05  # still mirroring the moving leader
        cam = probe.samples(probe.images, "cam_high", since=t0)
        assert len(cam) > 0.5 * 30 * window
    finally:
        probe.close()
        up.stop()
