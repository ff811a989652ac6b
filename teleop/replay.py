"""Replay: recorded actions played back on follower arms, every command through the safety
function and paced on absolute deadlines (`duet data replay`). It drives arms, so it lives
with teleop, beside the leader -> follower loop; the store it reads is passed in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from duet.clock import MonotonicClock, Pacer
from duet.errors import ConfigError
from duet.hardware.factory import make_arm
from duet.hardware.rig import RigConfig
from duet.hardware.safety import SafetyLimits, safe_command


def replay_actions(
    actions: np.ndarray,
    arms: dict[str, Any],
    joints: dict[str, int],
    rate_hz: float,
    clock: Any = None,
    ramp_timeout_s: float = 5.0,
    on_tick: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Play (T, A) actions on connected follower arms (dict name -> Arm, in action order;
    `joints` gives each arm's joint count). Every command passes
    hardware.safety.safe_command (limits and max step from arm.features) and the loop is
    paced by duet.clock.Pacer. The arms first ramp to the first action."""
    clock = clock or MonotonicClock()
    names = list(arms)
    limits, last = {}, {}
    for n in names:
        f = arms[n].features
        step = np.asarray(f.max_step, dtype=np.float64)
        if step.size != len(f.joint_names):
            step = np.full(len(f.joint_names), 0.05)  # conservative default, rad (gripper units) per tick
        limits[n] = SafetyLimits(f.lower, f.upper, step)
        last[n] = np.asarray(arms[n].read().position, dtype=np.float64)
    slices, o = {}, 0
    for n in names:
        slices[n] = slice(o, o + joints[n])
        o += joints[n]
    if actions.shape[1] != o:
        raise ConfigError(
            f"replay: actions have {actions.shape[1]} dims, the arms take {o}; replay on the rig the episode was recorded on"
        )
    pacer = Pacer(rate_hz, clock)
    pacer.start()
    # Ramp to the first action.
    ramp_ticks = 0
    t_end = clock.now() + ramp_timeout_s
    while True:
        pacer.wait()
        done = True
        for n in names:
            target = actions[0, slices[n]]
            cmd = safe_command(target, last[n], limits[n], names=arms[n].features.joint_names)
            last[n] = np.asarray(arms[n].write(cmd), dtype=np.float64)
            done &= bool(np.allclose(cmd, np.clip(target, limits[n].lower, limits[n].upper), atol=1e-6))
        ramp_ticks += 1
        if done or clock.now() > t_end:
            break
    clamped = 0
    for k in range(len(actions)):
        pacer.wait()
        for n in names:
            target = actions[k, slices[n]]
            cmd = safe_command(target, last[n], limits[n], names=arms[n].features.joint_names)
            clamped += int(not np.allclose(cmd, target, atol=1e-9))
            last[n] = np.asarray(arms[n].write(cmd), dtype=np.float64)
        if on_tick is not None:
            on_tick(k)
    return {
        "ticks": len(actions),
        "ramp_ticks": ramp_ticks,
        "clamped_commands": clamped,
        "timing": pacer.stats.summary().line(),
    }


def replay_episode(
    store: Any, i: int, rig: RigConfig, use_mock_hardware: bool = True, speed: float = 1.0
) -> dict[str, Any]:
    """Replay episode i of an episode store (duet.data.store.EpisodeStore) on the rig's
    followers (mock or real)."""
    spec = store.spec
    actions = store.read_episode(i, keys=["action"])["action"]
    arms = {}
    try:
        for f in spec.followers:
            arm = make_arm(rig, f, use_mock_hardware)
            arm.connect()
            arms[f] = arm
        return replay_actions(
            actions, arms, {f: len(spec.arm(f).joints) for f in spec.followers}, spec.rate_hz * speed
        )
    finally:
        for a in arms.values():
            a.disconnect()
