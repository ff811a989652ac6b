"""Scripted leader motions: the operator's stand-in for mock leader arms.

A motion is a smooth joint-space trajectory within the arm's limits, a pure function of
time (deterministic from the clock): `motion(t) -> positions` in interface units (rad,
gripper normalized 0..1). The factory turns it into servo ticks for the fake bus, so a mock
leader moves as if an operator held it, through the real driver code.

Motions (ArmSlot.mock_motion):
- "wave":  every arm joint swings sinusoidally around the model's home pose with its own
           period and phase (small enough to stay well inside the limits); the gripper opens
           and closes through its whole range.
- "still": holds the home pose, gripper half open.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from duet.errors import ConfigError

MOTIONS = ("wave", "still")

# Periods (s) of the per-joint sinusoids: mutually incommensurate so the pose never repeats
# exactly within a demo, slow enough to look like a person moving the arm.
_PERIODS = (7.0, 5.3, 6.1, 4.3, 3.7, 2.9, 4.7, 5.9)
_GRIPPER_PERIOD = 4.0
_EASE_S = 2.0


def home_pose(model) -> np.ndarray:
    """The model's home pose (arm joints from the model's `home`, else the middle of the
    limits nearest 0), gripper half open."""
    n = model.n
    home = np.zeros(n)
    cfg_home = list(getattr(model.config, "home", []) or [])
    for j in model.joints[:-1]:
        h = cfg_home[j.index] if j.index < len(cfg_home) else 0.0
        home[j.index] = min(max(h, j.lower), j.upper)
    home[-1] = 0.5
    return home


def make_motion(name: str, model, t0: float = 0.0) -> Callable[[float], np.ndarray]:
    """A scripted motion for an arm model; t0 is the time the motion starts (t < t0 holds
    the start pose)."""
    name = (name or "wave").strip()
    if name not in MOTIONS:
        raise ConfigError(f"mock_motion {name!r} unknown (valid: {', '.join(MOTIONS)})")
    home = home_pose(model)
    if name == "still":
        return lambda t: home.copy()

    n = model.n
    amp = np.zeros(n)
    center = home.copy()
    for j in model.joints[:-1]:
        # Swing up to 0.4 rad around the home pose, keeping 10 % of the range clear of each
        # limit (the swing centre moves off home where home is too close to a limit).
        margin = 0.1 * (j.upper - j.lower)
        lo, hi = j.lower + margin, j.upper - margin
        a = max(0.0, min(0.4, (hi - lo) / 2))
        amp[j.index] = a
        center[j.index] = min(max(home[j.index], lo + a), hi - a)
    omega = np.array([2 * math.pi / _PERIODS[i % len(_PERIODS)] for i in range(n)])
    phase = np.array([i * 2.0 * math.pi / max(n, 1) for i in range(n)])
    g_omega = 2 * math.pi / _GRIPPER_PERIOD

    def motion(t: float) -> np.ndarray:
        s = max(0.0, t - t0)
        # Ease in over the first 2 s (smoothstep), so the motion starts from rest at home.
        u = min(1.0, s / _EASE_S)
        ease = u * u * (3 - 2 * u)
        # A blend of home and the swing (both within the limits), so it stays within them.
        pos = home + ease * (center + amp * np.sin(omega * s + phase) - home)
        # Gripper: from half open (the home pose) through fully open and fully closed.
        pos[-1] = 0.5 + 0.5 * math.sin(g_omega * s)
        return pos

    return motion
