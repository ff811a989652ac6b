"""The policy server core: observations in, one safe joint command per control tick out.

    server = PolicyServer(policy, ServerConfig(mode="async"), limits, clock)
    server.start()
    every tick (50 Hz, paced on absolute deadlines):
        server.observe(joint_states, camera_readings)
        result = server.tick(now)      # O(1), never waits on inference
        send result.command            # None only before the first joint state
    server.stop()

Inference runs in an InferenceWorker thread. Each chunk's actions are due at the
observation's capture time + t_rel (absolute times on the injected clock); actions whose
time has passed when the chunk arrives are dropped, never sent late. Every command passes
duet.hardware.safety.safe_command; a NaN from the model never reaches a servo.

Before a chunk is placed on the grid (in the worker) it is checked (ChunkRules): an action
not finite or beyond a joint limit by more than `limit_fault_margin` of the joint's range
drops the whole chunk and the arm holds (a small excess is clamped as usual); t_rel outside
the chunk's expected span rejects the chunk and the current plan goes on. Either is reported
by action dim; after `max_chunk_faults` dropped chunks the episode stops (held until reset()).
"""

from __future__ import annotations

import gc
import math
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from duet.clock import Clock
from duet.errors import DuetError
from duet.hardware.interfaces import CameraReading, JointState
from duet.hardware.safety import SafetyLimits, UnsafeCommandError, safe_command
from duet.policy.interface import ActionChunk, Policy
from duet.policy.server.config import ServerConfig
from duet.policy.server.observation import ObservationBuilder, ObsStatus
from duet.policy.server.scheduler import (
    ChunkRules,
    EnsembleBuffer,
    GridChunk,
    LatencyEstimate,
    Plan,
    fault_detail,
)
from duet.policy.server.stats import ServerStats, StatsRecorder
from duet.policy.server.watchdog import Watchdog
from duet.policy.server.worker import InferenceRequest, InferenceResult, InferenceWorker

_MAX_BLEND_TICKS = 250  # 5 s at 50 Hz: the longest cross-fade

# Reasons a tick is held (TickResult.reason).
NO_OBSERVATION = "no_observation"  # no joint state received yet: nothing to hold, command is None
STALE_OBSERVATION = "stale_observation"  # joint states or camera frames too old / camera down
INVALID_ACTION = "invalid_action"  # the model returned NaN/inf or a malformed chunk
LIMIT_FAULT = (
    "action_beyond_limit"  # a chunk held an action beyond a joint limit by more than the fault margin
)
STOPPED = "stopped_after_faults"  # max_chunk_faults chunks were dropped this episode: held until reset()
UNSAFE_COMMAND = "unsafe_command"  # the safety function rejected the target
WAITING = "waiting_for_chunk"  # started / reset / recovering: the first chunk is not there yet
NO_ACTION = "no_action"  # running, but no action due at this tick (a deadline miss)
INFERENCE_ERROR = "inference_error"  # no action, and the last inference raised
HOLD_REASONS = (
    NO_OBSERVATION,
    STALE_OBSERVATION,
    INVALID_ACTION,
    LIMIT_FAULT,
    STOPPED,
    UNSAFE_COMMAND,
    WAITING,
    NO_ACTION,
    INFERENCE_ERROR,
)


@dataclass(frozen=True)
class TickResult:
    k: int  # tick index on the server's grid (t0 + k * dt)
    t: float  # the tick's time (as passed to tick())
    command: np.ndarray | None  # safe joint command to send (action order); None before any joint state
    held: bool  # True when the watchdog produced the command (hold / ramp to rest)
    reason: str  # "" when executing the policy, else one of the reasons above
    chunk_started: ActionChunk | None = None  # chunk that took over at this tick (ensemble: arrived)
    submitted: bool = False  # an inference was started from this tick's observation
    clamped: bool = False  # the safety function changed the target (limits or step)


@dataclass(frozen=True)
class ServerEvent:
    t: float
    # fault, resume, invalid_action (NaN/inf, malformed), limit_fault (an action beyond the limit margin),
    # rejected_chunk (t_rel), episode_stopped, inference_error, inference_overdue, late_chunk, deadline_miss,
    # unsafe_command
    kind: str
    detail: str


class PolicyServer:
    def __init__(
        self,
        policy: Policy,
        config: ServerConfig,
        limits: SafetyLimits,
        clock: Clock,
        action_names: Sequence[str] | None = None,
    ):
        """action_names: one per action dim ("left_follower.elbow"), for fault reports; run_loop
        fills them from its arms when None (see loop.action_names)."""
        self.policy = policy
        self.config = config
        self.limits = limits
        self.clock = clock
        self.action_dim = int(policy.action_dim)
        self.dt = config.dt
        if limits.n != self.action_dim:
            raise DuetError(
                f"safety limits cover {limits.n} joints but the policy has action_dim "
                f"{self.action_dim}: build the limits from the follower arms in rig pair order"
            )
        self.action_names = None if action_names is None else list(action_names)
        if self.action_names is not None and len(self.action_names) != self.action_dim:
            raise DuetError(
                f"{len(self.action_names)} action names for a policy with action_dim {self.action_dim}: "
                f"give one name per action dim (loop.action_names(arms))"
            )
        rest = None
        if config.on_fault == "rest":
            if len(config.rest_pose) != self.action_dim:
                raise DuetError(
                    f"server.rest_pose has {len(config.rest_pose)} values, the policy has "
                    f"action_dim {self.action_dim}: give one target per action dim"
                )
            rest = np.asarray(config.rest_pose, dtype=np.float64)
        horizon = int(policy.horizon)
        self.n_exec = max(1, min(config.n_action_steps or int(policy.n_action_steps), horizon))
        span_ticks = math.ceil(horizon * float(policy.control_dt) / self.dt)
        self.obs = ObservationBuilder(
            policy.n_obs_steps, policy.camera_names, config.max_state_age_s, config.max_camera_age_s
        )
        self.fault_margin = config.limit_fault_margin * (limits.upper - limits.lower)  # (A,) action units
        rules = ChunkRules(limits, self.fault_margin, float(policy.control_dt), config.chunk_time_tolerance_s)
        self.worker = InferenceWorker(
            policy,
            clock,
            self.action_dim,
            config.torch_threads,
            config.worker_nice,
            config.worker_rt_priority,
            rules=rules,
        )
        self.latency = LatencyEstimate(config.latency_window)
        self.ensemble = EnsembleBuffer(max(horizon, span_ticks) + 4, self.action_dim, config.ensemble_k)
        self.watchdog = Watchdog(config.on_fault, rest, limits, config.rest_speed)
        self.recorder = StatsRecorder(config.mode, HOLD_REASONS, self.action_dim)
        self._events: deque[ServerEvent] = deque(maxlen=config.max_events)
        self._t0: float | None = None
        self._last_k: int | None = None
        self._last_cmd: np.ndarray | None = None
        self._req_id = 0
        self._epoch = 0
        self._reset_policy = True
        self._started = False
        self._switch_interval: float | None = None
        self._clear_run_state()

    # ------------------------------------------------------------------ lifecycle

    def _clear_run_state(self) -> None:
        self._plan: Plan | None = None
        self._pending: tuple[GridChunk, ActionChunk | None] | None = None
        self.ensemble.reset()
        self._awaiting = True  # no chunk yet since start / reset / fault
        self._held_prev = True
        self._blend: list | None = None  # [k_switch, old plan, fade ticks (None until the first tick)]
        self._catchup = False  # ramping from a held command toward the policy's actions
        self._jump: list | None = None  # [max step so far, last tick of the boundary | None: end of catch-up]
        self._last_error = ""
        self._overdue_reported = -1
        self._in_miss = False
        self._chunk_faults = 0  # chunks dropped this episode (max_chunk_faults)

    def start(self) -> None:
        """Start the inference worker (and shorten the GIL switch interval, see config)."""
        if self.config.gil_switch_interval_s > 0 and self._switch_interval is None:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(self.config.gil_switch_interval_s)
        if self.config.gc_freeze:
            gc.collect()
            gc.freeze()
        self.worker.start()
        self._started = True

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the worker; False if a hung inference kept it alive past timeout."""
        self._started = False
        ok = self.worker.stop(timeout)
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        return ok

    def __enter__(self) -> PolicyServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Episode start: forget chunks, history and latched faults; the policy is reset in
        the worker before its next inference. The arm holds until the first new chunk."""
        self._epoch += 1
        self._reset_policy = True
        self.obs.reset()
        self.latency.reset()
        self.watchdog.reset()
        self._clear_run_state()
        # Hold where the arm is now, not where the last episode left the command: the arm
        # may have been moved between episodes (reset to home, by hand).
        self._last_cmd = None

    # ------------------------------------------------------------------ inputs / outputs

    def observe(
        self, joint_states: list[JointState] | tuple[JointState, ...], cameras: dict[str, CameraReading]
    ) -> None:
        """Latest readings: one JointState per follower arm (rig pair order), camera readings by name."""
        self.obs.observe(joint_states, cameras)

    def drain_events(self) -> list[ServerEvent]:
        out = list(self._events)
        self._events.clear()
        return out

    def stats(self) -> ServerStats:
        return self.recorder.snapshot(self.latency.ticks)

    @property
    def fault(self) -> str:
        return self.watchdog.fault

    def _event(self, t: float, kind: str, detail: str) -> None:
        self._events.append(ServerEvent(t, kind, detail))

    # ------------------------------------------------------------------ the tick

    def tick(self, now: float) -> TickResult:
        """One control tick at time `now` (the tick's deadline on the injected clock)."""
        if not self._started:
            raise DuetError("PolicyServer.tick() before start(): call server.start() first")
        k = self._grid_index(now)
        self.recorder.ticks += 1

        status = self.obs.sample(now)
        self._hold_measured_pose_first()
        chunk_started = self._take_result(k, now)
        self._check_observations(status, now)

        target = None
        if not self.watchdog.fault:
            target, started = self._next_action(k, now)
            chunk_started = started or chunk_started

        submitted = self._maybe_submit(k, now, status.ok)
        self._check_overdue(now)

        if self._last_cmd is None:
            self.recorder.held[NO_OBSERVATION] += 1
            return TickResult(k, now, None, True, NO_OBSERVATION, chunk_started, submitted)
        cmd, target, reason = self._command(k, now, target)
        clamped = bool(np.any(np.abs(cmd - target) > 1e-12))
        if clamped and not reason:
            self._count_clamps(target)
        self._held_prev = bool(reason)
        self._last_cmd = cmd
        return TickResult(k, now, cmd.copy(), bool(reason), reason, chunk_started, submitted, clamped)

    def _grid_index(self, now: float) -> int:
        """The tick's index k on the grid t0 + k * dt (t0: the first tick); strictly increasing."""
        if self._t0 is None:
            self._t0 = now
        k = int(round((now - self._t0) / self.dt))
        if self._last_k is not None and k <= self._last_k:
            k = self._last_k + 1
        self._last_k = k
        return k

    def _hold_measured_pose_first(self) -> None:
        """Before any command (start, reset): the arm's measured pose is the command to hold."""
        if self._last_cmd is None and self.obs.has_state:
            state = self.obs.state()
            if state.shape != (self.action_dim,):
                raise DuetError(
                    f"joint states give {state.shape[0]} positions but the policy has action_dim "
                    f"{self.action_dim}: pass the follower arms the policy was trained on"
                )
            self._last_cmd = state

    def _take_result(self, k: int, now: float) -> ActionChunk | None:
        """Take the worker's finished inference, if any; returns the chunk that took over at this tick."""
        result = self.worker.poll()
        return None if result is None else self._on_result(result, k, now)

    def _check_observations(self, status: ObsStatus, now: float) -> None:
        """Observation faults: stop execution while stale, resume when fresh."""
        if not status.ok and self.obs.has_state:
            if self.watchdog.trip(STALE_OBSERVATION, status.reason):
                self._event(now, "fault", f"{STALE_OBSERVATION}: {status.reason}")
            self._drop_plans()
        elif status.ok and self.watchdog.fault == STALE_OBSERVATION:
            self.watchdog.clear()
            self._event(now, "resume", "observations fresh again; waiting for a chunk from fresh data")

    def _command(self, k: int, now: float, target: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
        """The safe command of this tick, the target it was made from and the hold reason:
        the policy's action (cross-faded at boundaries; reason ""), or the watchdog's hold."""
        if target is None:
            return self._hold_command(self._hold_reason(now))
        target = self._smooth_policy_target(k, target)
        try:
            cmd = safe_command(target, self._last_cmd, self.limits)
        except UnsafeCommandError as e:
            self.recorder.unsafe += 1
            self._event(now, "unsafe_command", str(e))
            return self._hold_command(UNSAFE_COMMAND)
        self.recorder.executed += 1
        self.recorder.steps.add(float(np.max(np.abs(cmd - self._last_cmd))))
        self._in_miss = False
        return cmd, target, ""

    def _smooth_policy_target(self, k: int, target: np.ndarray) -> np.ndarray:
        """Ramp from a held command on resume, cross-fade at chunk boundaries, track the jump."""
        if self._held_prev:  # resume (or first start): ramp from the held command
            self._start_resume()
        target = self._apply_blend(k, target)
        target = self._apply_catchup(target)
        self._track_jump(k, target)
        return target

    def _hold_command(self, reason: str) -> tuple[np.ndarray, np.ndarray, str]:
        """Faults and misses: hold or ramp to rest (config); waiting for a first chunk: hold."""
        self._blend = None
        self._catchup = False
        self._finish_jump()
        last = self._last_cmd
        if last is None:  # tick() commands nothing before it has a pose to hold
            raise DuetError("policy server: no command to hold yet (a bug in duet)")
        target = last if reason == WAITING else self.watchdog.hold_target(last)
        cmd = safe_command(target, last, self.limits)
        self.recorder.held[reason] += 1
        return cmd, target, reason

    def _count_clamps(self, target: np.ndarray) -> None:
        """Why the safety function changed a policy action: a target outside the joint range
        (a gripper pushed past closed, mostly: demonstrations sit at the range ends and a
        regressed action scatters around them) or a move larger than max_step (a jump)."""
        lim, rec = self.limits, self.recorder
        low, high = target < lim.lower, target > lim.upper
        outside = low | high
        if outside.any():
            rec.limit_clamps += 1
            excess = np.where(low, lim.lower - target, np.where(high, target - lim.upper, 0.0))
            rec.limit_excess_max = max(rec.limit_excess_max, float(excess.max()))
        step = np.abs(np.clip(target, lim.lower, lim.upper) - self._last_cmd) > lim.max_step * (1 + 1e-9)
        if step.any():
            rec.step_clamps += 1
        rec.clamps_by_dim += outside | step

    # ------------------------------------------------------------------ results

    def _on_result(self, res: InferenceResult, k: int, now: float) -> ActionChunk | None:
        if res.epoch != self._epoch:
            return None  # predicted before a reset / fault: never executed
        rec = self.recorder
        rec.inference_s.add(res.compute_s)
        if res.status == "error":
            rec.errors += 1
            self._last_error = res.error
            self._event(now, "inference_error", res.error)
            return None
        if res.status in ("invalid", "rejected"):
            self._drop_chunk(res, now)
            return None
        assert res.grid is not None
        grid = res.grid
        arrival = now - res.obs_stamp
        rec.arrival_s.add(arrival)
        self.latency.add(arrival / self.dt)
        rec.chunks_received += 1
        self._last_error = ""
        if self.watchdog.fault in (INVALID_ACTION, LIMIT_FAULT) and self.watchdog.clear():
            self._event(now, "resume", "valid chunk after an invalid one")
        if self.watchdog.fault:
            return None
        stale = min(max(k - grid.k0, 0), len(grid.actions))
        rec.dropped += stale
        if self.config.mode == "ensemble":
            self.ensemble.add(grid, k)
            self._awaiting = False
            return res.chunk
        if grid.k_end <= k:
            rec.late_chunks += 1
            self._event(
                now,
                "late_chunk",
                f"every action of a chunk was stale on arrival "
                f"({arrival * 1e3:.0f} ms after its observation)",
            )
            return None
        # Receding / async: the chunk waits in _pending until _next_action lets it take over.
        self._pending = (grid, res.chunk)
        return None

    def _drop_chunk(self, res: InferenceResult, now: float) -> None:
        """A chunk that failed its checks: report it by action dim and count it. Bad values
        (NaN/inf, beyond the limit margin, malformed): hold, as for stale observations, and
        resume on the next good chunk. Bad times: drop it, the current plan (or hold) goes on.
        max_chunk_faults of either in one episode stop it (latched until reset())."""
        rec, cfg = self.recorder, self.config
        f = res.fault
        if f is not None and res.chunk is not None:
            detail = fault_detail(f, self.action_names, self.fault_margin, len(res.chunk.actions))
        else:
            detail = res.error
        self._chunk_faults += 1
        n, limit = self._chunk_faults, cfg.max_chunk_faults
        count = f" (fault {n} of {limit} this episode)" if limit else ""
        if res.status == "rejected":
            rec.rejected += 1
            text = f"chunk rejected: {detail}; the current plan goes on{count}"
            self._event(now, "rejected_chunk", text)
        else:
            beyond = f is not None and math.isfinite(f.value)
            reason = LIMIT_FAULT if beyond else INVALID_ACTION
            if beyond:
                rec.limit_faults += 1
            else:
                rec.invalid += 1
            latch = cfg.latch_on_invalid_action
            text = f"{detail}; chunk dropped, {'latched until reset()' if latch else 'holding'}{count}"
            self.watchdog.trip(reason, text, latch=latch)
            self._event(now, "limit_fault" if beyond else "invalid_action", text)
            self._drop_plans()
        rec.last_fault = text
        if limit and n >= limit and not self.watchdog.latched:
            self.watchdog.trip(STOPPED, f"{n} chunks dropped this episode", latch=True)
            self._event(
                now,
                "episode_stopped",
                f"{n} chunks dropped this episode (max_chunk_faults {limit}): "
                f"the policy is not trusted any more; holding until reset()",
            )
            self._drop_plans()

    def _start_plan(self, grid: GridChunk, chunk: ActionChunk | None, k: int) -> ActionChunk | None:
        old = self._plan
        self._plan = Plan(grid, k, min(k + self.n_exec, grid.k_end))
        self._awaiting = False
        self.recorder.chunks_started += 1
        if not self._held_prev and old is not None:
            self._start_boundary(k, old)
        return chunk

    def _drop_plans(self) -> None:
        self._plan = None
        self._pending = None
        self.ensemble.reset()
        self._awaiting = True
        self._epoch += 1  # whatever is in flight was predicted from data we no longer trust

    # ------------------------------------------------------------------ per-mode action choice

    def _next_action(self, k: int, now: float) -> tuple[np.ndarray | None, ActionChunk | None]:
        if self.config.mode == "ensemble":
            return self.ensemble.take(k), None
        started = None
        plan = self._plan
        if self._pending is not None:
            grid, chunk = self._pending
            if k >= grid.k_end:  # its actions all passed while it waited
                self._pending = None
                self.recorder.dropped += len(grid.actions)
            elif grid.at(k) is not None and (
                self.config.mode == "async" or plan is None or k >= plan.window_end or plan.at(k) is None
            ):
                if plan is not None and k > plan.window_end:
                    self.recorder.late_chunks += 1
                    self._event(
                        now,
                        "late_chunk",
                        f"a chunk took over {k - plan.window_end} ticks after the "
                        f"execution window ended (latency estimate {self.latency.ticks} ticks + margin "
                        f"{self.config.trigger_margin_ticks}); raise trigger_margin_ticks",
                    )
                self._pending = None
                started = self._start_plan(grid, chunk, k)
                plan = self._plan
        return (plan.at(k) if plan is not None else None), started

    def _maybe_submit(self, k: int, now: float, fresh: bool) -> bool:
        if not fresh or self.watchdog.latched or self.worker.busy:
            return False
        if self.watchdog.fault == STALE_OBSERVATION:
            return False
        if self.config.mode != "ensemble" and not self._should_trigger(k):
            return False
        t0 = self._t0
        if t0 is None:  # tick() places the grid (sets _t0) before it submits
            raise DuetError("policy server: inference submitted before the first tick (a bug in duet)")
        req = InferenceRequest(
            self._req_id, self._epoch, self.obs.snapshot(), t0, self.dt, reset_policy=self._reset_policy
        )
        if not self.worker.submit(req):
            return False
        self._req_id += 1
        self._reset_policy = False
        self.recorder.queries += 1
        return True

    def _should_trigger(self, k: int) -> bool:
        if self._pending is not None:
            return False
        plan = self._plan
        if plan is None or plan.at(k + 1) is None:
            return True
        remaining = plan.window_end - k  # window ticks from this one on
        return remaining <= self.latency.ticks + self.config.trigger_margin_ticks

    def _check_overdue(self, now: float) -> None:
        since = self.worker.in_flight_since
        if since is None or self._overdue_reported == self._req_id:
            return
        if now - since > self.config.inference_timeout_s:
            self._overdue_reported = self._req_id
            self._event(
                now,
                "inference_overdue",
                f"inference running for {(now - since) * 1e3:.0f} ms (inference_timeout_s "
                f"{self.config.inference_timeout_s}); holding when the current actions run out",
            )

    def _hold_reason(self, now: float) -> str:
        if self.watchdog.fault:
            return self.watchdog.fault
        if self._awaiting:
            return WAITING
        # Running but nothing due at this tick: a deadline miss.
        self.recorder.deadline_misses += 1
        if not self._in_miss:
            self._in_miss = True
            self._event(now, "deadline_miss", "no action due at this tick; holding")
        return INFERENCE_ERROR if self._last_error else NO_ACTION

    # ------------------------------------------------------------------ boundaries

    def _start_boundary(self, k: int, old: Plan) -> None:
        """A new chunk takes over from `old` at tick k: cross-fade between them (receding /
        async) and measure the largest per-tick step over the boundary."""
        self._finish_jump()
        self._catchup = False
        self._blend = [k, old, None] if self.config.blend_ticks > 0 else None
        self._jump = [0.0, k + self.config.blend_ticks]

    def _start_resume(self) -> None:
        """Execution resumes after a hold: ramp from the held command toward the policy's
        actions until it has caught up (a step, not a jump)."""
        self._finish_jump()
        self._blend = None
        self._catchup = True
        self._jump = [0.0, None]

    def _apply_catchup(self, target: np.ndarray) -> np.ndarray:
        if not self._catchup or self._last_cmd is None:
            return target
        v = self.limits.max_step * self.config.resume_speed
        d = target - self._last_cmd
        if np.all(np.abs(d) <= v):
            self._catchup = False
            return target
        return self._last_cmd + np.clip(d, -v, v)

    def _apply_blend(self, k: int, target: np.ndarray) -> np.ndarray:
        if self._blend is None:
            return target
        k_switch, old, n = self._blend
        src = old.at_clamped(k)
        if n is None:  # fade length, fixed at the boundary's first tick
            n = self.config.blend_ticks
            if self.config.blend_speed > 0:
                gap = float(np.max(np.abs(target - src) / self.limits.max_step))
                n = max(n, min(_MAX_BLEND_TICKS, math.ceil(gap / self.config.blend_speed) - 1))
            self._blend[2] = n
            if self._jump is not None:
                self._jump[1] = k_switch + n
        j = k - k_switch
        if j >= n or j < 0:
            self._blend = None
            return target
        w = (j + 1) / (n + 1)
        return (1.0 - w) * src + w * target

    def _track_jump(self, k: int, target: np.ndarray) -> None:
        if self._jump is None or self._last_cmd is None:
            return
        self._jump[0] = max(self._jump[0], float(np.max(np.abs(target - self._last_cmd))))
        k_end = self._jump[1]
        if (k_end is None and not self._catchup) or (k_end is not None and k >= k_end):
            self._finish_jump()

    def _finish_jump(self) -> None:
        if self._jump is not None:
            self.recorder.jumps.add(self._jump[0])
            self._jump = None
