"""A ROS-free teleop loop: read leaders and followers, step the core, write the followers.

Paced on absolute deadlines (duet.clock.Pacer) from an injected clock, never
sleep-after-work. The ROS teleop node runs the same core on the same Pacer, from
subscribed joint states instead of direct reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from duet.clock import Clock, Pacer, PeriodStats, PeriodSummary
from duet.hardware.interfaces import Arm, JointState
from duet.teleop.core import StepResult, TeleopCore, TeleopEvent
from duet.teleop.inputs import InputSource


class LatencyStats:
    """A bounded record of latencies (s); summary in ms."""

    def __init__(self, capacity: int = 1 << 20):
        self._v = np.empty(capacity, dtype=np.float64)
        self._n = 0

    def record(self, value: float) -> None:
        if self._n < len(self._v):
            self._v[self._n] = value
            self._n += 1

    def reset(self) -> None:
        self._n = 0

    @property
    def count(self) -> int:
        return self._n

    def percentiles_ms(self, *qs: float) -> list[float]:
        if self._n == 0:
            return [float("nan")] * len(qs)
        return [float(x) for x in np.percentile(self._v[: self._n], qs) * 1e3]


@dataclass
class LoopReport:
    period: PeriodSummary
    latency_p50_ms: float
    latency_p99_ms: float
    read_errors: int
    write_errors: int


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
        self.pacer = Pacer(core.cfg.rate_hz, clock, PeriodStats(1.0 / core.cfg.rate_hz))
        self.latency = LatencyStats()
        self.read_errors = 0
        self.write_errors = 0
        self._stop = False

    def _read(self, arms: dict[str, Arm]) -> dict[str, JointState]:
        out = {}
        for name, arm in arms.items():
            try:
                out[name] = arm.read()
            except Exception:  # a bus fault: the sample is missing this tick, the core reacts
                self.read_errors += 1
        return out

    def tick(self) -> StepResult:
        for src in self.inputs:
            for action in src.poll():
                self.core.request(action, src.name)
        leaders = self._read(self.leaders)
        followers = self._read(self.followers)
        now = self.clock.now()
        result = self.core.step(now, leaders, followers)
        for name, cmd in result.commands.items():
            try:
                self.followers[name].write(cmd.position)
            except Exception:
                self.write_errors += 1
        if result.latency is not None:
            self.latency.record(result.latency)
        if self.on_event:
            for ev in result.events:
                self.on_event(ev)
        return result

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
        p50, p99 = self.latency.percentiles_ms(50, 99)
        return LoopReport(self.pacer.stats.summary(), p50, p99, self.read_errors, self.write_errors)
