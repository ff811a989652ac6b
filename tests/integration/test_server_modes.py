"""PolicyServer end to end on a fake clock, with stub policies (test doubles of a model).

Each test drives the server tick by tick: observe fresh joint states / camera frames,
tick(now), let the inference worker settle (finish, or block in fake time), advance the
fake clock by one period. A stub that "takes 300 ms" waits on FakeClock.wait_until, so
latency is measured in fake time and the test is deterministic.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from duet.clock import FakeClock
from duet.hardware.interfaces import CameraReading, Frame, JointState
from duet.hardware.safety import SafetyLimits
from duet.policy.interface import ActionChunk
from duet.policy.server import PolicyServer, ServerConfig

DT = 0.02
T0 = 1000.0
A = 4
CAM = "cam_high"


class StubPolicy:
    """Returns chunks from a known function; optionally 'computes' for `latency` fake seconds,
    returns NaN for chosen calls, or hangs on a chosen call."""

    n_obs_steps = 1
    control_dt = DT
    camera_names = (CAM,)
    action_dim = A

    def __init__(
        self,
        clock: FakeClock,
        fn,
        horizon: int,
        n_action_steps: int,
        latency: float = 0.0,
        nan_calls=(),
        hang_call: int | None = None,
        dtype=np.float32,
        times=None,
    ):
        self.clock = clock
        self.fn = fn  # fn(call index j, obs time t, t_rel (H,)) -> (H, A)
        self.dtype = dtype  # of the actions returned (float64: 1e300 stays finite)
        self.times = times  # times(call index j, t_rel) -> the t_rel returned (None: as is)
        self.horizon = horizon
        self.n_action_steps = n_action_steps
        self.latency = latency
        self.nan_calls = set(nan_calls)
        self.hang_call = hang_call
        self.calls: list[float] = []  # obs time of each call
        self.resets = 0
        self.blocked_until: float | None = None
        self.hanging = False
        self.release = threading.Event()

    def reset(self):
        self.resets += 1

    def predict_chunk(self, obs):
        assert obs["observation.state"].shape == (1, A)
        assert obs[f"observation.images.{CAM}"].shape == (1, 8, 8, 3)
        t = self.clock.now()
        j = len(self.calls)
        self.calls.append(t)
        t_rel = np.arange(self.horizon) * DT
        actions = np.asarray(self.fn(j, t, t_rel), dtype=self.dtype)
        if j in self.nan_calls:
            actions[self.horizon // 2, 1] = np.nan
        if j == self.hang_call:
            self.hanging = True
            self.release.wait(30)
        if self.latency > 0:
            self.blocked_until = t + self.latency - 1e-9  # fake time is a float sum of DT steps
            self.clock.wait_until(self.blocked_until, timeout=30)
            self.blocked_until = None
        return ActionChunk(actions, t_rel if self.times is None else self.times(j, t_rel))


class Harness:
    def __init__(
        self,
        policy: StubPolicy,
        config: ServerConfig,
        max_step: float = 0.03,
        start_pos=None,
        bound: float = 3.0,
        names=None,
    ):
        self.clock = policy.clock
        self.policy = policy
        self.limits = SafetyLimits(np.full(A, -bound), np.full(A, bound), np.full(A, max_step))
        config = replace(config, rate_hz=1 / DT)  # resolved (rate_hz 0 = a rig's; no rig here)
        self.server = PolicyServer(policy, config, self.limits, self.clock, action_names=names)
        self.pos = np.zeros(A) if start_pos is None else np.asarray(start_pos, dtype=np.float64)
        self.camera_ok = True
        self.frame_index = 0
        self.results = []

    def settle(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            p = self.policy
            if not self.server.worker.busy or p.hanging:
                return
            if p.blocked_until is not None and p.blocked_until > self.clock.now():
                return
            time.sleep(0.0001)
        raise AssertionError("inference worker did not settle")

    def step(self):
        now = self.clock.now()
        js = JointState(now, tuple(f"j{i}" for i in range(A)), self.pos.copy(), np.zeros(A), np.zeros(A))
        self.frame_index += 1
        frame = Frame(now - 0.004, self.frame_index, np.zeros((8, 8, 3), np.uint8))
        cam = CameraReading(frame, 0.004, stale=not self.camera_ok, connected=True)
        self.server.observe([js], {CAM: cam})
        r = self.server.tick(now)
        if r.command is not None:
            self.pos = r.command  # a perfect position-controlled arm
        self.results.append(r)
        self.settle()
        self.clock.advance(DT)
        self.settle()
        return r

    def run(self, n):
        return [self.step() for _ in range(n)]

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.policy.release.set()
        self.clock.advance(60.0)  # wake a stub blocked in fake time
        assert self.server.stop(timeout=5)


def smooth(t):
    """A smooth reference trajectory per joint (slope <= 0.2*pi*0.5*... rad/s, < 0.013 rad/tick)."""
    return 0.2 * np.sin(np.pi * (t - T0)[:, None] + np.arange(A)[None, :])


def offset_chunks(j, t, t_rel):
    """The reference trajectory at the actions' due times, plus a chunk-dependent error of
    +-0.02 rad: consecutive chunks disagree by 0.04 at every boundary."""
    return smooth(t + t_rel) + 0.02 * (-1) ** j


def steps(cmds):
    return np.abs(np.diff(np.asarray(cmds), axis=0)).max(axis=1)


# ------------------------------------------------------------------ asynchronous mode


@pytest.mark.timeout(60)
def test_async_300ms_inference_streams_every_tick_without_gaps_or_jumps():
    clock = FakeClock(T0)
    policy = StubPolicy(clock, offset_chunks, horizon=50, n_action_steps=40, latency=0.3)
    cfg = ServerConfig(mode="async", trigger_margin_ticks=2, blend_ticks=5)
    with Harness(policy, cfg, max_step=0.03, start_pos=smooth(np.array([T0]))[0]) as h:
        res = h.run(400)
    first = next(i for i, r in enumerate(res) if not r.held)
    assert first == 15  # the first chunk needs 300 ms = 15 ticks; the arm holds until then
    assert all(r.reason == "waiting_for_chunk" for r in res[:first])
    running = res[first:]
    assert all(not r.held and r.command is not None for r in running)  # an action every tick
    assert [r.k for r in running] == list(range(first, 400))
    st = h.server.stats()
    assert st.deadline_misses == 0 and st.late_chunks == 0
    assert st.chunks_received >= 9 and st.chunks_started == st.chunks_received
    # Measured latency: 300 ms -> the first 15 actions of every chunk had passed on arrival.
    assert st.actions_dropped_stale == 15 * st.chunks_received
    assert st.latency_ticks == 15
    assert st.obs_to_arrival_ms_p50 == pytest.approx(300.0)
    # Boundaries: the chunks disagree by 0.04 rad; the cross-fade keeps every step below
    # the safety step limit, so safety never had to clamp.
    assert st.boundaries == st.chunks_started
    assert st.boundary_jump_max <= 0.03
    assert st.step_clamps == 0
    assert steps([r.command for r in running]).max() <= 0.03
    # Away from boundaries every command is the active chunk's action for that tick's time:
    # actions are placed by the observation's capture time, not by arrival. The first chunk
    # is reached through the resume ramp (the reference moved during the 300 ms wait), later
    # ones through a blend_ticks cross-fade.
    starts = [i for i, r in enumerate(res) if r.chunk_started is not None]
    for j, (s0, s1) in enumerate(zip(starts, starts[1:])):
        t_obs = policy.calls[j]
        expect = offset_chunks(j, np.array([t_obs]), np.array([r.t - t_obs for r in res[s0:s1]]))
        on = [bool(np.allclose(r.command, e, atol=1e-9)) for r, e in zip(res[s0:s1], expect)]
        joined = on.index(True)
        assert all(on[joined:])
        assert joined == cfg.blend_ticks if j > 0 else 0 < joined < 20
    # The next inference started early enough: arrivals land 2 ticks (the margin) before the
    # execution window ends. The window is n_action_steps = 40 capped by what is left of the
    # chunk after the 15 stale actions (50 - 15 = 35).
    gaps = np.diff(starts)
    assert set(gaps.tolist()) == {35 - 2}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("on_fault", ["hold", "rest"])
def test_hung_inference_holds_within_two_ticks_of_the_last_action(on_fault):
    clock = FakeClock(T0)
    policy = StubPolicy(clock, offset_chunks, horizon=30, n_action_steps=20, latency=0.1, hang_call=2)
    rest = [0.5, -0.5, 0.25, 0.0]
    cfg = ServerConfig(
        mode="async", on_fault=on_fault, rest_pose=rest if on_fault == "rest" else [], inference_timeout_s=0.5
    )
    with Harness(policy, cfg, start_pos=smooth(np.array([T0]))[0]) as h:
        res = h.run(150)
        events = h.server.drain_events()
    st = h.server.stats()
    assert policy.hanging and st.chunks_received == 2
    # The last chunk received covers ticks up to its obs tick + 29; nothing is due after.
    last_obs_tick = round((policy.calls[1] - T0) / DT)
    last_action_k = last_obs_tick + 29
    executed = [r.k for r in res if not r.held]
    assert max(executed) == last_action_k
    held_after = [r for r in res if r.k > last_action_k]
    assert held_after[0].k <= last_action_k + 2
    assert all(r.held and r.reason == "no_action" for r in held_after)
    assert st.deadline_misses == len(held_after)
    kinds = [e.kind for e in events]
    assert "inference_overdue" in kinds and "deadline_miss" in kinds
    cmds = np.array([r.command for r in held_after])
    if on_fault == "hold":
        assert np.all(cmds == cmds[0])
    else:
        # Ramps toward the rest pose at rest_speed * max_step per tick and stays there.
        assert steps(cmds).max() <= 0.5 * 0.03 + 1e-12
        np.testing.assert_allclose(cmds[-1], rest)


# ------------------------------------------------------------------ NaN, stale cameras


@pytest.mark.timeout(60)
@pytest.mark.parametrize("latch", [False, True])
def test_nan_from_the_model_never_reaches_the_arm(latch):
    clock = FakeClock(T0)
    policy = StubPolicy(clock, offset_chunks, horizon=30, n_action_steps=10, latency=0.06, nan_calls={2})
    cfg = ServerConfig(mode="async", latch_on_invalid_action=latch)
    with Harness(policy, cfg, start_pos=smooth(np.array([T0]))[0]) as h:
        res = h.run(80)
        events = h.server.drain_events()
    assert all(np.isfinite(r.command).all() for r in res)
    st = h.server.stats()
    assert st.invalid_chunks == 1
    bad = next(i for i, r in enumerate(res) if r.reason == "invalid_action")
    # Held from the tick the NaN chunk arrived: the previous command is re-sent.
    np.testing.assert_array_equal(res[bad].command, res[bad - 1].command)
    assert [e for e in events if e.kind == "invalid_action"]
    if latch:
        assert all(r.held and r.reason == "invalid_action" for r in res[bad:])
        assert len(policy.calls) == 3  # no further inference until reset()
    else:
        resumed = next(i for i in range(bad, len(res)) if not res[i].held)
        assert resumed - bad <= 5  # the next (valid) chunk: 3 ticks of inference + 1
        assert all(not r.held for r in res[resumed:])
        assert steps([r.command for r in res[bad - 1 :]]).max() <= 0.03
        assert st.step_clamps == 0  # the resume cross-fade, not the clamp, kept it smooth


@pytest.mark.timeout(60)
@pytest.mark.parametrize("on_fault", ["hold", "rest"])
def test_stale_camera_stops_execution_and_resumes_cleanly(on_fault):
    clock = FakeClock(T0)
    policy = StubPolicy(clock, offset_chunks, horizon=40, n_action_steps=20, latency=0.1)
    rest = [0.3, 0.3, -0.3, 0.0]
    cfg = ServerConfig(mode="async", on_fault=on_fault, rest_pose=rest if on_fault == "rest" else [])
    with Harness(policy, cfg, start_pos=smooth(np.array([T0]))[0]) as h:
        before = h.run(60)
        h.camera_ok = False
        n_calls = len(policy.calls)
        stale = h.run(40)
        h.settle()
        assert len(policy.calls) == n_calls  # no inference on stale data
        h.camera_ok = True
        t_fresh = clock.now()
        after = h.run(60)
        events = h.server.drain_events()
    assert not before[-1].held
    assert all(r.held and r.reason == "stale_observation" for r in stale)  # from the first stale tick
    cmds = np.array([r.command for r in stale])
    if on_fault == "hold":
        assert np.all(cmds == before[-1].command)
    else:
        assert steps(np.vstack([before[-1].command, cmds])).max() <= 0.5 * 0.03 + 1e-12
        np.testing.assert_allclose(cmds[-1], rest)
    # Fresh again: wait for a chunk predicted from fresh data (5 ticks), then cross-fade in.
    resumed = next(i for i, r in enumerate(after) if not r.held)
    assert all(r.reason == "waiting_for_chunk" for r in after[:resumed])
    assert resumed == 5
    assert policy.calls[-1] >= t_fresh
    assert all(not r.held for r in after[resumed:])
    allc = [r.command for r in before + stale + after]
    assert steps(allc).max() <= 0.03
    assert h.server.stats().step_clamps == 0
    kinds = [e.kind for e in events]
    assert kinds.count("fault") == 1 and "resume" in kinds
    assert h.server.stats().held_by_reason["stale_observation"] == 40


@pytest.mark.timeout(30)
def test_inference_errors_are_reported_and_hold_when_actions_run_out():
    clock = FakeClock(T0)

    def failing(j, t, t_rel):
        if j >= 1:
            raise RuntimeError("CUDA error: device-side assert")
        return offset_chunks(j, t, t_rel)

    policy = StubPolicy(clock, failing, horizon=10, n_action_steps=10)
    with Harness(policy, ServerConfig(mode="async"), start_pos=smooth(np.array([T0]))[0]) as h:
        res = h.run(30)
        events = h.server.drain_events()
    st = h.server.stats()
    assert st.inference_errors >= 1
    assert res[-1].held and res[-1].reason == "inference_error"
    assert any(e.kind == "inference_error" and "device-side assert" in e.detail for e in events)


# ------------------------------------------------------------------ expected sequences


def tick_coded(j, t, t_rel):
    """Action i of the chunk observed at tick s is 10*s + i (+ 0.1 * joint): sequences are readable."""
    s = round((t - T0) / DT)
    i = np.arange(len(t_rel))
    return (10.0 * s + i)[:, None] + 0.1 * np.arange(A)[None, :]


@pytest.mark.timeout(30)
def test_receding_horizon_executes_n_action_steps_per_chunk():
    clock = FakeClock(T0)
    policy = StubPolicy(clock, tick_coded, horizon=8, n_action_steps=4)
    cfg = ServerConfig(mode="receding", trigger_margin_ticks=0, blend_ticks=0)
    with Harness(policy, cfg, max_step=1e3, bound=1e3) as h:
        res = h.run(30)
    assert res[0].held and res[0].reason == "waiting_for_chunk"
    # Observation at tick 0 -> chunk at tick 1 (action 0 is stale); actions 1..4 run at
    # ticks 1..4; the next inference starts at tick 4 (one tick of measured latency left in
    # the window) and takes over at tick 5, and so on: chunk from tick s runs s+1..s+4.
    for r in res[1:]:
        s = 4 * ((r.k - 1) // 4)
        np.testing.assert_allclose(r.command, 10 * s + (r.k - s) + 0.1 * np.arange(A))
    assert [round((c - T0) / DT) for c in policy.calls] == list(range(0, 30, 4))
    assert [r.k for r in res if r.chunk_started is not None] == list(range(1, 30, 4))
    st = h.server.stats()
    assert st.deadline_misses == 0 and st.actions_dropped_stale == st.chunks_received


@pytest.mark.timeout(30)
def test_receding_horizon_with_latency_prefetches_and_switches_at_the_window_end():
    clock = FakeClock(T0)
    policy = StubPolicy(clock, tick_coded, horizon=12, n_action_steps=6, latency=0.06)
    cfg = ServerConfig(mode="receding", trigger_margin_ticks=1, blend_ticks=0)
    with Harness(policy, cfg, max_step=1e3, bound=1e3) as h:
        res = h.run(40)
    starts = [r.k for r in res if r.chunk_started is not None]
    # First chunk: observed at 0, arrives at 3 (3 ticks latency), window 3..8. Next
    # inference when <= 3 + 1 window ticks remain (tick 5), arrives at 8, waits, takes over
    # at 9: every chunk runs exactly 6 ticks.
    assert starts == list(range(3, 40, 6))
    assert [round((c - T0) / DT) for c in policy.calls][:3] == [0, 5, 11]
    for r in res[3:]:
        s = 0 if r.k < 9 else 5 + 6 * ((r.k - 9) // 6)
        np.testing.assert_allclose(r.command, 10 * s + (r.k - s) + 0.1 * np.arange(A))
    assert h.server.stats().deadline_misses == 0


@pytest.mark.timeout(30)
def test_temporal_ensembling_averages_overlapping_chunks_with_exponential_weights():
    clock = FakeClock(T0)
    H, k_ens = 6, 0.5
    policy = StubPolicy(clock, tick_coded, horizon=H, n_action_steps=1)
    cfg = ServerConfig(mode="ensemble", ensemble_k=k_ens, blend_ticks=0)
    with Harness(policy, cfg, max_step=1e3, bound=1e3) as h:
        res = h.run(25)
    # A query every tick; the chunk observed at tick s arrives at s+1.
    assert [round((c - T0) / DT) for c in policy.calls] == list(range(25))
    assert res[0].held
    for r in res[1:]:
        k = r.k
        obs_ticks = [s for s in range(k - H + 1, k) if s >= 0]  # oldest first
        w = np.exp(-k_ens * np.arange(len(obs_ticks)))
        vals = np.array([10 * s + (k - s) for s in obs_ticks])
        np.testing.assert_allclose(r.command, (w @ vals) / w.sum() + 0.1 * np.arange(A))
        assert not r.held
    st = h.server.stats()
    assert st.queries == 25 and st.deadline_misses == 0
    assert st.actions_dropped_stale == st.chunks_received  # action 0 of each chunk


@pytest.mark.timeout(30)
def test_reset_holds_until_a_chunk_from_the_new_episode():
    clock = FakeClock(T0)
    policy = StubPolicy(clock, tick_coded, horizon=8, n_action_steps=4, latency=0.04)
    with Harness(policy, ServerConfig(mode="async", blend_ticks=0), max_step=1e3, bound=1e3) as h:
        h.run(10)
        h.server.reset()
        res = h.run(6)
    assert policy.resets == 2  # before the first inference, and after reset()
    # Whatever was in flight at reset() is discarded: the first action after the reset comes
    # from an observation taken at or after tick 10 (action i of the chunk observed at tick s
    # is 10 * s + i).
    first = next(i for i, r in enumerate(res) if not r.held)
    assert first >= 2 and all(r.reason == "waiting_for_chunk" for r in res[:first])
    assert res[first].command[0] >= 100


@pytest.mark.timeout(30)
def test_reset_holds_where_the_arm_is_now_not_where_the_last_episode_left_it():
    clock = FakeClock(T0)
    policy = StubPolicy(clock, tick_coded, horizon=8, n_action_steps=4, latency=0.1)
    with Harness(policy, ServerConfig(mode="async", blend_ticks=0), max_step=1e3, bound=1e3) as h:
        h.run(10)
        h.server.reset()
        h.pos = np.full(A, -7.0)  # the arm was moved between episodes (reset to home)
        res = h.run(3)
    assert all(r.held for r in res)
    assert all(np.allclose(r.command, -7.0) for r in res)


@pytest.mark.timeout(30)
def test_a_model_that_hangs_from_the_start_keeps_the_arm_where_it_is():
    clock = FakeClock(T0)
    policy = StubPolicy(clock, offset_chunks, horizon=10, n_action_steps=10, hang_call=0)
    cfg = ServerConfig(mode="async", on_fault="rest", rest_pose=[0.5] * A, inference_timeout_s=0.2)
    start = np.array([0.1, -0.1, 0.2, 0.0])
    with Harness(policy, cfg, start_pos=start) as h:
        res = h.run(20)
        events = h.server.drain_events()
    # Waiting for a first chunk is not a fault: hold in place, do not ramp to rest.
    assert all(r.held and r.reason == "waiting_for_chunk" for r in res)
    assert all(np.array_equal(r.command, start) for r in res)
    assert [e.kind for e in events] == ["inference_overdue"]
    assert h.server.stats().deadline_misses == 0


@pytest.mark.timeout(30)
def test_a_skipped_tick_skips_its_action_and_stays_on_time():
    clock = FakeClock(T0)
    policy = StubPolicy(clock, tick_coded, horizon=20, n_action_steps=20)
    with Harness(policy, ServerConfig(mode="async", blend_ticks=0), max_step=1e3, bound=1e3) as h:
        h.run(5)
        clock.advance(DT)  # the loop overran: tick 5 never happened
        res = h.run(3)
    assert [r.k for r in res] == [6, 7, 8]
    # The chunk observed at tick 0 (action i due at tick i) keeps its timing: tick 6 gets action 6.
    np.testing.assert_allclose([r.command[0] for r in res], [6.0, 7.0, 8.0])


def test_server_misuse_fails_with_one_line_errors():
    from duet.errors import DuetError

    clock = FakeClock(T0)
    policy = StubPolicy(clock, tick_coded, horizon=4, n_action_steps=4)
    h = Harness(policy, ServerConfig())
    with pytest.raises(DuetError, match="before start"):
        h.server.tick(clock.now())
    h.server.start()
    try:
        js = JointState(clock.now(), ("a", "b"), np.zeros(2), np.zeros(2), np.zeros(2))
        h.server.observe([js], {})
        with pytest.raises(DuetError, match="joint states give 2 positions but the policy has action_dim 4"):
            h.server.tick(clock.now())
    finally:
        assert h.server.stop()
    with pytest.raises(DuetError, match="rest_pose has 2 values"):
        PolicyServer(
            policy, ServerConfig(rate_hz=1 / DT, on_fault="rest", rest_pose=[0.0, 0.0]), h.limits, clock
        )


@pytest.mark.timeout(60)
def test_clamps_are_told_apart_limit_from_step():
    """A gripper action past its range is a limit clamp (on its dim), a jump is a step clamp:
    the report says which, so a regressed gripper at 'closed' is not mistaken for jumps."""
    clock = FakeClock(T0)

    def fn(j, t, t_rel):
        a = np.zeros((len(t_rel), A))
        a[:, 3] = 0.97  # the "gripper": 0.02 past the 0.95 bound, every action
        if j >= 3:
            a[:, 0] = 0.5  # a chunk that jumps joint 0 by 0.5 rad: slowed by max_step
        return a

    policy = StubPolicy(clock, fn, horizon=10, n_action_steps=10)
    with Harness(
        policy,
        ServerConfig(mode="receding", blend_ticks=0),
        max_step=0.03,
        bound=0.95,
        start_pos=[0.0, 0.0, 0.0, 0.95],
    ) as h:
        res = h.run(80)
    st = h.server.stats()
    executed = [r for r in res if not r.held]
    assert st.limit_clamps == len(executed) == st.executed_ticks
    assert st.limit_excess_max == pytest.approx(0.02, abs=1e-6)  # float32 actions
    # Joint 0 ramps 0 -> 0.5 at 0.03 per tick: 16 slowed ticks (0.48), then 0.02 onto target.
    assert st.step_clamps == 16
    assert st.clamps_by_dim[3] == st.limit_clamps and st.clamps_by_dim[0] == 16
    assert st.clamps_by_dim[1] == st.clamps_by_dim[2] == 0
    assert st.lines()[4].startswith(
        "safety clamps: limits 79 (up to 0.02 outside), steps 16; most in dims 3 (79)"
    )


# ------------------------------------------------------------------ absurd actions, absurd times

NAMES = (
    "left_follower.shoulder",
    "left_follower.gripper",
    "right_follower.shoulder",
    "right_follower.gripper",
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad", [1e6, 1e300, -1e300, np.nan])
def test_an_absurd_action_drops_its_chunk_holds_reports_and_the_next_chunk_runs(bad):
    """One action of one chunk far outside the joint range: clamping it would drive the arm to
    its limit. The chunk is dropped before any of its actions runs, the arm holds, the fault
    names the dim, the value and the limit, and the next (good) chunk is executed."""
    clock = FakeClock(T0)

    def fn(j, t, t_rel):
        a = offset_chunks(j, t, t_rel)
        if j == 2:
            a[4:, 2] = bad  # from the second action due after arrival on
        return a

    policy = StubPolicy(clock, fn, horizon=30, n_action_steps=10, latency=0.06, dtype=np.float64)
    with Harness(policy, ServerConfig(mode="async"), start_pos=smooth(np.array([T0]))[0], names=NAMES) as h:
        res = h.run(80)
        events = h.server.drain_events()
    cmds = np.array([r.command for r in res])
    assert np.isfinite(cmds).all()
    # Never toward the +-3 limit: dim 2 stays near the reference (holds lag it by a few ticks)
    # and never moves a full safety step (a clamped 1e6 would move 0.03 per tick toward +3).
    ref = smooth(np.array([r.t for r in res]))
    assert np.abs(cmds - ref).max() <= 0.08
    assert steps(cmds).max() < 0.03 - 1e-6
    st = h.server.stats()
    nan = np.isnan(bad)
    reason, kind = ("invalid_action", "invalid_action") if nan else ("action_beyond_limit", "limit_fault")
    assert (st.invalid_chunks, st.limit_faults) == ((1, 0) if nan else (0, 1))
    faulted = [i for i, r in enumerate(res) if r.reason == reason]
    assert faulted and all(r.held for r in res if r.reason == reason)
    bad_i = faulted[0]
    np.testing.assert_array_equal(res[bad_i].command, res[bad_i - 1].command)  # holds the present pose
    (ev,) = [e for e in events if e.kind == kind]
    assert ev.detail.startswith(f"right_follower.shoulder (action dim 2) = {bad:.4g} in action 4 of 30")
    if not nan:
        assert f"{'upper' if bad > 0 else 'lower'} limit {3.0 if bad > 0 else -3.0:.4g}" in ev.detail
    assert "chunk dropped" in ev.detail and "fault 1 of 3" in ev.detail
    assert st.last_fault == ev.detail
    # The next (good) chunk: 3 ticks of inference later it runs, through the resume ramp.
    resumed = next(i for i in range(bad_i, len(res)) if not res[i].held)
    assert resumed - bad_i <= 5
    assert all(not r.held for r in res[resumed:])
    assert h.server.fault == ""


@pytest.mark.timeout(60)
def test_repeated_absurd_chunks_stop_the_episode_until_reset():
    clock = FakeClock(T0)

    def fn(j, t, t_rel):
        a = offset_chunks(j, t, t_rel)
        if 1 <= j <= 3:
            a[3, 0] = 1e6
        return a

    policy = StubPolicy(clock, fn, horizon=30, n_action_steps=10, latency=0.06, dtype=np.float64)
    cfg = ServerConfig(mode="async", max_chunk_faults=3)
    with Harness(policy, cfg, start_pos=smooth(np.array([T0]))[0], names=NAMES) as h:
        res = h.run(60)
        events = h.server.drain_events()
        assert h.server.fault == "stopped_after_faults"
        assert len(policy.calls) == 4  # one good chunk, three absurd ones, then no more inference
        h.server.reset()
        after = h.run(20)
    cmds = np.array([r.command for r in res + after])
    assert np.abs(cmds).max() <= 0.2 + 0.02 + 1e-9
    kinds = [e.kind for e in events]
    assert kinds.count("limit_fault") == 3 and kinds.count("episode_stopped") == 1
    stop = next(e for e in events if e.kind == "episode_stopped")
    assert "3 chunks dropped" in stop.detail and "reset()" in stop.detail
    assert res[-1].held and res[-1].reason == "stopped_after_faults"
    st = h.server.stats()
    assert st.limit_faults == 3 and "left_follower.shoulder" in st.last_fault
    # reset() starts a new episode: the fault count starts over and good chunks run again.
    assert not after[-1].held


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "times, match",
    [
        (lambda t: t + 3600.0, "starts 3600 s after"),
        (lambda t: t - 3600.0, "starts 3600 s before"),
        (lambda t: t[::-1].copy(), "not increasing"),
        (lambda t: t * 100.0, "spans 58 s"),
        (lambda t: np.r_[t[:-1], np.inf], "not finite"),
    ],
)
def test_a_chunk_with_absurd_times_is_rejected_and_the_previous_plan_goes_on(times, match):
    """A chunk whose t_rel lies an hour ahead would wait as pending forever (the server held
    for the rest of the run); one whose times run backwards or stretch over a minute is no
    plan either. It is rejected and reported; the current chunk goes on; the next one runs."""
    clock = FakeClock(T0)
    policy = StubPolicy(
        clock,
        offset_chunks,
        horizon=30,
        n_action_steps=10,
        latency=0.06,
        times=lambda j, t: times(t) if j == 2 else t,
    )
    with Harness(policy, ServerConfig(mode="async"), start_pos=smooth(np.array([T0]))[0], names=NAMES) as h:
        res = h.run(100)
        events = h.server.drain_events()
    st = h.server.stats()
    first = next(i for i, r in enumerate(res) if not r.held)
    assert all(not r.held for r in res[first:])  # never held: the previous plan covered the gap
    assert st.rejected_chunks == 1 and st.invalid_chunks == 0
    (ev,) = [e for e in events if e.kind == "rejected_chunk"]
    assert match in ev.detail and "t_rel" in ev.detail
    assert st.last_fault == ev.detail
    # Chunks after the rejected one were received and took over.
    assert len(policy.calls) >= 8
    assert st.chunks_started == st.chunks_received >= len(policy.calls) - 2
    assert h.server.fault == ""
