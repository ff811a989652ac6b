"""The server's watchdog: what to command when there is no fresh, valid policy action.

Faults (stale observations, a NaN chunk, no action by a tick's deadline) make the server
hold: either re-send the last safe command, or ramp toward a rest pose at a fraction of the
safety step limit. Execution resumes through the server's cross-fade, so there is no jump.
"""

from __future__ import annotations

import numpy as np

from duet.hardware.safety import SafetyLimits, ramp_step


class Watchdog:
    def __init__(self, on_fault: str, rest_pose: np.ndarray | None, limits: SafetyLimits, rest_speed: float):
        self.on_fault = on_fault
        self.rest_pose = (
            None
            if rest_pose is None
            else np.clip(np.asarray(rest_pose, dtype=np.float64), limits.lower, limits.upper)
        )
        self.rest_step = np.asarray(limits.max_step, dtype=np.float64) * float(rest_speed)
        self.fault = ""  # active fault ("" none): stale_observation, invalid_action
        self.detail = ""
        self.latched = False  # stays until reset()

    def trip(self, fault: str, detail: str, latch: bool = False) -> bool:
        """Enter a fault; True when this is a new fault (worth an event)."""
        new = fault != self.fault
        self.fault, self.detail = fault, detail
        self.latched = self.latched or latch
        return new

    def clear(self) -> str:
        """Leave the active fault unless latched; returns the fault cleared ("" if none)."""
        if self.latched:
            return ""
        old, self.fault, self.detail = self.fault, "", ""
        return old

    def reset(self) -> None:
        self.fault = self.detail = ""
        self.latched = False

    def hold_target(self, last: np.ndarray) -> np.ndarray:
        """The target while held: the last command, or one ramp step toward rest."""
        if self.on_fault == "rest" and self.rest_pose is not None:
            return ramp_step(last, self.rest_pose, self.rest_step)
        return last
