"""A plain 50 Hz loop over hardware Arm / Camera objects (no ROS): `duet eval`, the demo."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from duet.clock import Pacer, PeriodSummary, realtime
from duet.errors import DuetError
from duet.hardware.interfaces import Arm, Camera
from duet.hardware.safety import SafetyLimits
from duet.policy.server.server import PolicyServer, TickResult
from duet.policy.server.stats import ServerStats

log = logging.getLogger(__name__)


@dataclass
class LoopReport:
    server: ServerStats
    period: PeriodSummary
    read_errors: int  # arm reads that raised (the joint state went stale; the watchdog held)
    write_errors: int

    def lines(self) -> list[str]:
        return [
            f"loop: {self.period.line()}; read errors {self.read_errors}, write errors {self.write_errors}",
            *self.server.lines(),
        ]


def safety_limits(arms: Sequence[Arm]) -> SafetyLimits:
    """Safety limits for the policy's action vector: the arms' limits concatenated in order."""
    feats = [a.features for a in arms]
    for f in feats:
        if len(f.max_step) != len(f.joint_names):
            raise DuetError(
                f"arm {f.name!r} reports no max_step per joint: its arm model needs velocity limits"
            )
    return SafetyLimits(
        np.concatenate([f.lower for f in feats]),
        np.concatenate([f.upper for f in feats]),
        np.concatenate([f.max_step for f in feats]),
    )


def action_names(arms: Sequence[Arm]) -> list[str]:
    """One name per action dim, "<arm>.<joint>" in action order, for fault reports."""
    return [f"{a.features.name}.{j}" for a in arms for j in a.features.joint_names]


def split_command(command: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Split an action-order command into per-arm commands."""
    return np.split(command, np.cumsum(sizes)[:-1])


def run_loop(
    server: PolicyServer,
    arms: Sequence[Arm],
    cameras: Mapping[str, Camera],
    pacer: Pacer,
    duration: float,
    on_tick: Callable[[TickResult], None] | None = None,
    stop: threading.Event | None = None,
    rt_priority: int = 0,
) -> LoopReport:
    """Drive `server` at the pacer's rate for `duration` seconds (or until `stop` is set).

    arms: the follower arms in rig pair order (the policy's action order); cameras: by name
    (only the policy's cameras are needed). Each tick: read arms and cameras, observe, tick,
    write the command. A failed arm read leaves that arm's joint state stale, so the
    watchdog holds; the loop itself keeps its deadlines. rt_priority > 0: run the calling
    thread under SCHED_FIFO (best effort, see duet.clock.set_realtime; restored on return).
    """
    sizes = [len(a.features.joint_names) for a in arms]
    if sum(sizes) != server.action_dim:
        raise DuetError(
            f"the arms have {sum(sizes)} joints together but the policy has action_dim "
            f"{server.action_dim}: pass the follower arms in rig pair order"
        )
    missing = [c for c in server.policy.camera_names if c not in cameras]
    if missing:
        raise DuetError(f"camera {missing[0]!r} is needed by the policy but not given: add it to the rig")
    if server.action_names is None:
        server.action_names = action_names(arms)
    if not server._started:
        server.start()
    with realtime(rt_priority) as why:
        if why:
            log.warning("run_loop: %s", why)
        return _loop(server, arms, cameras, pacer, duration, on_tick, stop, sizes)


def _loop(server, arms, cameras, pacer, duration, on_tick, stop, sizes) -> LoopReport:
    clock = pacer.clock
    states = [a.read() for a in arms]
    read_errors = write_errors = 0
    pacer.start()
    t_end = clock.now() + duration
    while stop is None or not stop.is_set():
        t = pacer.wait()
        if t >= t_end:
            break
        for i, arm in enumerate(arms):
            try:
                states[i] = arm.read()
            except DuetError:
                read_errors += 1
        server.observe(states, {name: cam.read() for name, cam in cameras.items()})
        result = server.tick(t)
        if result.command is not None:
            for arm, cmd in zip(arms, split_command(result.command, sizes)):
                try:
                    arm.write(cmd)
                except DuetError:
                    write_errors += 1
        if on_tick is not None:
            on_tick(result)
    return LoopReport(server.stats(), pacer.stats.summary(), read_errors, write_errors)
