"""Teleop core without ROS: mapping, state machine (incl. gesture), ramp, safety, pacing."""

from __future__ import annotations

import numpy as np
import pytest

from duet.clock import FakeClock, Pacer
from duet.errors import ConfigError
from duet.hardware.interfaces import ArmFeatures, JointState
from duet.teleop.config import GestureConfig, PairMapConfig, TeleopConfig
from duet.teleop.core import GestureDetector, TeleopCore, TeleopState
from duet.teleop.inputs import EvdevSource, QueueSource, make_input
from duet.teleop.loop import TeleopLoop
from duet.teleop.mapping import PairMapping

N = 7  # 6 arm joints + gripper
NAMES = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
RATE = 50.0
DT = 1.0 / RATE


def features(name: str, role: str, max_step: float = 0.2) -> ArmFeatures:
    lower = np.array([-3.0] * 6 + [0.0])
    upper = np.array([3.0] * 6 + [1.0])
    return ArmFeatures(name, role, NAMES, lower, upper, np.full(N, max_step))


def js(stamp: float, pos) -> JointState:
    p = np.asarray(pos, dtype=np.float64)
    return JointState(stamp, NAMES, p, np.zeros(N), np.zeros(N))


def make_core(cfg: TeleopConfig | None = None, pairs=None, **kw) -> TeleopCore:
    cfg = cfg or TeleopConfig(**{"rate_hz": RATE, **kw})  # resolved (rate_hz 0 = a rig's; no rig here)
    pairs = pairs or cfg.resolved_pairs(
        [("left_leader", "left_follower"), ("right_leader", "right_follower")]
    )
    leaders = {p.leader: features(p.leader, "leader") for p in pairs}
    followers = {p.follower: features(p.follower, "follower") for p in pairs}
    return TeleopCore(cfg, pairs, leaders, followers)


class Sim:
    """Leaders at a pose; followers that reach their command instantly."""

    def __init__(self, core: TeleopCore, leader_pose, follower_pose):
        self.core = core
        self.clock = FakeClock()
        self.leader = {n: np.array(leader_pose, dtype=float) for n in core.leaders}
        self.follower = {n: np.array(follower_pose, dtype=float) for n in core.followers}

    def step(self, leader_age: float = 0.0):
        self.clock.advance(DT)
        now = self.clock.now()
        res = self.core.step(
            now,
            {n: js(now - leader_age, q) for n, q in self.leader.items()},
            {n: js(now, q) for n, q in self.follower.items()},
        )
        for n, cmd in res.commands.items():
            self.follower[n] = cmd.position.copy()
        return res


# ------------------------------------------------------------------ mapping


def test_mapping_copies_joints_with_scale_offset_and_affine_gripper():
    cfg = PairMapConfig(
        "l",
        "f",
        joint_scale=[1, -1, 1, 1, 2, 1],
        joint_offset=[0, 0, 0.1, 0, 0, 0],
        gripper_scale=0.8,
        gripper_offset=0.1,
    )
    m = PairMapping(cfg, N)
    out = m(np.array([0.5, 0.5, 0.5, -0.2, 0.3, 0.0, 1.0]))
    np.testing.assert_allclose(out[:-1], [0.5, -0.5, 0.6, -0.2, 0.6, 0.0])
    assert out[-1] == pytest.approx(0.9)
    assert m.gripper(0.0) == pytest.approx(0.1)  # closed leader -> follower's closed end
    assert m.gripper(1.0) == pytest.approx(0.9)  # open leader -> follower's open end
    assert PairMapping(PairMapConfig("l", "f", gripper_scale=2.0), N).gripper(0.9) == 1.0  # clipped


def test_mapping_identity_default_and_validation():
    m = PairMapping(PairMapConfig("l", "f"), N)
    q = np.linspace(-1, 1, N)
    q[-1] = 0.3
    np.testing.assert_allclose(m(q), q)
    with pytest.raises(ConfigError, match="joint_scale has 2 values"):
        PairMapping(PairMapConfig("l", "f", joint_scale=[1.0, 1.0]), N)
    with pytest.raises(ValueError, match="expected 7"):
        m(np.zeros(3))


def test_config_validation_one_line_errors():
    with pytest.raises(ConfigError, match="close_below"):
        GestureConfig(close_below=0.5, open_above=0.4)
    with pytest.raises(ConfigError, match="two pairs"):
        TeleopConfig(pairs=[PairMapConfig("a", "f"), PairMapConfig("b", "f")])
    arms = {
        "left_leader": features("left_leader", "leader"),
        "left_follower": features("left_follower", "follower"),
    }
    with pytest.raises(ConfigError, match="no leader arm named 'nope'"):
        TeleopCore(TeleopConfig(), [PairMapConfig("nope", "left_follower")], arms, arms)


# ------------------------------------------------------------------ state machine


def test_idle_sends_nothing_until_started_then_ramps_slowly_and_mirrors():
    core = make_core(ramp_speed=0.5, ramp_tolerance=0.01, settle_tolerance=0.05)
    sim = Sim(core, leader_pose=[0.6, 0, 0, 0, 0, 0, 1.0], follower_pose=[0, 0, 0, 0, 0, 0, 1.0])
    res = sim.step()
    assert res.state is TeleopState.IDLE and res.commands == {}
    ok, _ = core.request("start", "test")
    assert ok
    res = sim.step()
    assert res.state is TeleopState.RAMPING
    # the ramp moves at ramp_speed: 0.5 rad/s * 20 ms = 0.01 rad per tick, never a jump
    assert res.commands["left_follower"].position[0] == pytest.approx(0.01)
    ticks = 1
    while core.state is TeleopState.RAMPING:
        prev = sim.follower["left_follower"][0]
        res = sim.step()
        assert sim.follower["left_follower"][0] - prev <= 0.01 + 1e-9
        ticks += 1
        assert ticks < 200
    assert core.state is TeleopState.MIRRORING
    assert 55 <= ticks <= 62  # 0.6 rad at 0.01 rad/tick
    sim.leader["left_leader"][1] = 0.05
    res = sim.step()
    assert res.commands["left_follower"].position[1] == pytest.approx(0.05)  # mirrored 1:1
    assert not res.commands["left_follower"].hold


def test_mirroring_commands_pass_the_safety_function():
    core = make_core(settle_tolerance=0)
    sim = Sim(core, [0.0] * 6 + [0.5], [0.0] * 6 + [0.5])
    core.request("start")
    sim.step()
    sim.step()
    assert core.state is TeleopState.MIRRORING
    sim.leader["left_leader"][0] = 2.9
    res = sim.step()
    assert res.commands["left_follower"].position[0] == pytest.approx(0.2)  # follower max_step per tick
    sim.leader["left_leader"][0] = 10.0  # beyond the follower's upper limit
    for _ in range(30):
        res = sim.step()
    assert res.commands["left_follower"].position[0] == pytest.approx(3.0)
    sim.leader["left_leader"][2] = np.nan
    res = sim.step()  # a NaN leader sample is treated as stale: hold
    assert res.commands["left_follower"].hold
    assert res.commands["left_follower"].position[0] == pytest.approx(3.0)
    assert np.all(np.isfinite(res.commands["left_follower"].position))


def test_pause_holds_and_resume_goes_through_the_ramp():
    core = make_core(settle_tolerance=0, ramp_speed=0.5)
    sim = Sim(core, [0.0] * 7, [0.0] * 7)
    core.request("start")
    sim.step()
    sim.step()
    assert core.state is TeleopState.MIRRORING
    assert core.request("pause")[0]
    res = sim.step()
    assert res.state is TeleopState.PAUSED
    held = res.commands["left_follower"].position.copy()
    sim.leader["left_leader"][0] = 0.5  # the operator moves while paused
    for _ in range(5):
        res = sim.step()
        assert res.commands["left_follower"].hold
        np.testing.assert_allclose(res.commands["left_follower"].position, held)
        assert res.commands["left_follower"].stamp == pytest.approx(sim.clock.now())
    core.request("start")
    res = sim.step()
    assert res.state is TeleopState.RAMPING
    assert res.commands["left_follower"].position[0] == pytest.approx(0.01)  # ramp, not a jump
    assert core.request("stop")[0]
    assert sim.step().state is TeleopState.IDLE
    assert core.request("stop") == (False, "already idle")
    assert not core.request("pause")[0]
    assert not core.request("jump")[0]


def test_stale_leader_holds_then_pauses_when_lost_and_start_is_refused():
    core = make_core(leader_max_age_s=0.1, leader_lost_s=0.3, settle_tolerance=0)
    sim = Sim(core, [0.0] * 7, [0.0] * 7)
    core.request("start")
    res = sim.step(leader_age=0.5)
    assert core.state is TeleopState.IDLE
    assert any(e.kind == "refused" for e in res.events)
    core.request("start")
    sim.step()
    sim.step()
    assert core.state is TeleopState.MIRRORING
    # a short gap: hold, then carry on mirroring without a new start
    res = sim.step(leader_age=0.2)
    assert core.state is TeleopState.MIRRORING
    assert any(e.kind == "leader_stale" for e in res.events)
    assert all(c.hold for c in res.commands.values())
    sim.leader["left_leader"][0] = 0.1
    res = sim.step()
    assert any(e.kind == "leader_recovered" for e in res.events)
    assert not res.commands["left_follower"].hold
    assert res.commands["left_follower"].position[0] == pytest.approx(0.1)
    # lost for longer than leader_lost_s: pause; resuming goes through the ramp
    for _ in range(20):
        res = sim.step(leader_age=0.5)
    assert core.state is TeleopState.PAUSED
    assert all(c.hold for c in res.commands.values())
    sim.leader["left_leader"][0] = 0.5  # moved while lost
    core.request("start")
    res = sim.step()
    assert res.state is TeleopState.RAMPING
    assert res.commands["left_follower"].position[0] == pytest.approx(0.11)


def test_ramp_converges_on_a_moving_leader():
    # the leader swings faster than ramp_speed: joints latch onto it once they meet it
    core = make_core(ramp_speed=0.5, settle_tolerance=0.1)
    sim = Sim(core, [0.0] * 6 + [0.5], [0.8] * 6 + [0.5])
    core.request("start")
    for k in range(600):
        t = k * DT
        for n in core.leaders:
            sim.leader[n][:6] = 0.4 * np.sin(2 * np.pi * t / 2.9)  # up to 0.87 rad/s
            sim.leader[n][6] = 0.5 + 0.5 * np.sin(2 * np.pi * t / 4.0)
        sim.step()
        if core.state is TeleopState.MIRRORING:
            break
    assert core.state is TeleopState.MIRRORING


def test_ramp_times_out_when_the_follower_does_not_arrive():
    core = make_core(settle_tolerance=0.05, ramp_timeout_s=0.5)
    clock = FakeClock()
    leader = {n: js(0, [0.3] * 6 + [1.0]) for n in core.leaders}
    stuck = {n: js(0, [0.0] * 7) for n in core.followers}  # never moves
    core.request("start")
    events = []
    for _ in range(60):
        clock.advance(DT)
        now = clock.now()
        leader = {n: js(now, s.position) for n, s in leader.items()}
        events += core.step(now, leader, stuck).events
    assert core.state is TeleopState.IDLE
    assert any(e.kind == "ramp_timeout" for e in events)


def test_start_on_launch_waits_for_every_arm():
    core = make_core(start_on_launch=True, settle_tolerance=0)
    now = 1.0
    assert core.step(now, {}, {}).state is TeleopState.IDLE
    leaders = {n: js(now, [0.5] * 7) for n in core.leaders}
    assert core.step(now, leaders, {}).state is TeleopState.IDLE  # no follower state yet
    followers = {n: js(now, [0.0] * 7) for n in core.followers}
    assert core.step(now, leaders, followers).state is TeleopState.RAMPING


# ------------------------------------------------------------------ gesture


def test_gesture_needs_hold_time_and_rearms_only_after_opening():
    g = GestureDetector(GestureConfig(close_below=0.15, open_above=0.4, hold_s=0.5))
    t = 0.0
    assert not g.update(t, [0.05, 0.05])  # closed at launch: disarmed
    assert not g.update(t + 1.0, [0.05, 0.05])
    assert not g.update(t + 1.1, [0.9, 0.9])  # opened: armed
    assert not g.update(t + 1.2, [0.05, 0.9])  # one closed is not the gesture
    assert not g.update(t + 1.3, [0.05, 0.05])
    assert not g.update(t + 1.6, [0.2, 0.05])  # released before hold_s: resets
    assert not g.update(t + 1.7, [0.05, 0.05])
    assert not g.update(t + 2.1, [0.05, 0.05])
    assert g.update(t + 2.2, [0.05, 0.05])  # held 0.5 s
    assert not g.update(t + 3.5, [0.05, 0.05])  # still closed: no retrigger
    assert not g.update(t + 3.6, [0.3, 0.3])  # between thresholds: not re-armed
    assert not g.update(t + 3.7, [0.05, 0.05])
    assert not g.update(t + 4.5, [0.05, 0.05])
    assert not g.update(t + 4.6, [0.5, 0.5])  # re-armed
    assert not g.update(t + 4.7, [0.05, 0.05])
    assert g.update(t + 5.2, [0.05, 0.05])


def test_gesture_starts_teleop_from_idle():
    core = make_core(settle_tolerance=0, gesture=GestureConfig(hold_s=0.2))
    sim = Sim(core, [0.0] * 6 + [1.0], [0.0] * 6 + [1.0])
    sim.step()  # open: armed
    for n in core.leaders:
        sim.leader[n][-1] = 0.0
    states, events = [], []
    for _ in range(150):
        res = sim.step()
        states.append(res.state)
        events += res.events
    assert any(e.kind == "gesture" for e in events)
    assert TeleopState.RAMPING in states or TeleopState.MIRRORING in states
    assert states[0] is TeleopState.IDLE  # not before hold_s
    # the gesture closes the grippers: the followers ramp there too (ALOHA behaviour)
    assert sim.follower["left_follower"][-1] < 0.2


def test_gesture_disabled():
    core = make_core(gesture=GestureConfig(enabled=False))
    sim = Sim(core, [0.0] * 6 + [1.0], [0.0] * 7)
    sim.step()
    for n in core.leaders:
        sim.leader[n][-1] = 0.0
    for _ in range(100):
        assert sim.step().state is TeleopState.IDLE


# ------------------------------------------------------------------ inputs, pacing, loop


def test_queue_and_evdev_inputs(tmp_path):
    q = QueueSource()
    q.push("start")
    q.push("toggle")
    assert q.poll() == ["start", "toggle"] and q.poll() == []
    with pytest.raises(ConfigError, match="unknown action"):
        q.push("launch")
    import struct

    dev = tmp_path / "event0"
    ev = struct.Struct("llHHi")
    dev.write_bytes(
        ev.pack(0, 0, 1, 30, 1)
        + ev.pack(0, 0, 1, 30, 0)
        + ev.pack(0, 0, 0, 0, 0)
        + ev.pack(0, 0, 1, 48, 1)
        + ev.pack(0, 0, 1, 99, 1)
    )
    src = make_input(f"evdev:{dev}:30=toggle,48=stop")
    assert isinstance(src, EvdevSource)
    assert src.poll() == ["toggle", "stop"]  # presses only; unmapped key 99 ignored
    src.close()
    with pytest.raises(ConfigError, match="cannot open"):
        make_input(f"evdev:{tmp_path}/missing")
    with pytest.raises(ConfigError, match="unknown kind"):
        make_input("joystick")


def test_keyboard_source_reads_a_pipe():
    import os

    from duet.teleop.inputs import KeyboardSource

    r, w = os.pipe()
    try:
        src = KeyboardSource(fd=r)
        assert src.poll() == []
        os.write(w, b" sqx")
        assert src.poll() == ["toggle", "start", "stop"]
        src.close()
    finally:
        os.close(r)
        os.close(w)


class FakeArm:
    def __init__(self, feats: ArmFeatures, clock: FakeClock, pose, work_s: float = 0.0):
        self.features = feats
        self.clock = clock
        self.pose = np.array(pose, dtype=float)
        self.work_s = work_s
        self.written: list[np.ndarray] = []

    def read(self) -> JointState:
        self.clock.advance(self.work_s)  # the bus read takes time
        return js(self.clock.now(), self.pose)

    def write(self, position):
        self.written.append(np.asarray(position))
        self.pose = np.asarray(position, dtype=float).copy()
        return self.pose


def test_loop_paces_on_absolute_deadlines_with_fake_clock():
    clock = FakeClock(start=0.0)
    core = make_core(settle_tolerance=0, start_on_launch=True)
    leaders = {
        n: FakeArm(features(n, "leader"), clock, [0.1] * 6 + [0.5], work_s=0.003) for n in core.leaders
    }
    followers = {n: FakeArm(features(n, "follower"), clock, [0.0] * 7, work_s=0.003) for n in core.followers}
    loop = TeleopLoop(core, leaders, followers, clock)
    report = loop.run(duration=2.0)
    # 12 ms of reads per tick does not stretch the 20 ms period (no sleep-after-work)
    assert report.period.ticks in (100, 101)
    assert report.period.mean_rate_hz == pytest.approx(50.0, rel=1e-6)
    assert report.period.max_error_ms < 1e-6
    assert report.period.overruns == 0
    assert core.state is TeleopState.MIRRORING
    np.testing.assert_allclose(followers["left_follower"].pose, [0.1] * 6 + [0.5])
    assert report.latency_p50_ms > 0


def test_pacer_counts_overruns_and_keeps_the_grid():
    clock = FakeClock(start=0.0)
    pacer = Pacer(50.0, clock)
    pacer.start(0.0)
    ticks = [pacer.wait()]
    clock.advance(0.065)  # a 65 ms stall
    ticks.append(pacer.wait())
    ticks.append(pacer.wait())
    assert pacer.stats.overruns == 1
    assert all(abs(t / 0.02 - round(t / 0.02)) < 1e-9 for t in ticks)  # still on the 20 ms grid


def test_follower_not_following_pauses_and_resume_ramps_from_where_it_is():
    core = make_core(settle_tolerance=0, track_error_limit=0.3, track_error_time_s=0.2)
    sim = Sim(core, [0.0] * 7, [0.0] * 7)
    core.request("start")
    sim.step()
    sim.step()
    assert core.state is TeleopState.MIRRORING
    frozen = sim.follower["left_follower"].copy()
    events = []
    for k in range(40):  # the leader moves away; the left follower stops following (deactivated)
        sim.leader["left_leader"][0] = min(0.02 * (k + 1), 0.6)
        res = sim.step()
        sim.follower["left_follower"] = frozen.copy()
        events += res.events
        if core.state is TeleopState.PAUSED:
            break
    assert core.state is TeleopState.PAUSED
    assert any(e.kind == "not_following" and "left_follower" in e.detail for e in events)
    res = sim.step()
    np.testing.assert_allclose(res.commands["left_follower"].position, frozen)  # hold where it is
    core.request("start")
    res = sim.step()
    assert res.state is TeleopState.RAMPING
    assert res.commands["left_follower"].position[0] == pytest.approx(frozen[0] + 0.01)  # ramp from there


def test_follower_freshness_has_its_own_limit():
    """Follower samples are judged by follower_max_age_s, not leader_max_age_s: a follower that
    stops following is caught only through samples younger than follower_max_age_s."""

    def run(follower_max_age_s: float) -> TeleopState:
        core = make_core(
            settle_tolerance=0,
            track_error_limit=0.3,
            track_error_time_s=0.2,
            leader_max_age_s=0.05,
            follower_max_age_s=follower_max_age_s,
        )
        clock = FakeClock()
        leader = {n: np.zeros(N) for n in core.leaders}
        follower = {n: np.zeros(N) for n in core.followers}  # never moves: not following
        core.request("start")
        for k in range(60):
            clock.advance(DT)
            now = clock.now()
            if k >= 2:  # mirroring by then; the leader moves away
                leader["left_leader"][0] = min(0.02 * (k - 1), 0.6)
            core.step(
                now,
                {n: js(now, q) for n, q in leader.items()},
                {n: js(now - 0.2, q) for n, q in follower.items()},
            )  # follower samples 0.2 s old
        return core.state

    assert run(follower_max_age_s=0.5) is TeleopState.PAUSED  # fresh enough: the tracking error counts
    assert run(follower_max_age_s=0.1) is TeleopState.MIRRORING  # stale: not judged


def test_ticket_done_once_a_step_resolves_it():
    core = make_core()
    ticket = core.submit("start")
    assert not ticket.done
    core.step(0.0, {}, {})
    assert ticket.done and ticket.wait(0) == (ticket.ok, ticket.message)
    assert core.submit("dance").done  # refused at once: unknown action


def test_arm_fault_pauses_at_once_names_the_arm_and_refuses_start_until_cleared():
    core = make_core(settle_tolerance=0)
    sim = Sim(core, [0.0] * 7, [0.0] * 7)
    core.request("start")
    sim.step()
    sim.step()
    assert core.state is TeleopState.MIRRORING
    fault = "arm 'right_follower' joint 'gripper' (ID 9) on /dev/x: hardware error overload: reboot the servo"

    def step(faults):
        sim.clock.advance(DT)
        now = sim.clock.now()
        return core.step(
            now,
            {n: js(now, q) for n, q in sim.leader.items()},
            {n: js(now, q) for n, q in sim.follower.items()},
            faults,
        )

    res = step({"right_follower": fault, "left_follower": ""})
    assert res.state is TeleopState.PAUSED  # the same tick
    kinds = [e.kind for e in res.events]
    assert kinds[0] == "arm_fault" and "state" in kinds
    assert res.events[0].detail == fault  # the arm's own one line (it names the arm and the servo)
    assert all(c.hold for c in res.commands.values())
    res = step({"right_follower": fault})
    assert res.events == []  # reported once
    core.request("start")
    res = step({"right_follower": fault})
    assert res.state is TeleopState.PAUSED
    assert [e.kind for e in res.events] == ["refused"] and "right_follower" in res.events[0].detail
    res = step({})
    assert [e.kind for e in res.events] == ["arm_recovered"] and "right_follower" in res.events[0].detail
    core.request("start")
    assert step({}).state in (TeleopState.RAMPING, TeleopState.MIRRORING)  # at the pose already
    res = step({"left_leader": "arm 'left_leader': 2 failed reads in a row"})  # a leader fault pauses too
    assert res.state is TeleopState.PAUSED and "left_leader" in res.events[0].detail


def test_loop_pauses_after_two_failed_reads_in_a_row():
    clock = FakeClock(start=0.0)
    core = make_core(settle_tolerance=0, start_on_launch=True)
    leaders = {n: FakeArm(features(n, "leader"), clock, [0.1] * 6 + [0.5]) for n in core.leaders}
    followers = {n: FakeArm(features(n, "follower"), clock, [0.0] * 7) for n in core.followers}
    events = []
    loop = TeleopLoop(core, leaders, followers, clock, on_event=events.append)
    loop.run(duration=1.0)
    assert core.state is TeleopState.MIRRORING

    def broken():
        raise OSError("arm 'left_follower': no status packet from ID 3 (elbow)")

    good = followers["left_follower"].read
    followers["left_follower"].read = broken
    loop.pacer.wait()
    assert loop.tick().state is TeleopState.MIRRORING  # one lost read: held, not a fault
    loop.pacer.wait()
    res = loop.tick()
    assert res.state is TeleopState.PAUSED
    fault = next(e for e in res.events if e.kind == "arm_fault")
    assert "left_follower" in fault.detail and "ID 3" in fault.detail and "2 failed reads" in fault.detail
    followers["left_follower"].read = good
    loop.pacer.wait()
    assert [e.kind for e in loop.tick().events] == ["arm_recovered"]
