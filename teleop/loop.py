"""A ROS-free teleop loop: read leaders and followers, step the core, write the followers.

Paced on absolute deadlines (duet.clock.Pacer) from an injected clock, never
sleep-after-work. The ROS teleop node runs the same core on the same Pacer, from
subscribed joint states instead of direct reads.

Faults: each tick the core gets every arm's fault (``arm_faults()``): the arm's own latched
fault (a servo hardware error, hardware.interfaces.ArmFaults) or reads failing
``arm_fault_after_errors`` ticks in a row; the core pauses and says which arm and servo.
When a start (or resume) enters the ramp, followers that lost torque (a servo reboot is
silent on the wire) get it back, holding where they are, before any ramp command is
written; if that fails the follower is faulted and teleop pauses on the next tick.
The achieved tick rate is watched (duet.ratewatch): "rate" events (WARN / ERROR / OK) with
the measured rate when it falls below the configured fractions of rate_hz.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from duet.clock import Clock, Pacer, PeriodStats, PeriodSummary
from duet.hardware.interfaces import Arm, ArmFaults, JointState
from duet.ratewatch import LEVEL_NAMES, OK, RateWatch
from duet.stats import Samples
from duet.teleop.core import StepResult, TeleopCore, TeleopEvent, TeleopState
from duet.teleop.inputs import InputSource


@dataclass
class LoopReport:
    period: PeriodSummary
    latency_p50_ms: float
    latency_p99_ms: float
    read_errors: int
    write_errors: int
    rate_level: str = "OK"  # the rate watch's level at the end ("OK", "WARN", "ERROR")


class TeleopLoop:
    """Teleop over Arm objects in one process (no ROS): ``run(duration)`` or ``tick()``."""

    def __init__(
        self,
        core: TeleopCore,
        leaders: dict[str, Arm],
        followers: dict[str, Arm],
        clock: Clock,
        inputs: list[InputSource] | None = None,
        on_event: Callable[[TeleopEvent], None] | None = None,
    ):
        self.core = core
        self.leaders = leaders
        self.followers = followers
        self.clock = clock
        self.inputs = list(inputs or [])
        self.on_event = on_event
        self.pacer = Pacer(core.cfg.rate_hz, clock, PeriodStats(core.cfg.dt))  # resolved: the core needs it
        self.latency = Samples(1 << 20)  # leader capture -> follower write (s), the first ~5.8 h at 50 Hz
        self.read_errors = 0
        self.write_errors = 0
        self.rate = RateWatch(core.cfg.rate_hz, core.cfg.rate_watch, what="teleop loop")
        self._failed_reads: dict[str, int] = {}  # arm -> failed reads in a row
        self._read_error: dict[str, str] = {}  # arm -> its last read error, one line
        self._torque_faults: dict[str, str] = {}  # follower -> why its torque was not restored (next step)
        self._stop = False

    def _read(self, arms: dict[str, Arm]) -> dict[str, JointState]:
        out = {}
        for name, arm in arms.items():
            try:
                out[name] = arm.read()
                self._failed_reads[name] = 0
            except Exception as e:  # a bus fault: the sample is missing this tick, the core reacts
                self.read_errors += 1
                self._failed_reads[name] = self._failed_reads.get(name, 0) + 1
                self._read_error[name] = _one_line(e)
        return out

    def arm_faults(self) -> dict[str, str]:
        """Arm name -> its fault in one line, for every faulted arm (the core's input)."""
        out = {}
        for name, arm in (*self.leaders.items(), *self.followers.items()):
            fault = arm.fault if isinstance(arm, ArmFaults) else ""
            n = self._failed_reads.get(name, 0)
            if not fault and n >= self.core.cfg.arm_fault_after_errors:
                fault = f"{name}: {n} failed reads in a row (last: {self._read_error.get(name, '')})"
            fault = fault or self._torque_faults.get(name, "")
            if fault:
                out[name] = fault
        return out

    def _restore_torque(self, now: float, events: list[TeleopEvent]) -> set[str]:
        """Before the first ramp command: torque back on where a follower lost it. Returns
        the followers that must not be written (their torque could not be restored)."""
        failed: set[str] = set()
        for name in self.core.followers:
            arm = self.followers.get(name)
            if not isinstance(arm, ArmFaults):
                continue
            try:
                done = arm.restore_torque()
            except Exception as e:
                self._torque_faults[name] = (
                    f"{name}: torque could not be restored before the ramp: {_one_line(e)}"
                )
                failed.add(name)
                continue
            if done:
                events.append(TeleopEvent(now, "torque", done))
        return failed

    def tick(self) -> StepResult:
        started = self.clock.now()
        self.rate.tick(started)
        for src in self.inputs:
            for action in src.poll():
                self.core.request(action, src.name)
        leaders = self._read(self.leaders)
        followers = self._read(self.followers)
        now = self.clock.now()
        before = self.core.state
        result = self.core.step(now, leaders, followers, self.arm_faults())
        self._torque_faults.clear()  # reported to the core once
        skip: set[str] = set()
        if result.state is TeleopState.RAMPING and before is not TeleopState.RAMPING:
            skip = self._restore_torque(now, result.events)
        for name, cmd in result.commands.items():
            if name in skip:
                continue
            try:
                self.followers[name].write(cmd.position)
            except Exception:
                self.write_errors += 1
        if result.latency is not None:
            self.latency.add(result.latency)
        self._check_rate(started, result.events)
        if self.on_event:
            for ev in result.events:
                self.on_event(ev)
        return result

    def _check_rate(self, now: float, events: list[TeleopEvent]) -> None:
        was = self.rate.level
        level, message = self.rate.check(now)
        if level != was:
            if level == OK:
                rate = self.rate.rate(now)
                message = (
                    f"teleop loop back at {rate:.1f} Hz (>= {self.rate.cfg.warn_below * 100:.0f} % "
                    f"of {self.rate.target_hz:g} Hz)"
                )
            events.append(TeleopEvent(now, "rate", f"{LEVEL_NAMES[level]}: {message}"))

    def stop(self) -> None:
        self._stop = True

    def run(self, duration: float | None = None) -> LoopReport:
        """Tick on the pacer's deadlines until stop() or for duration seconds."""
        self._stop = False
        self.pacer.start()
        end = None if duration is None else self.clock.now() + duration
        while not self._stop and (end is None or self.clock.now() < end):
            self.pacer.wait()
            self.tick()
        return self.report()

    def report(self) -> LoopReport:
        p50, p99 = (x * 1e3 for x in self.latency.percentiles(50, 99))
        return LoopReport(
            self.pacer.stats.summary(),
            p50,
            p99,
            self.read_errors,
            self.write_errors,
            LEVEL_NAMES[self.rate.level],
        )


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
