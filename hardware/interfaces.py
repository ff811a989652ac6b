"""The small interfaces every backend (Dynamixel, mock, sim) implements.

Conventions shared by every arm backend:
- Joint order is the arm config's joint order; the gripper is the last joint.
- Positions are radians for revolute joints. The gripper is reported and commanded
  normalized 0..1 (open = 1, closed = 0, over the arm's calibrated range), as ALOHA does;
  its raw joint angle (rad) is reported beside it in JointState.gripper_raw.
- Every sample carries `stamp`: its capture time on the process monotonic clock
  (duet.clock.MonotonicClock, i.e. time.monotonic()), taken when the data was read,
  never synthesised from a tick index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class JointState:
    stamp: float  # capture time, process monotonic clock (s)
    names: tuple[str, ...]  # joint names in config order, gripper last
    position: np.ndarray  # (n,) rad; gripper normalized 0..1 (open=1)
    velocity: np.ndarray  # (n,) rad/s; gripper normalized units/s
    effort: np.ndarray  # (n,) present current, mA (0 where the backend has none)
    gripper_raw: float = float("nan")  # gripper joint angle before normalization, rad


@dataclass(frozen=True)
class ArmFeatures:
    """What an arm offers; available while disconnected."""

    name: str  # e.g. "left_follower"
    role: str  # "leader" or "follower"
    joint_names: tuple[str, ...]  # gripper last
    lower: np.ndarray  # (n,) joint lower limits (rad; gripper 0)
    upper: np.ndarray  # (n,) joint upper limits (rad; gripper 1)
    max_step: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (n,) max change per tick


@runtime_checkable
class Arm(Protocol):
    features: ArmFeatures

    def connect(self) -> None:
        """Open the port / backend, check every servo answers, load calibration."""

    def disconnect(self) -> None:
        """Go to the configured safe state and release the port. Idempotent."""

    @property
    def is_connected(self) -> bool: ...

    def read(self) -> JointState:
        """One synchronous read of every joint (one sync-read per bus tick)."""

    def write(self, position: np.ndarray) -> np.ndarray:
        """Command goal positions (config order; gripper normalized). The command passes
        the safety function first; returns what was actually sent (after clamping)."""

    def set_torque(self, enabled: bool) -> None: ...

    def health(self) -> dict[str, Any]:
        """Counters and readings for diagnostics: bus errors, retries, temperatures (C),
        input voltage (V), hardware error flags. Plain JSON-able values."""


@runtime_checkable
class ArmFaults(Protocol):
    """Optional for an Arm (the Dynamixel arm has it): a fault state loops can act on."""

    @property
    def fault(self) -> str:
        """A latched problem (e.g. a servo's hardware error met by the last read), in one
        line naming the arm, the servo and the fix; "" when none."""

    def restore_torque(self) -> str:
        """Followers: re-enable torque where servos lost it (a reboot is silent on the
        wire), holding the present pose. Returns what was done ("" when nothing was
        needed); raises when torque cannot be restored."""


@dataclass(frozen=True)
class Frame:
    stamp: float  # capture time on the process monotonic clock (s); hardware time mapped to it when available
    index: int  # frame counter from the device (gaps = dropped frames)
    color: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray | None = None  # (H, W) uint16, depth units of the device (mm for RealSense by default)
    jpeg: bytes | None = None  # the frame as JPEG when the device delivered JPEG (stored without re-encoding)


@dataclass(frozen=True)
class CameraFeatures:
    name: str
    width: int
    height: int
    fps: float
    has_depth: bool


@dataclass(frozen=True)
class CameraReading:
    """The latest frame and whether it may be used. A frame older than the camera's
    max_age is stale: reported as such, never silently re-served as fresh."""

    frame: Frame | None  # None before the first frame
    age: float  # now - frame.stamp (s); inf when no frame
    stale: bool
    connected: bool


@runtime_checkable
class Camera(Protocol):
    features: CameraFeatures

    def connect(self) -> None:
        """Open the device and start its capture worker."""

    def disconnect(self) -> None:
        """Stop the worker and release the device. Idempotent."""

    @property
    def is_connected(self) -> bool: ...

    def read(self) -> CameraReading:
        """The latest frame (non-blocking) with its age and staleness."""

    def health(self) -> dict[str, Any]:
        """Frames captured, dropped, stalls, disconnects, measured fps."""
