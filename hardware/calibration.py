"""Arm calibration: per-joint zero offsets and signs, the gripper's range, and the
ticks <-> joint-space conversion that uses them.

A calibration file is JSON, one per physical arm, named after the arm's port id (the
basename of its /dev/serial/by-id path, which is tied to the USB adapter's serial number)
in the rig's calibration_dir. `duet calibrate --rig RIG --arm NAME` produces it (the prompts
live in duet.apps.hw; this module has no I/O besides reading and writing the file).

Joint angle of joint i from its primary servo's present position p (ticks):

    q_i = sign_i * (p - zero_i) * 2*pi / resolution

unwrapped: the first reading is wrapped into [-pi, pi) around the calibrated zero, every
later one is taken as the previous angle plus the wrapped difference, so an encoder that
wraps 4095 -> 0 never shows as a 2*pi jump. The gripper's zero is the servo's own center
(resolution / 2), so its raw angle matches Interbotix / ALOHA conventions; it is reported
normalized over the calibrated [closed, open] range (open = 1).

Mock arms use `Calibration.nominal(model)` (zero at the servo center, signs +1, the
model's nominal gripper range), so the demo needs no calibration step.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duet.errors import ConfigError

FORMAT = "duet-arm-calibration"
VERSION = 1
TWO_PI = 2.0 * math.pi


class CalibrationError(ConfigError):
    """A calibration file is missing, unreadable or does not fit the arm."""


@dataclass(frozen=True)
class JointCalibration:
    zero_ticks: int  # primary servo's present position at the joint's zero pose
    sign: int = 1  # +1 or -1: joint direction relative to the servo's (after Drive Mode)


@dataclass(frozen=True)
class Calibration:
    arm_model: str  # model name the calibration was made for
    joints: dict[str, JointCalibration]  # every joint of the model, gripper included
    gripper_open: float  # raw gripper angle fully open (rad)
    gripper_closed: float  # raw gripper angle fully closed (rad)
    port_id: str = ""  # the arm's port id when measured
    created: str = ""  # ISO time when measured ("" for nominal)
    nominal: bool = False  # True: built-in defaults, not measured

    # ------------------------------------------------------------------ construction
    @classmethod
    def nominal_for(cls, model) -> Calibration:
        """Built-in calibration: zeros at the servo center, signs +1, nominal gripper range."""
        joints = {j.name: JointCalibration(model.resolution(j) // 2, 1) for j in model.joints}
        g = model.config.gripper
        return cls(model.name, joints, float(g.open), float(g.closed), nominal=True)

    @classmethod
    def from_measurements(
        cls,
        model,
        zero_ticks: np.ndarray,
        gripper_open_ticks: int,
        gripper_closed_ticks: int,
        *,
        port_id: str = "",
        signs: dict[str, int] | None = None,
    ) -> Calibration:
        """Build a calibration from primary-servo readings: the zero pose (one tick value per
        joint; the gripper entry is ignored) and the gripper fully open / fully closed."""
        zero_ticks = np.asarray(zero_ticks, dtype=np.int64)
        if zero_ticks.shape != (model.n,):
            raise CalibrationError(
                f"arm model {model.name}: expected {model.n} zero readings, got {zero_ticks.shape}"
            )
        signs = signs or {}
        joints = {}
        for j in model.joints:
            res = model.resolution(j)
            zero = res // 2 if j.is_gripper else int(zero_ticks[j.index]) % res
            joints[j.name] = JointCalibration(zero, int(signs.get(j.name, 1)))
        g = model.gripper
        res = model.resolution(g)
        sign = joints[g.name].sign
        open_rad = sign * float(_wrap(float(gripper_open_ticks - res // 2) * TWO_PI / res))
        closed_rad = sign * float(_wrap(float(gripper_closed_ticks - res // 2) * TWO_PI / res))
        min_stroke = 8 * TWO_PI / res  # 8 ticks
        if abs(open_rad - closed_rad) < min_stroke:
            raise CalibrationError(
                f"arm model {model.name}: gripper open and closed readings are the same "
                f"({gripper_open_ticks} vs {gripper_closed_ticks} ticks); open and close the gripper fully when asked"
            )
        return cls(
            model.name,
            joints,
            open_rad,
            closed_rad,
            port_id=port_id,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )

    # ------------------------------------------------------------------ files
    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "arm_model": self.arm_model,
            "port_id": self.port_id,
            "created": self.created,
            "joints": {
                n: {"zero_ticks": int(c.zero_ticks), "sign": int(c.sign)} for n, c in self.joints.items()
            },
            "gripper": {"open_rad": float(self.gripper_open), "closed_rad": float(self.gripper_closed)},
        }

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename), creating the directory."""
        p = Path(path).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=p.name, suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_json(), f, indent=2)
                f.write("\n")
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return p

    @classmethod
    def load(cls, path: str | Path, model, fix: str = "run `duet calibrate`") -> Calibration:
        """Read and validate a calibration file against an arm model. Every problem is a
        one-line CalibrationError naming the file (and joint) and `fix`."""
        p = Path(path).expanduser()
        if not p.is_file():
            raise CalibrationError(f"{p}: no calibration file; {fix}")
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise CalibrationError(f"{p}: unreadable calibration ({e.__class__.__name__}); {fix}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibrationError(f"{p}: not a duet arm calibration file; {fix}")
        if data.get("version") != VERSION:
            raise CalibrationError(
                f"{p}: calibration version {data.get('version')!r} (expected {VERSION}); {fix}"
            )
        if data.get("arm_model") != model.name:
            raise CalibrationError(
                f"{p}: made for arm model {data.get('arm_model')!r}, this arm is {model.name!r}; {fix}"
            )
        joints_in = data.get("joints")
        if not isinstance(joints_in, dict):
            raise CalibrationError(f"{p}: no 'joints' mapping; {fix}")
        extra = [n for n in joints_in if n not in model.joint_names]
        if extra:
            raise CalibrationError(
                f"{p}: joint {extra[0]!r} is not in arm model {model.name} "
                f"({len(joints_in)} joints calibrated, model has {model.n}); {fix}"
            )
        joints = {}
        for j in model.joints:
            entry = joints_in.get(j.name)
            if not isinstance(entry, dict):
                raise CalibrationError(
                    f"{p}: joint {j.name!r} missing ({len(joints_in)} joints calibrated, model has {model.n}); {fix}"
                )
            zero, sign = entry.get("zero_ticks"), entry.get("sign", 1)
            res = model.resolution(j)
            if isinstance(zero, bool) or not isinstance(zero, int) or not 0 <= zero < res:
                raise CalibrationError(
                    f"{p}: joint {j.name!r}: zero_ticks {zero!r} not in 0..{res - 1}; {fix}"
                )
            if sign not in (1, -1) or isinstance(sign, bool):
                raise CalibrationError(f"{p}: joint {j.name!r}: sign {sign!r} must be 1 or -1; {fix}")
            joints[j.name] = JointCalibration(int(zero), int(sign))
        g = data.get("gripper") or {}
        try:
            op, cl = float(g["open_rad"]), float(g["closed_rad"])
        except (KeyError, TypeError, ValueError):
            raise CalibrationError(f"{p}: gripper open_rad / closed_rad missing; {fix}") from None
        if not (math.isfinite(op) and math.isfinite(cl)) or op == cl:
            raise CalibrationError(f"{p}: gripper open_rad and closed_rad must differ; {fix}")
        return cls(
            model.name,
            joints,
            op,
            cl,
            port_id=str(data.get("port_id", "")),
            created=str(data.get("created", "")),
        )


def _wrap(a):
    """Wrap angle(s) into [-pi, pi)."""
    return np.mod(np.asarray(a, dtype=np.float64) + math.pi, TWO_PI) - math.pi


class JointMap:
    """Ticks <-> joint space for one arm model and calibration (vectorised over joints)."""

    def __init__(self, model, calibration: Calibration):
        self.model = model
        self.calibration = calibration
        n = model.n
        self.zero = np.array([calibration.joints[j.name].zero_ticks for j in model.joints], dtype=np.float64)
        self.sign = np.array([calibration.joints[j.name].sign for j in model.joints], dtype=np.float64)
        self.resolution = np.array([model.resolution(j) for j in model.joints], dtype=np.float64)
        self.rad_per_tick = TWO_PI / self.resolution
        self.g = n - 1
        self.g_open = float(calibration.gripper_open)
        self.g_closed = float(calibration.gripper_closed)
        self.g_span = self.g_open - self.g_closed

    # ------------------------------------------------------------------ reading
    def raw_angles(self, ticks: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
        """Primary present positions (ticks, (n,)) -> raw joint angles (rad, gripper raw).

        prev: the previous raw angles; the result is continuous with it (no 2*pi jumps).
        Without prev, each angle is wrapped into [-pi, pi) around its calibrated zero.
        """
        a = self.sign * (np.asarray(ticks, dtype=np.float64) - self.zero) * self.rad_per_tick
        if prev is None:
            return _wrap(a)
        return prev + _wrap(a - prev)

    def to_position(self, raw: np.ndarray) -> np.ndarray:
        """Raw angles -> interface positions (gripper normalized, open = 1; not clipped)."""
        pos = np.array(raw, dtype=np.float64, copy=True)
        pos[self.g] = (raw[self.g] - self.g_closed) / self.g_span
        return pos

    def velocity(self, units_rad_s: np.ndarray) -> np.ndarray:
        """Servo velocities (rad/s, servo frame) -> joint velocities (gripper normalized/s)."""
        v = self.sign * np.asarray(units_rad_s, dtype=np.float64)
        v[self.g] = v[self.g] / self.g_span
        return v

    # ------------------------------------------------------------------ writing
    def to_raw(self, position: np.ndarray) -> np.ndarray:
        raw = np.array(position, dtype=np.float64, copy=True)
        raw[self.g] = self.g_closed + position[self.g] * self.g_span
        return raw

    def to_ticks(self, position: np.ndarray) -> np.ndarray:
        """Interface positions -> primary goal ticks (int64), clipped to the servo's
        single-turn range [0, resolution-1] that position mode accepts."""
        raw = self.to_raw(np.asarray(position, dtype=np.float64))
        ticks = np.rint(self.zero + self.sign * raw / self.rad_per_tick)
        return np.clip(ticks, 0, self.resolution - 1).astype(np.int64)

    def from_ticks_exact(self, ticks: np.ndarray, near: np.ndarray) -> np.ndarray:
        """Goal ticks -> interface positions, taking the angle nearest `near` (rad; the
        command the ticks were made from), so the result reports exactly what was sent."""
        raw_near = self.to_raw(np.asarray(near, dtype=np.float64))
        raw = self.raw_angles(ticks, prev=raw_near)
        return self.to_position(raw)


# ---------------------------------------------------------------------- file locations

_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def port_id(port: str, fallback: str = "") -> str:
    """The id a calibration is stored under: the basename of the port path (for
    /dev/serial/by-id/usb-FTDI_..._FT6Z5XXX-if00-port0 that carries the adapter's serial
    number, so the file follows the arm across USB sockets)."""
    base = os.path.basename(port.rstrip("/")) if port else ""
    base = _SAFE.sub("_", base).strip("._")
    return base or _SAFE.sub("_", fallback) or "arm"


def calibration_path(rig, slot, mock: bool = False) -> Path:
    """Where an arm's calibration lives: slot.calibration when set (relative paths are
    taken inside the rig's calibration_dir), else <calibration_dir>/<port id>.json. Mock
    arms use <calibration_dir>/mock/ so a mock run never touches a real arm's file."""
    base = Path(rig.calibration_dir).expanduser()
    if slot.calibration:
        p = Path(slot.calibration).expanduser()
        return p if p.is_absolute() else base / p
    name = port_id(slot.port, fallback=slot.name) + ".json"
    return base / "mock" / name if mock else base / name
