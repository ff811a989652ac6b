"""run_loop over the mock rig (the real DynamixelArm code on the wire-level fake bus, mock
cameras), in real time for about a second, with a stub policy (a test double of a model)."""

from __future__ import annotations

import numpy as np
import pytest

from duet.clock import MonotonicClock, Pacer
from duet.errors import DuetError
from duet.hardware.factory import make_rig
from duet.hardware.rig import load_rig
from duet.policy.interface import ActionChunk
from duet.policy.server import PolicyServer, ServerConfig, run_loop, safety_limits

CAMS = ("cam_high", "cam_low")


class ReachPolicy:
    """Every chunk moves the first joint of each arm toward +0.2 rad from the observed pose."""

    n_obs_steps = 1
    horizon = 20
    n_action_steps = 10
    control_dt = 0.02
    camera_names = CAMS
    action_dim = 14

    def __init__(self):
        self.calls = 0

    def reset(self):
        pass

    def predict_chunk(self, obs):
        for cam in CAMS:
            assert obs[f"observation.images.{cam}"].shape == (1, 480, 640, 3)
        self.calls += 1
        goal = obs["observation.state"][-1].astype(np.float64).copy()
        goal[[0, 7]] = 0.2
        return ActionChunk(np.repeat(goal[None], self.horizon, axis=0), np.arange(self.horizon) * 0.02)


@pytest.mark.timeout(60)
def test_run_loop_drives_the_mock_rig():
    rig = load_rig("aloha")
    clock = MonotonicClock()
    followers = [f for _, f in rig.pairs]
    devices = make_rig(rig, use_mock=True, clock=clock, arms=followers, cameras=list(CAMS))
    policy = ReachPolicy()
    with devices:
        arms = [devices.arms[n] for n in followers]
        limits = safety_limits(arms)
        server = PolicyServer(
            policy,
            ServerConfig(mode="async", max_camera_age_s=0.2, rate_hz=rig.resolve_rate(0)),
            limits,
            clock,
        )
        ticks = []
        try:
            report = run_loop(
                server, arms, devices.cameras, Pacer(50, clock), duration=1.5, on_tick=ticks.append
            )
        finally:
            server.stop()
        final = [a.read().position for a in arms]
    assert report.read_errors == 0 and report.write_errors == 0
    assert report.period.ticks >= 70
    assert policy.calls >= 1 and report.server.chunks_received >= 1
    assert report.server.executed_ticks > 0
    cmds = np.array([t.command for t in ticks if t.command is not None])
    assert np.isfinite(cmds).all()
    assert np.abs(np.diff(cmds, axis=0)).max(axis=0).round(12).tolist() <= limits.max_step.tolist()
    # The followers moved toward the policy's goal for their first joint.
    assert final[0][0] > 0.05 and final[1][0] > 0.05
    # Fault reports name each action dim by arm and joint: run_loop filled the names from the arms.
    assert server.action_names == [f"{a.features.name}.{j}" for a in arms for j in a.features.joint_names]
    assert server.action_names[0].startswith("left_follower.") and server.action_names[7].startswith(
        "right_follower."
    )


def test_run_loop_checks_the_arms_and_cameras_match_the_policy():
    rig = load_rig("aloha")
    clock = MonotonicClock()
    devices = make_rig(rig, use_mock=True, clock=clock, arms=["left_follower"], cameras=["cam_high"])
    arm = devices.arms["left_follower"]
    limits = safety_limits([arm, arm])
    server = PolicyServer(ReachPolicy(), ServerConfig(rate_hz=rig.resolve_rate(0)), limits, clock)
    with pytest.raises(DuetError, match="7 joints together but the policy has action_dim 14"):
        run_loop(server, [arm], devices.cameras, Pacer(50, clock), duration=0.1)
    with pytest.raises(DuetError, match="camera 'cam_low' is needed by the policy"):
        run_loop(server, [arm, arm], devices.cameras, Pacer(50, clock), duration=0.1)
    with pytest.raises(DuetError, match="safety limits cover 7 joints"):
        PolicyServer(ReachPolicy(), ServerConfig(rate_hz=rig.resolve_rate(0)), safety_limits([arm]), clock)
    with pytest.raises(DuetError, match="13 action names for a policy with action_dim 14"):
        PolicyServer(
            ReachPolicy(), ServerConfig(rate_hz=rig.resolve_rate(0)), limits, clock, action_names=["x"] * 13
        )
