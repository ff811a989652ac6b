"""Observations for the policy from the latest timestamped joint states and camera frames.

The tick thread only stores references (O(1) per tick): `ObservationBuilder.sample(now)`
pushes the latest readings into a history of n_obs_steps samples at the control rate and
checks their ages; `ObsSnapshot.assemble()` stacks arrays into the policy's observation
dict and runs in the inference worker, off the tick.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from duet.data.keys import OBS_IS_PAD, STATE, image_key
from duet.errors import DuetError
from duet.hardware.interfaces import CameraReading, JointState


@dataclass(frozen=True)
class ObsSample:
    """One control-rate sample: joint positions of all arms (action order) and one frame per camera."""

    stamp: float  # capture time of the joint states (oldest arm), monotonic clock
    state: np.ndarray  # (S,) float32
    images: Mapping[str, np.ndarray]  # camera name -> (H, W, 3) uint8 (references, not copies)


@dataclass(frozen=True)
class ObsStatus:
    """Freshness of the latest sample at a tick."""

    ok: bool
    reason: str  # "" when ok; otherwise one line naming the stale input
    state_age: float  # s
    camera_ages: Mapping[str, float]  # s (inf for a camera without a frame)


@dataclass(frozen=True)
class ObsSnapshot:
    """The n_obs_steps latest samples, oldest first; cheap to take, assembled in the worker."""

    samples: tuple[ObsSample, ...]
    n_obs_steps: int
    camera_names: tuple[str, ...]

    @property
    def stamp(self) -> float:
        """Capture time of the newest sample: chunk actions are due at stamp + t_rel."""
        return self.samples[-1].stamp

    def assemble(self) -> dict[str, np.ndarray]:
        pad = self.n_obs_steps - len(self.samples)
        seq = (self.samples[0],) * pad + self.samples
        obs: dict[str, np.ndarray] = {
            STATE: np.stack([s.state for s in seq]).astype(np.float32, copy=False),
            OBS_IS_PAD: np.array([True] * pad + [False] * len(self.samples)),
        }
        for cam in self.camera_names:
            obs[image_key(cam)] = np.stack([s.images[cam] for s in seq])
        return obs


class ObservationBuilder:
    """Keeps the latest joint states / camera readings and a control-rate history.

    observe() may be called at any rate (e.g. from ROS callbacks); sample(now) is called once
    per tick and appends the latest readings to the history when they are fresh.
    """

    def __init__(
        self, n_obs_steps: int, camera_names: Sequence[str], max_state_age_s: float, max_camera_age_s: float
    ):
        if n_obs_steps < 1:
            raise DuetError(f"policy n_obs_steps must be >= 1 (got {n_obs_steps})")
        self.n_obs_steps = int(n_obs_steps)
        self.camera_names = tuple(camera_names)
        self.max_state_age_s = float(max_state_age_s)
        self.max_camera_age_s = float(max_camera_age_s)
        self._joints: tuple[JointState, ...] = ()
        self._cams: dict[str, CameraReading] = {}
        self._history: deque[ObsSample] = deque(maxlen=self.n_obs_steps)
        self._last_pushed: float | None = None

    def reset(self) -> None:
        self._history.clear()
        self._last_pushed = None

    def observe(self, joint_states: Sequence[JointState], cameras: Mapping[str, CameraReading]) -> None:
        """Store the latest readings: joint states of the follower arms in action order
        (rig pair order), and camera readings by name (extra cameras are ignored)."""
        if not joint_states:
            raise DuetError("observe(): no joint states given (pass one JointState per follower arm)")
        self._joints = tuple(joint_states)
        for name in self.camera_names:
            if name in cameras:
                self._cams[name] = cameras[name]

    @property
    def has_state(self) -> bool:
        return bool(self._joints)

    def state(self) -> np.ndarray:
        """Latest joint positions of all arms, concatenated (action order)."""
        return np.concatenate([j.position for j in self._joints]).astype(np.float64)

    def status(self, now: float) -> ObsStatus:
        return self._status(now, self._joints, self._cams)

    def _status(
        self, now: float, joints: tuple[JointState, ...], cams: Mapping[str, CameraReading]
    ) -> ObsStatus:
        state_age = now - min(j.stamp for j in joints) if joints else float("inf")
        ages: dict[str, float] = {}
        reason = ""
        if not joints:
            reason = "no joint state received"
        elif not state_age <= self.max_state_age_s:
            reason = f"joint state is {state_age * 1e3:.0f} ms old (max_state_age_s {self.max_state_age_s})"
        for name in self.camera_names:
            r = cams.get(name)
            if r is None or r.frame is None:
                ages[name] = float("inf")
                why = f"camera {name!r}: no frame"
            else:
                ages[name] = now - r.frame.stamp
                if not r.connected:
                    why = f"camera {name!r} disconnected"
                elif r.stale:
                    why = f"camera {name!r} reports a stale frame"
                elif not ages[name] <= self.max_camera_age_s:
                    why = f"camera {name!r} frame is {ages[name] * 1e3:.0f} ms old (max_camera_age_s {self.max_camera_age_s})"
                else:
                    why = ""
            if why and not reason:
                reason = why
        return ObsStatus(ok=not reason, reason=reason, state_age=state_age, camera_ages=ages)

    def sample(self, now: float) -> ObsStatus:
        """Check freshness at this tick and, when fresh, append the latest readings to the history.
        Safe against observe() running in another thread (reads one consistent set)."""
        joints, cams = self._joints, dict(self._cams)
        st = self._status(now, joints, cams)
        if not st.ok:
            return st
        stamp = min(j.stamp for j in joints)
        if self._last_pushed != stamp or not self._history:
            images = {name: cams[name].frame.color for name in self.camera_names}  # type: ignore[union-attr]
            state = np.concatenate([j.position for j in joints]).astype(np.float32)
            self._history.append(ObsSample(stamp=stamp, state=state, images=images))
            self._last_pushed = stamp
        return st

    def snapshot(self) -> ObsSnapshot:
        if not self._history:
            raise DuetError("no fresh observation yet: call observe() with fresh readings before ticking")
        return ObsSnapshot(tuple(self._history), self.n_obs_steps, self.camera_names)
