"""The ROS-free teleop loop over the mock arms (the real Dynamixel driver on the wire-level
fake bus), paced by a FakeClock: deterministic and fast."""

from __future__ import annotations

import numpy as np
import pytest

from duet.clock import FakeClock
from duet.hardware.factory import make_arm
from duet.hardware.rig import load_rig
from duet.teleop.config import PairMapConfig, TeleopConfig
from duet.teleop.core import TeleopCore, TeleopState
from duet.teleop.loop import TeleopLoop


@pytest.mark.timeout(120)
def test_mock_followers_ramp_then_track_the_waving_leaders():
    clock = FakeClock(start=100.0)
    rig = load_rig("aloha")
    names = [a.name for a in rig.arms]
    arms = {n: make_arm(rig, n, True, clock=clock) for n in names}
    for a in arms.values():
        a.connect()
    try:
        leaders = {n: a for n, a in arms.items() if a.features.role == "leader"}
        followers = {n: a for n, a in arms.items() if a.features.role == "follower"}
        for f in followers.values():
            f.set_torque(True)
        cfg = TeleopConfig(start_on_launch=True, settle_tolerance=0.1)
        pairs = [PairMapConfig("left_leader", "left_follower", gripper_scale=0.8, gripper_offset=0.1),
                 PairMapConfig("right_leader", "right_follower")]
        core = TeleopCore(cfg, pairs, {n: a.features for n, a in leaders.items()},
                          {n: a.features for n, a in followers.items()})
        events = []
        loop = TeleopLoop(core, leaders, followers, clock, on_event=events.append)
        report = loop.run(duration=6.0)
        assert core.state is TeleopState.MIRRORING, [str(e) for e in events]
        assert any("ramping -> mirroring" in str(e) for e in events)
        assert report.read_errors == 0 and report.write_errors == 0
        assert report.period.mean_rate_hz == pytest.approx(50.0, rel=1e-6)
        errs, grips = [], []
        for _ in range(250):  # 5 s of mirroring
            loop.pacer.wait()
            loop.tick()
            for p, m in zip(pairs, core._pairs):
                target = m.mapping(leaders[p.leader].read().position)
                actual = followers[p.follower].read().position
                errs.append(np.abs(actual - target)[:-1].max())
                if p.follower == "left_follower":
                    grips.append(actual[-1])
        assert np.percentile(errs, 95) < 0.05
        assert min(grips) == pytest.approx(0.1, abs=0.05) and max(grips) == pytest.approx(0.9, abs=0.05)
    finally:
        for a in arms.values():
            a.disconnect()
