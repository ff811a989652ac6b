"""The teleop core: a pure step function shared by the ROS teleop node and plain loops.

    core = TeleopCore(cfg, pairs, leaders={name: ArmFeatures}, followers={name: ArmFeatures})
    result = core.step(now, leader_states, follower_states, arm_faults)
    for name, cmd in result.commands.items(): send cmd.position (stamped cmd.stamp)

Episode state machine::

    idle --start--> ramping --(within tolerance)--> mirroring
      ^                |  \\--(timeout)--> idle        |
      |               pause                          pause / leader lost
      +----stop------ paused <-----------------------+
                        \\--start (resume)--> ramping

- idle / paused: the followers hold (the last command is re-sent, stamped now; before any
  command nothing is sent and the arms hold where they are).
- ramping: each follower moves from where it is toward the mapped leader pose at
  ``ramp_speed`` (hardware.safety.ramp_step); a joint that has met the leader tracks it
  from then on; when every joint has and the measured follower pose is within
  ``settle_tolerance``, mirroring starts. Every start and every resume
  goes through the ramp, so a follower never jumps to the leader.
- a leader sample older than ``leader_max_age_s`` (or missing, or NaN) makes the followers
  hold; if it stays stale for ``leader_lost_s`` teleop pauses (resume goes through the ramp).
- a follower whose measured pose (a sample younger than ``follower_max_age_s``) stays
  farther than ``track_error_limit`` from its command for ``track_error_time_s``
  (deactivated, faulted, blocked) pauses teleop; the hold and any resume then start from
  where the follower is.
- an arm fault (``arm_faults``: arm name -> one line from the arm or its loop / node, e.g. a
  servo's latched overload, reads failing tick after tick) pauses teleop in the same step,
  with one "arm_fault" event naming the arm and the servo; start is refused while any arm
  of a pair is faulted ("arm_recovered" when it clears).
- start / stop / pause come from ``request()`` (services, keyboard, pedal; thread-safe) or
  from the ALOHA gesture (hold both leader grippers closed for ``hold_s``), which starts or
  resumes; it re-arms only after every gripper opened again (hysteresis).

Every command goes through hardware.safety.safe_command (limits, max step per tick, NaN
rejection) against the follower's features. The core never reads a clock: ``now`` is an
input, on the same monotonic clock as the samples' stamps.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from duet.errors import ConfigError
from duet.hardware.interfaces import ArmFeatures, JointState
from duet.hardware.safety import SafetyLimits, UnsafeCommandError, ramp_step, safe_command
from duet.teleop.config import GestureConfig, PairMapConfig, TeleopConfig
from duet.teleop.mapping import PairMapping


class TeleopState(enum.StrEnum):
    IDLE = "idle"
    RAMPING = "ramping"
    MIRRORING = "mirroring"
    PAUSED = "paused"


ACTIONS = ("start", "stop", "pause", "toggle")


@dataclass(frozen=True)
class TeleopEvent:
    stamp: float  # the step's `now`
    kind: str  # "state", "gesture", "request", "refused", "leader_stale", "ramp_timeout", "unsafe",
    #            "not_following", "arm_fault", "arm_recovered"; loops add "torque", "rate"
    detail: str  # one line for logs / diagnostics

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True)
class FollowerCommand:
    position: np.ndarray  # (n,) follower joint targets after the safety function; gripper normalized
    stamp: float  # capture time of the leader sample it was computed from (hold: the step's now)
    hold: bool  # True when re-sending the last command (idle / paused)


@dataclass
class StepResult:
    state: TeleopState
    commands: dict[str, FollowerCommand]
    events: list[TeleopEvent]
    latency: float | None  # now - oldest leader stamp used (None when no leader sample was used)


class Ticket:
    """A queued request; ``wait()`` returns (accepted, message) once a step applied it."""

    def __init__(self, action: str, source: str):
        self.action = action
        self.source = source
        self._resolved = threading.Event()
        self.ok = False
        self.message = "pending"

    def resolve(self, ok: bool, message: str) -> None:
        self.ok, self.message = ok, message
        self._resolved.set()

    @property
    def done(self) -> bool:
        """True once a step applied or refused the request (ok / message are final)."""
        return self._resolved.is_set()

    def wait(self, timeout: float | None = None) -> tuple[bool, str]:
        if not self._resolved.wait(timeout):
            return False, f"{self.action}: not applied within {timeout} s (is the teleop loop running?)"
        return self.ok, self.message


class GestureDetector:
    """Fires once when every gripper has been below close_below for hold_s; re-arms when
    every gripper is above open_above again. Starts disarmed: grippers closed at launch do
    not start anything until they have been opened once."""

    def __init__(self, cfg: GestureConfig):
        self.cfg = cfg
        self.armed = False
        self._closed_since: float | None = None

    def update(self, now: float, grippers: list[float] | None) -> bool:
        if not self.cfg.enabled or not grippers:
            self._closed_since = None
            return False
        if all(g > self.cfg.open_above for g in grippers):
            self.armed = True
        if not self.armed:
            return False
        if all(g < self.cfg.close_below for g in grippers):
            if self._closed_since is None:
                self._closed_since = now
            if now - self._closed_since >= self.cfg.hold_s:
                self.armed = False
                self._closed_since = None
                return True
        else:
            self._closed_since = None
        return False


class _Pair:
    def __init__(self, cfg: PairMapConfig, leader: ArmFeatures, follower: ArmFeatures, tcfg: TeleopConfig):
        if len(leader.joint_names) != len(follower.joint_names):
            raise ConfigError(
                f"teleop pair {cfg.leader}->{cfg.follower}: leader has {len(leader.joint_names)} joints, "
                f"follower {len(follower.joint_names)}; pair arms with the same joint layout"
            )
        n = len(follower.joint_names)
        self.cfg = cfg
        self.leader = cfg.leader
        self.follower = cfg.follower
        self.mapping = PairMapping(cfg, n)
        max_step = np.asarray(follower.max_step, dtype=np.float64)
        if max_step.shape != (n,) or not np.all(max_step > 0):
            max_step = np.full(n, 2 * np.pi)  # features without a step limit: clamp to the range only
        self.limits = SafetyLimits(
            np.asarray(follower.lower, dtype=np.float64),
            np.asarray(follower.upper, dtype=np.float64),
            max_step,
        )
        dt = tcfg.dt
        ramp = np.full(n, tcfg.ramp_speed * dt)
        ramp[-1] = tcfg.ramp_gripper_speed * dt
        self.ramp_max_step = np.minimum(ramp, max_step)


class TeleopCore:
    def __init__(
        self,
        cfg: TeleopConfig,
        pairs: list[PairMapConfig],
        leaders: dict[str, ArmFeatures],
        followers: dict[str, ArmFeatures],
    ):
        self.cfg = cfg
        self._pairs: list[_Pair] = []
        for p in pairs:
            if p.leader not in leaders:
                raise ConfigError(f"teleop pair {p.leader}->{p.follower}: no leader arm named {p.leader!r}")
            if p.follower not in followers:
                raise ConfigError(
                    f"teleop pair {p.leader}->{p.follower}: no follower arm named {p.follower!r}"
                )
            self._pairs.append(_Pair(p, leaders[p.leader], followers[p.follower], cfg))
        if not self._pairs:
            raise ConfigError("teleop: no leader->follower pairs (set pairs or give the rig pairs)")
        self.state = TeleopState.IDLE
        self.gesture = GestureDetector(cfg.gesture)
        self._last: dict[str, np.ndarray] = {}  # last command per follower (what it holds)
        self._ramp_started: float | None = None
        self._stale_since: float | None = None
        self._caught: dict[str, np.ndarray] = {}  # ramping: joints that reached the leader
        self._lag_since: dict[str, float] = {}  # follower -> since when it is off its command
        self._faults: dict[str, str] = {}  # arm -> its fault as reported (faulted arms only)
        self._arm_names = {n for p in self._pairs for n in (p.leader, p.follower)}
        self._requests: deque[Ticket] = deque()
        self._lock = threading.Lock()
        self._pending_launch_start = cfg.start_on_launch

    # ------------------------------------------------------------------ requests

    @property
    def leaders(self) -> list[str]:
        return [p.leader for p in self._pairs]

    @property
    def followers(self) -> list[str]:
        return [p.follower for p in self._pairs]

    @property
    def faults(self) -> dict[str, str]:
        """The arms faulted as of the last step -> their fault line."""
        return dict(self._faults)

    def request(self, action: str, source: str = "api") -> tuple[bool, str]:
        """Queue start / stop / pause / toggle (thread-safe); applied at the next step.
        Returns (plausible, message) judged against the current state; use submit() to
        learn what the step made of it."""
        ticket = self.submit(action, source)
        if ticket.done:
            return ticket.ok, ticket.message
        return True, f"{ticket.action} requested (state {self.state.value})"

    def submit(self, action: str, source: str = "api") -> Ticket:
        """Queue a request; the returned ticket resolves when a step applies or refuses it."""
        ticket = Ticket(action, source)
        if action not in ACTIONS:
            ticket.resolve(False, f"unknown action {action!r} (use one of {', '.join(ACTIONS)})")
            return ticket
        state = self.state
        if action == "toggle":
            ticket.action = action = (
                "pause" if state in (TeleopState.MIRRORING, TeleopState.RAMPING) else "start"
            )
        if action == "start" and state in (TeleopState.RAMPING, TeleopState.MIRRORING):
            ticket.resolve(False, f"already {state.value}")
        elif action == "pause" and state not in (TeleopState.RAMPING, TeleopState.MIRRORING):
            ticket.resolve(False, f"nothing to pause (state {state.value})")
        elif action == "stop" and state is TeleopState.IDLE:
            ticket.resolve(False, "already idle")
        else:
            with self._lock:
                self._requests.append(ticket)
        return ticket

    # ------------------------------------------------------------------ step

    def step(
        self,
        now: float,
        leader_states: dict[str, JointState],
        follower_states: dict[str, JointState],
        arm_faults: Mapping[str, str] | None = None,
    ) -> StepResult:
        """One tick. arm_faults: arm name -> its fault in one line ("" or absent: healthy),
        from the arm itself or from the loop / node that reads it."""
        events: list[TeleopEvent] = []
        stale = self._stale_leaders(now, leader_states)
        self._update_faults(now, arm_faults or {}, events)

        requests: list[Ticket] = []
        grippers = None
        if not stale:
            grippers = [float(leader_states[p.leader].position[-1]) for p in self._pairs]
        if self.gesture.update(now, grippers):
            if self.state in (TeleopState.IDLE, TeleopState.PAUSED):
                events.append(TeleopEvent(now, "gesture", "leader grippers held closed: start"))
                requests.append(Ticket("start", "gesture"))
            else:
                events.append(TeleopEvent(now, "gesture", f"ignored while {self.state.value}"))

        with self._lock:
            requests = list(self._requests) + requests
            self._requests.clear()
        if self._pending_launch_start and not stale and self._have_followers(follower_states):
            self._pending_launch_start = False
            requests.append(Ticket("start", "start_on_launch"))
        for ticket in requests:
            n_events = len(events)
            self._apply(now, ticket.action, ticket.source, stale, follower_states, events)
            new = events[n_events:]
            if any(e.kind == "refused" for e in new):
                ticket.resolve(False, new[-1].detail)
            else:
                ticket.resolve(True, new[-1].detail if new else f"{ticket.action}: state {self.state.value}")

        tracking = self.state in (TeleopState.RAMPING, TeleopState.MIRRORING)
        if tracking and stale:
            if self._stale_since is None:
                self._stale_since = now
                events.append(TeleopEvent(now, "leader_stale", f"{', '.join(stale)}: holding"))
            if now - self._stale_since > self.cfg.leader_lost_s:
                self._transition(
                    now,
                    TeleopState.PAUSED,
                    events,
                    f"leader samples lost for {now - self._stale_since:.2f} s: {', '.join(stale)}",
                )
        elif self._stale_since is not None:
            if tracking:
                events.append(TeleopEvent(now, "leader_recovered", f"after {now - self._stale_since:.3f} s"))
            self._stale_since = None

        if self.state in (TeleopState.RAMPING, TeleopState.MIRRORING):
            self._check_following(now, follower_states, events)

        commands: dict[str, FollowerCommand] = {}
        latency = None
        if self.state in (TeleopState.RAMPING, TeleopState.MIRRORING) and not stale:
            try:
                commands = self._track(now, leader_states, follower_states, events)
                latency = now - min(leader_states[p.leader].stamp for p in self._pairs)
            except UnsafeCommandError as e:
                events.append(TeleopEvent(now, "unsafe", str(e)))
                self._transition(now, TeleopState.PAUSED, events, "unsafe command rejected")
                commands = {}
        if not commands:
            commands = {f: FollowerCommand(q.copy(), now, True) for f, q in self._last.items()}
        return StepResult(self.state, commands, events, latency)

    # ------------------------------------------------------------------ internals

    def _stale_leaders(self, now: float, leader_states: dict[str, JointState]) -> list[str]:
        out = []
        for p in self._pairs:
            s = leader_states.get(p.leader)
            if s is None or now - s.stamp > self.cfg.leader_max_age_s or not np.all(np.isfinite(s.position)):
                out.append(p.leader)
        return out

    def _update_faults(self, now: float, arm_faults: Mapping[str, str], events: list[TeleopEvent]) -> None:
        current = {n: str(d) for n, d in arm_faults.items() if d and n in self._arm_names}
        for name in sorted(current):
            if name not in self._faults:  # once per fault (its text may change tick by tick)
                detail = current[name] if name in current[name] else f"{name}: {current[name]}"
                events.append(TeleopEvent(now, "arm_fault", detail))
        for name in sorted(self._faults):
            if name not in current:
                events.append(TeleopEvent(now, "arm_recovered", f"{name}: no fault reported any more"))
        self._faults = current
        if current and self.state in (TeleopState.RAMPING, TeleopState.MIRRORING):
            self._transition(now, TeleopState.PAUSED, events, f"arm fault: {', '.join(sorted(current))}")

    def _have_followers(self, follower_states: dict[str, JointState]) -> bool:
        return all(p.follower in self._last or p.follower in follower_states for p in self._pairs)

    def _transition(self, now: float, new: TeleopState, events: list[TeleopEvent], why: str) -> None:
        if new is self.state:
            return
        events.append(TeleopEvent(now, "state", f"{self.state.value} -> {new.value} ({why})"))
        self.state = new
        self._ramp_started = now if new is TeleopState.RAMPING else None
        self._caught.clear()
        self._lag_since.clear()
        self._stale_since = None

    def _apply(self, now, action, source, stale, follower_states, events) -> None:
        state = self.state
        if action == "toggle":
            action = "pause" if state in (TeleopState.MIRRORING, TeleopState.RAMPING) else "start"
        if action == "start":
            if state in (TeleopState.RAMPING, TeleopState.MIRRORING):
                return
            if self._faults:
                name = sorted(self._faults)[0]
                events.append(
                    TeleopEvent(
                        now,
                        "refused",
                        f"start from {source}: {', '.join(sorted(self._faults))} "
                        f"faulted ({self._faults[name]})",
                    )
                )
                return
            if stale:
                events.append(
                    TeleopEvent(
                        now, "refused", f"start from {source}: no fresh sample from {', '.join(stale)}"
                    )
                )
                return
            missing = [
                p.follower
                for p in self._pairs
                if p.follower not in self._last and p.follower not in follower_states
            ]
            if missing:
                events.append(
                    TeleopEvent(now, "refused", f"start from {source}: no state from {', '.join(missing)}")
                )
                return
            for p in self._pairs:  # ramp from where each follower is (else from what it holds)
                fs = self._fresh_follower(now, follower_states.get(p.follower))
                if fs is not None or p.follower not in self._last:
                    self._last[p.follower] = np.asarray(
                        follower_states[p.follower].position, dtype=np.float64
                    ).copy()
            self._transition(now, TeleopState.RAMPING, events, f"start from {source}")
        elif action == "pause":
            if state in (TeleopState.RAMPING, TeleopState.MIRRORING):
                self._transition(now, TeleopState.PAUSED, events, f"pause from {source}")
        elif action == "stop":
            self._transition(now, TeleopState.IDLE, events, f"stop from {source}")

    def _fresh_follower(self, now: float, state: JointState | None) -> JointState | None:
        """A follower's sample if it is fresh (follower_max_age_s) and finite, else None."""
        if (
            state is None
            or now - state.stamp > self.cfg.follower_max_age_s
            or not np.all(np.isfinite(state.position))
        ):
            return None
        return state

    def _check_following(self, now: float, follower_states: dict[str, JointState], events) -> None:
        """Pause when a follower has not followed its commands for track_error_time_s (it
        was deactivated, faulted, blocked): holding then means holding where it IS, and a
        resume ramps from there, never from a command backlog."""
        if self.cfg.track_error_limit <= 0:
            return
        lagging = []
        for p in self._pairs:
            fs = self._fresh_follower(now, follower_states.get(p.follower))
            last = self._last.get(p.follower)
            if fs is None or last is None:
                continue
            err = float(np.max(np.abs(np.asarray(fs.position) - last)))
            if err <= self.cfg.track_error_limit:
                self._lag_since.pop(p.follower, None)
                continue
            since = self._lag_since.setdefault(p.follower, now)
            if now - since >= self.cfg.track_error_time_s:
                lagging.append((p.follower, err))
        if lagging:
            for name, _ in lagging:
                self._last[name] = np.asarray(follower_states[name].position, dtype=np.float64).copy()
            detail = ", ".join(f"{n} off by {e:.2f}" for n, e in lagging)
            events.append(
                TeleopEvent(now, "not_following", f"{detail} for {self.cfg.track_error_time_s:g} s")
            )
            self._transition(now, TeleopState.PAUSED, events, f"follower not following: {detail}")

    def _track(self, now, leader_states, follower_states, events) -> dict[str, FollowerCommand]:
        ramping = self.state is TeleopState.RAMPING
        out: dict[str, FollowerCommand] = {}
        settled = True
        for p in self._pairs:
            leader = leader_states[p.leader]
            target = p.mapping(leader.position)
            last = self._last[p.follower]
            if ramping:
                # joints still ramping move at ramp speed; a joint that has met the leader's
                # pose tracks it from then on (so the ramp converges on a moving leader)
                caught = self._caught.setdefault(p.follower, np.zeros(len(target), dtype=bool))
                want = np.where(caught, target, ramp_step(last, target, p.ramp_max_step))
            else:
                want = target
            cmd = safe_command(want, last, p.limits)
            self._last[p.follower] = cmd
            out[p.follower] = FollowerCommand(cmd.copy(), leader.stamp, False)
            if ramping:
                caught |= np.abs(cmd - target) <= self.cfg.ramp_tolerance
                ok = bool(caught.all())
                if ok and self.cfg.settle_tolerance > 0:
                    fs = follower_states.get(p.follower)
                    ok = (
                        fs is not None
                        and float(np.max(np.abs(np.asarray(fs.position) - target)))
                        <= self.cfg.settle_tolerance
                    )
                settled = settled and ok
        if ramping:
            assert self._ramp_started is not None
            if settled:
                self._transition(now, TeleopState.MIRRORING, events, "followers reached the leaders")
            elif now - self._ramp_started > self.cfg.ramp_timeout_s:
                events.append(
                    TeleopEvent(
                        now,
                        "ramp_timeout",
                        f"followers not within tolerance after {self.cfg.ramp_timeout_s:g} s",
                    )
                )
                self._transition(now, TeleopState.IDLE, events, "ramp timed out")
        return out
