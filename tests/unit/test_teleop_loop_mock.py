"""The ROS-free teleop loop over the mock arms (the real Dynamixel driver on the wire-level
fake bus), paced by a FakeClock: deterministic and fast."""

from __future__ import annotations

from dataclasses import replace

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
        cfg = TeleopConfig(rate_hz=rig.resolve_rate(0), start_on_launch=True, settle_tolerance=0.1)
        pairs = [
            PairMapConfig("left_leader", "left_follower", gripper_scale=0.8, gripper_offset=0.1),
            PairMapConfig("right_leader", "right_follower"),
        ]
        core = TeleopCore(
            cfg,
            pairs,
            {n: a.features for n, a in leaders.items()},
            {n: a.features for n, a in followers.items()},
        )
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


# ------------------------------------------------------------------ faults on the wire-level fake bus


class MockRig:
    """The aloha mock arms on one FakeClock, a teleop loop over them, every event kept."""

    def __init__(self, faults: dict[str, str], **cfg):
        self.clock = FakeClock(start=100.0)
        rig = load_rig("aloha")
        for name, scenario in faults.items():
            rig.arm(name).fault_scenario = scenario
        self.arms = {a.name: make_arm(rig, a.name, True, clock=self.clock) for a in rig.arms}
        for a in self.arms.values():
            a.connect()
        self.leaders = {n: a for n, a in self.arms.items() if a.features.role == "leader"}
        self.followers = {n: a for n, a in self.arms.items() if a.features.role == "follower"}
        tcfg = TeleopConfig(**{"start_on_launch": True, **cfg})
        tcfg = replace(tcfg, rate_hz=rig.resolve_rate(tcfg.rate_hz))  # 0 = the rig's
        self.core = TeleopCore(
            tcfg,
            tcfg.resolved_pairs(rig.pairs),
            {n: a.features for n, a in self.leaders.items()},
            {n: a.features for n, a in self.followers.items()},
        )
        self.events = []
        self.loop = TeleopLoop(
            self.core, self.leaders, self.followers, self.clock, on_event=self.events.append
        )
        self.loop.pacer.start()

    def tick(self):
        self.loop.pacer.wait()
        return self.loop.tick()

    def close(self):
        for a in self.arms.values():
            a.disconnect()


@pytest.fixture
def mock_rig():
    made = []

    def make(faults, **cfg):
        made.append(MockRig(faults, **cfg))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.mark.timeout(120)
def test_follower_overload_pauses_teleop_within_two_ticks_naming_arm_and_servo(mock_rig):
    r = mock_rig({"right_follower": "overload_gripper_at_2s"})
    while r.loop.read_errors == 0:  # the gripper latches an overload 2 s after the bus started
        res = r.tick()
        assert r.clock.now() < 103.0, "no read error from the overloaded follower"
    assert r.core.state is TeleopState.PAUSED or r.tick().state is TeleopState.PAUSED
    faults = [e for e in r.events if e.kind == "arm_fault"]
    assert len(faults) == 1, [str(e) for e in r.events]
    assert (
        "right_follower" in faults[0].detail and "ID 9" in faults[0].detail and "overload" in faults[0].detail
    )
    assert "\n" not in faults[0].detail
    assert any(
        e.kind == "state" and "-> paused" in e.detail and "right_follower" in e.detail for e in r.events
    )
    assert not r.arms["right_follower"].fake_bus.servo(9).torque_enabled  # the servo shut down
    # the leaders' scripted motion closes both grippers (the start gesture): refused while faulted
    n = len(r.events)
    for _ in range(600):
        res = r.tick()
        assert res.state is TeleopState.PAUSED
    later = r.events[n:]
    assert any(e.kind == "refused" and "right_follower" in e.detail for e in later), [str(e) for e in later]
    assert not any(e.kind == "arm_fault" for e in later)  # reported once, not every tick


@pytest.mark.timeout(120)
def test_follower_reboot_torque_is_restored_before_the_ramp(mock_rig):
    r = mock_rig({"right_follower": "reboot_at_2s"})
    arm = r.arms["right_follower"]
    while r.core.state is not TeleopState.PAUSED:  # brown-out at 2 s: torque off, not following
        r.tick()
        assert r.clock.now() < 106.0, [str(e) for e in r.events]
    assert not any(arm.fake_bus.servo(s).torque_enabled for s in arm.fake_bus.ids)
    while r.core.state is TeleopState.PAUSED:  # until the leaders' start gesture
        res = r.tick()
        assert r.clock.now() < 120.0, [str(e) for e in r.events]
    assert res.state is TeleopState.RAMPING
    # no ramp command ever reached servos with torque off
    assert all(arm.fake_bus.servo(s).torque_enabled for s in arm.fake_bus.ids)
    assert any(e.kind == "torque" and "right_follower" in e.detail for e in r.events), [
        str(e) for e in r.events
    ]
    while r.core.state is TeleopState.RAMPING:
        r.tick()
        assert r.clock.now() < 140.0
    assert r.core.state is TeleopState.MIRRORING, [str(e) for e in r.events]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "scenario,level,low,high",
    [
        ("slow_bus:22", "WARN", 44.0, 47.5),  # 22 ms per read: a 22 ms tick, 45 Hz
        ("slow_bus:30", "ERROR", 32.0, 34.5),  # 30 ms per read: 33 Hz
        ("lossy_10pct", "WARN", 40.0, 47.5),  # retried timeouts cost a tick now and then
    ],
)
def test_sustained_rate_loss_raises_a_rate_diagnostic(mock_rig, scenario, level, low, high):
    r = mock_rig({"right_follower": scenario})
    for _ in range(400):
        r.tick()
    rates = [e for e in r.events if e.kind == "rate"]
    assert rates, [str(e) for e in r.events]
    hit = next((e for e in rates if e.detail.startswith(level)), None)
    assert hit is not None, [str(e) for e in rates]
    import re

    hz = float(re.search(r"at ([0-9.]+) Hz", hit.detail).group(1))
    assert low <= hz <= high, hit.detail
    assert "50 Hz" in hit.detail


@pytest.mark.timeout(120)
def test_a_healthy_bus_raises_no_rate_diagnostic(mock_rig):
    r = mock_rig({})
    for _ in range(200):
        r.tick()
    assert not [e for e in r.events if e.kind in ("rate", "arm_fault")]
    assert r.core.state is TeleopState.MIRRORING
