"""Real-time mode: a wall-style clock makes the shared world run its own physics thread."""

import time

import numpy as np
import pytest

pytest.importorskip("mujoco")

from duet.clock import FakeClock, MonotonicClock  # noqa: E402
from duet.errors import DuetError  # noqa: E402
from duet.hardware.rig import load_rig  # noqa: E402
from duet.hardware.sim import make_sim_arm, make_sim_camera, sim_world  # noqa: E402


def _wait(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


@pytest.mark.timeout(90)
def test_physics_thread_keeps_up_with_the_clock_and_stops_on_last_disconnect():
    rig = load_rig("aloha_sim", ["name=sim_rt_arms"])
    world = sim_world(rig)
    clock = FakeClock()
    try:
        arm = make_sim_arm(rig, "right_follower", clock)
        arm.connect()
        assert world.mode == "realtime"
        # A device given the world's SimClock cannot join a world running in real time.
        with pytest.raises(DuetError):
            make_sim_arm(rig, "left_follower", world.clock).connect()
        target = arm.read().position + np.array([0.05, 0.05, -0.05, 0.0, 0.05, 0.0, 0.5])
        t_sim0 = world.sim_time()
        for _ in range(100):  # 2 s of clock time in 20 ms ticks
            arm.write(target)
            clock.advance(0.02)
            goal = clock.now()
            assert _wait(lambda g=goal: world.sim_time() - t_sim0 >= (g - 1000.0) - 0.003)
        assert world.sim_time() - t_sim0 == pytest.approx(2.0, abs=0.01)
        np.testing.assert_allclose(arm.read().position[:6], target[:6], atol=0.02)
        arm.disconnect()
        assert world.mode == "lockstep"
        t = world.sim_time()
        clock.advance(1.0)
        time.sleep(0.05)
        assert world.sim_time() == t  # nobody connected: physics stopped
    finally:
        world.close()


@pytest.mark.timeout(120)
def test_camera_worker_renders_from_the_live_world():
    rig = load_rig("aloha_sim", ["name=sim_rt_cam"])
    world = sim_world(rig)
    try:
        cam = make_sim_camera(rig, "cam_left_wrist", MonotonicClock())
        cam.connect()
        assert _wait(lambda: (cam.read().frame or None) is not None and cam.read().frame.index >= 2, 90)
        r = cam.read()
        assert r.connected and r.frame.color.shape == (240, 320, 3)
        assert r.frame.stamp <= time.monotonic()
        cam.disconnect()
        assert world.mode == "lockstep"
        assert cam.health()["error"] == ""
    finally:
        world.close()
