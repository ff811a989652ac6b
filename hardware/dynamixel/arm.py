"""DynamixelArm: the Arm interface over one Dynamixel bus (real port or the wire-level fake).

One arm = one MotorBus = one serial port. Per control tick the arm does one sync read
(position + velocity + current of every servo) and, for a follower, one sync write of goal
positions to every primary and shadow servo. Commands pass the safety function against
the last command sent, and `write` returns what was actually sent (after clamping and
quantization to ticks).

Connect sequence (torque off while EEPROM items are configured):
  open the port and check every servo answers with its configured model (MotorBus.connect)
  -> Return Delay Time 0, Drive Mode reverse bits, operating modes, current limits (written
     only where they differ, sparing the EEPROM)
  -> load the calibration (an uncalibrated real arm fails here with the command to run)
  -> measure each shadow's offset from its primary (both on one rigid axis), so every later
     goal is written to the shadow as primary goal + offset and the two never fight
  -> follower: goal := present position on every servo, then torque on (it holds its pose);
     leader: torque stays off (moved by hand).

health() reads temperatures, voltages and error flags at most once per health_period_s
(default 1 s), never in the 50 Hz path; bus counters are always current.

Faults: a read that meets a servo's latched hardware error (overload, overheating, ...)
raises ServoHardwareError and leaves it in `fault` (one line naming the arm, joint, servo ID
and the fix) until a clean read; restore_torque() re-enables a follower whose servos lost
torque (a reboot / brown-out is silent on the wire) holding the present pose, or raises.
disconnect() reaches the safe state despite a latched alert, or raises SafeStateError.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from duet.clock import Clock, MonotonicClock
from duet.errors import DuetError
from duet.hardware.arm_model import ArmModel
from duet.hardware.calibration import Calibration, CalibrationError, JointMap
from duet.hardware.dynamixel.bus import _ids_text
from duet.hardware.dynamixel.control_table import OperatingMode, Reg, velocity_to_rad_s
from duet.hardware.dynamixel.errors import DynamixelError, ServoHardwareError
from duet.hardware.interfaces import ArmFeatures, JointState
from duet.hardware.safety import SafetyLimits, safe_command
from duet.jsonio import jsonable

if TYPE_CHECKING:
    from duet.hardware.mock.fake_dynamixel import FakeDynamixelBus

log = logging.getLogger(__name__)

DisconnectMode = Literal["torque_off", "hold"]
_MODES = {"position": OperatingMode.POSITION, "current_based_position": OperatingMode.CURRENT_BASED_POSITION}
# A shadow farther than this from its primary is not on the same axis (wrong ID, horn
# slipped, or Drive Mode wrong): writing it would make the two servos fight.
MAX_SHADOW_OFFSET_TICKS = 200


class ArmNotConnectedError(DuetError):
    """An operation needs a connected arm."""


class ShadowMismatchError(DuetError):
    """A shadow servo does not sit where its primary is."""


class SafeStateError(DynamixelError):
    """disconnect() could not take the arm to its configured safe state (the port is
    released all the same)."""


class DynamixelArm:
    """hardware.interfaces.Arm on a MotorBus (duet.hardware.dynamixel.bus)."""

    fake_bus: FakeDynamixelBus  # mock arms only (set by hardware.factory): the simulated servos

    def __init__(
        self,
        name: str,
        role: Literal["leader", "follower"],
        model: ArmModel,
        bus: Any,
        *,
        rate_hz: float = 50.0,
        calibration: Calibration | None = None,
        calibration_path: str | Path | None = None,
        calibrate_hint: str = "",
        on_disconnect: DisconnectMode = "torque_off",
        clock: Clock | None = None,
        health_period_s: float = 1.0,
    ):
        """calibration: used as-is (mock arms pass the nominal one). Otherwise
        calibration_path is loaded at connect; calibrate_hint is the command that makes it
        (e.g. "duet calibrate --rig aloha --arm left_follower"), quoted in errors."""
        if role not in ("leader", "follower"):
            raise ValueError(f"role must be leader or follower, got {role!r}")
        if on_disconnect not in ("torque_off", "hold"):
            raise ValueError(f"on_disconnect must be torque_off or hold, got {on_disconnect!r}")
        self.name = name
        self.role = role
        self.model = model
        self.bus = bus
        self.clock = clock or MonotonicClock()
        self.on_disconnect = on_disconnect
        self.health_period_s = float(health_period_s)
        self._calibration = calibration
        self._calibration_path = Path(calibration_path).expanduser() if calibration_path else None
        self._hint = calibrate_hint or f"duet calibrate --rig RIG --arm {name}"
        self.limits = SafetyLimits.from_model(model, rate_hz)
        self.features = ArmFeatures(
            name=name,
            role=role,
            joint_names=model.joint_names,
            lower=model.lower.copy(),
            upper=model.upper.copy(),
            max_step=self.limits.max_step.copy(),
        )
        # Motor order on the bus = model.servos order; where each joint's servos sit in it.
        self._servo_ids = [sid for sid, _, _ in model.servos]
        index = {sid: k for k, sid in enumerate(self._servo_ids)}
        self._primary_idx = np.array([index[j.primary] for j in model.joints], dtype=np.intp)
        self._joint_of_servo = np.array(
            [j.index for j in model.joints for _ in j.ids], dtype=np.intp
        )  # for each bus motor, its joint
        self._current_unit = np.array(
            [_model_info(j.models[0]).current_unit_ma or 0.0 for j in model.joints], dtype=np.float64
        )
        self._shadow_offset = np.zeros(len(self._servo_ids), dtype=np.int64)
        self._map: JointMap | None = None
        self._raw_prev: np.ndarray | None = None
        self._last: np.ndarray | None = None
        self._connected = False
        self._calibration_only = False
        self._torque = False
        self._last_ticks: np.ndarray | None = None  # every servo's position in the last read
        self._health_cache: dict[str, Any] | None = None
        self._health_t = -math.inf
        self._fault = ""  # the last read's latched hardware error, one line ("" when none)

    # ------------------------------------------------------------------ properties
    @property
    def is_connected(self) -> bool:
        return self._connected and bool(self.bus.is_connected)

    @property
    def calibration(self) -> Calibration | None:
        return self._map.calibration if self._map else self._calibration

    @property
    def last_command(self) -> np.ndarray | None:
        """The last command sent (interface units), or None before the first."""
        return None if self._last is None else self._last.copy()

    @property
    def torque_enabled(self) -> bool:
        return self._torque

    @property
    def fault(self) -> str:
        """A latched servo hardware error met by the last read (one line naming the arm,
        joint, servo ID and the fix), "" when the last read was clean."""
        return self._fault

    # ------------------------------------------------------------------ connect
    def connect(self, *, for_calibration: bool = False) -> None:
        """Open the bus, configure the servos, load the calibration, go to the role's
        initial state. for_calibration: torque off everything and skip the calibration
        (only read_ticks() is available), used by `duet calibrate`."""
        if self.is_connected:
            return
        self._fault = ""
        # The calibration first: an uncalibrated arm fails before anything is written to it.
        calibration = None if for_calibration else self._load_calibration()
        self.bus.connect()
        try:
            self._configure()
            self._calibration_only = for_calibration
            self._map = None if calibration is None else JointMap(self.model, calibration)
            ticks = self._present_ticks_all()
            self._measure_shadows(ticks)
            self._connected = True
            if not for_calibration:
                self._raw_prev = self._jmap.raw_angles(ticks[self._primary_idx])
            if self.role == "follower" and not for_calibration:
                self._hold(ticks)
                self.bus.set_torque(True)
                self._torque = True
            else:  # leaders are moved by hand; calibration moves every arm by hand
                self.bus.set_torque(False)
                self._torque = False
                self._last = None
        except BaseException:
            self._connected = False
            try:
                self.bus.disconnect()
            except Exception:  # noqa: BLE001 - the original error matters more
                log.debug("bus disconnect after failed connect raised", exc_info=True)
            raise

    def _configure(self) -> None:
        """Bring the servos' configuration to the arm model's. Reads first and writes only
        what differs (EEPROM wear, bus time); torque goes off only when an EEPROM item must
        change, so a follower left holding its pose does not drop on a plain reconnect."""
        bus = self.bus
        plan: list[tuple[Any, int, int]] = []
        for j in self.model.joints:
            mode = int(_MODES[j.mode])
            for sid, rev, model_name in zip(j.ids, j.reverse, j.models):
                drive = bus.read(Reg.DRIVE_MODE, sid)
                want = {
                    Reg.RETURN_DELAY_TIME: 0,
                    Reg.DRIVE_MODE: (drive | 1) if rev else (drive & ~1),
                    Reg.OPERATING_MODE: mode,
                }
                if j.current_limit_ma > 0:
                    info = _model_info(model_name)
                    units = int(round(j.current_limit_ma / info.current_unit_ma))
                    if info.current_limit_default:
                        units = min(units, int(info.current_limit_default))
                    want[Reg.CURRENT_LIMIT] = max(units, 1)
                for reg, value in want.items():
                    have = drive if reg is Reg.DRIVE_MODE else bus.read(reg, sid)
                    if have != value:
                        plan.append((reg, sid, value))
                if mode == OperatingMode.CURRENT_BASED_POSITION:
                    # RAM: the current this mode may use = the (configured) Current Limit.
                    limit = want.get(Reg.CURRENT_LIMIT) or bus.read(Reg.CURRENT_LIMIT, sid)
                    if bus.read(Reg.GOAL_CURRENT, sid) != limit:
                        plan.append((Reg.GOAL_CURRENT, sid, limit))
        if any(reg.eeprom for reg, _, _ in plan) and any(bus.torque_enabled()):
            if self.role == "follower":
                log.warning(
                    "arm %s: turning torque off to update %s (the arm may sag)",
                    self.name,
                    ", ".join(sorted({reg.name for reg, _, _ in plan if reg.eeprom})),
                )
            bus.set_torque(False)
            self._torque = False
        for reg, sid, value in plan:
            bus.write(reg, sid, value)

    def _load_calibration(self) -> Calibration:
        if self._calibration is not None:
            return self._calibration
        fix = f"run `{self._hint}`"
        if self._calibration_path is None:
            raise CalibrationError(f"arm {self.name!r} is not calibrated; {fix}")
        if not self._calibration_path.is_file():
            raise CalibrationError(
                f"arm {self.name!r} is not calibrated (no {self._calibration_path}); {fix}"
            )
        return Calibration.load(self._calibration_path, self.model, fix=fix)

    def _present_ticks_all(self) -> np.ndarray:
        sample = self.bus.sync_read(("position",))
        return np.asarray(sample.values["position"], dtype=np.int64)

    def _measure_shadows(self, ticks: np.ndarray) -> None:
        """Offset of every shadow from its primary (register frame, Drive Mode applied)."""
        off = np.zeros(len(self._servo_ids), dtype=np.int64)
        for k, sid in enumerate(self._servo_ids):
            j = self.model.joints[self._joint_of_servo[k]]
            if sid == j.primary:
                continue
            prim = ticks[self._primary_idx[j.index]]
            d = int(ticks[k] - prim)
            if abs(d) > MAX_SHADOW_OFFSET_TICKS:
                raise ShadowMismatchError(
                    f"arm {self.name!r} joint {j.name!r}: shadow ID {sid} reads {ticks[k]} ticks but primary ID "
                    f"{j.primary} reads {prim} ({d:+d}); check the shadow's Drive Mode (reverse: in "
                    f"{self.model.source}) and that both horns are seated"
                )
            off[k] = d
        self._shadow_offset = off

    def _hold(self, ticks: np.ndarray) -> None:
        """Goal := present position (primaries; shadows follow their primary)."""
        prim = ticks[self._primary_idx]
        goals = prim[self._joint_of_servo] + self._shadow_offset
        self.bus.sync_write(Reg.GOAL_POSITION, [int(v) for v in goals])
        raw = self._jmap.raw_angles(prim, self._raw_prev)
        self._raw_prev = raw
        self._last = self._jmap.to_position(raw)

    @property
    def _jmap(self) -> JointMap:
        """The calibrated joint map (raises when connected for calibration only)."""
        if self._map is None:
            raise ArmNotConnectedError(f"arm {self.name!r} is connected for calibration only; reconnect")
        return self._map

    # ------------------------------------------------------------------ I/O
    def _require(self, calibrated: bool = True) -> None:
        if not self.is_connected:
            raise ArmNotConnectedError(f"arm {self.name!r} is not connected; call connect() first")
        if calibrated and self._map is None:
            raise ArmNotConnectedError(f"arm {self.name!r} is connected for calibration only; reconnect")

    def read_ticks(self) -> np.ndarray:
        """Present position of every joint's primary servo, raw ticks (int64, (n,))."""
        self._require(calibrated=False)
        return self._present_ticks_all()[self._primary_idx]

    def read(self) -> JointState:
        self._require()
        try:
            sample = self.bus.sync_read(("position", "velocity", "current"))
        except ServoHardwareError as e:
            self._fault = str(e)
            raise
        self._fault = ""
        vals = sample.values
        self._last_ticks = np.asarray(vals["position"], dtype=np.int64)
        p = self._primary_idx
        raw = self._jmap.raw_angles(np.asarray(vals["position"])[p], self._raw_prev)
        self._raw_prev = raw
        vel = self._jmap.velocity(velocity_to_rad_s(np.asarray(vals["velocity"], dtype=np.float64)[p]))
        effort = np.asarray(vals["current"], dtype=np.float64)[p] * self._current_unit
        return JointState(
            stamp=float(sample.stamp),
            names=self.model.joint_names,
            position=self._jmap.to_position(raw),
            velocity=vel,
            effort=effort,
            gripper_raw=float(raw[-1]),
        )

    def write(self, position: np.ndarray) -> np.ndarray:
        """Send goal positions (interface units). Passes safe_command against the last
        command sent; returns what was sent. UnsafeCommandError (NaN, wrong shape) leaves
        the servos on their previous goal."""
        self._require()
        cmd = safe_command(position, self._last, self.limits, names=self.model.joint_names)
        ticks = self._jmap.to_ticks(cmd)
        goals = ticks[self._joint_of_servo] + self._shadow_offset
        self.bus.sync_write(Reg.GOAL_POSITION, [int(v) for v in goals])
        sent = self._jmap.from_ticks_exact(ticks, near=cmd)
        self._last = sent
        return sent.copy()

    def set_torque(self, enabled: bool) -> None:
        """Torque on holds the present pose first (never jumps to a stale goal)."""
        self._require(calibrated=enabled)
        try:
            if enabled:
                self._hold(self._present_ticks_all())
            self.bus.set_torque(bool(enabled))
        except ServoHardwareError as e:
            self._fault = str(e)
            raise
        self._torque = bool(enabled)

    def restore_torque(self) -> str:
        """Followers: re-enable torque on servos that lost it (a reboot or brown-out turns it
        off silently; an error shutdown too), holding the present pose first. One sync read
        when every servo has torque. Returns what was done in one line ("" when nothing
        was needed). Raises ServoHardwareError while a servo's hardware error is latched
        (it refuses torque until rebooted) and BusCommError when the bus fails."""
        self._require()
        if self.role != "follower":
            return ""
        off = [sid for sid, on in zip(self._servo_ids, self.bus.torque_enabled()) if not on]
        if not off:
            return ""
        self.set_torque(True)
        return (
            f"arm {self.name!r}: torque was off on {_ids_text(off)} (a servo reboot or brown-out): "
            f"re-enabled, holding the present pose"
        )

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "arm": self.name,
            "role": self.role,
            "model": self.model.name,
            "connected": self.is_connected,
            "torque": self._torque,
            "calibration": "nominal"
            if (self.calibration and self.calibration.nominal)
            else (str(self._calibration_path) if self._calibration_path else "given"),
            "bus": jsonable(dict(getattr(self.bus, "stats", {}) or {})),
        }
        if not self.is_connected:
            return out
        now = self.clock.now()
        if self._health_cache is None or now - self._health_t >= self.health_period_s:
            try:
                self._health_cache = jsonable(self.bus.read_health())
            except DynamixelError as e:
                self._health_cache = {"error": str(e)}
            self._health_t = now
        out["servos"] = self._health_cache
        out["servos_age_s"] = round(now - self._health_t, 3)
        if self._last_ticks is not None and len(self.model.servos) > self.model.n:
            # How far each shadow is from where its primary puts it (last read): a shadow
            # that slips or fights its primary shows here long before it overheats.
            expected = self._last_ticks[self._primary_idx][self._joint_of_servo] + self._shadow_offset
            out["shadow_error_ticks"] = int(np.max(np.abs(self._last_ticks - expected)))
        return out

    # ------------------------------------------------------------------ disconnect
    def disconnect(self) -> None:
        """Follower: hold the present pose, then torque off (on_disconnect="torque_off")
        or stay holding ("hold"). Leader: torque off. Releases the port. Idempotent."""
        if not self._connected:
            if getattr(self.bus, "is_connected", False):
                self.bus.disconnect()
            return
        failed: DynamixelError | None = None
        try:
            if self.role == "follower" and self._map is not None and self._torque:
                self._hold(self._present_ticks_despite_alerts())
                if self.on_disconnect == "torque_off":
                    self._torque_off_every_servo()
            elif self.role == "leader" or self._calibration_only:
                self._torque_off_every_servo()
        except DynamixelError as e:
            failed = e
        finally:
            self._connected = False
            self._last = None
            self._raw_prev = None
            self.bus.disconnect()
        if failed is not None:
            mode = "torque off" if self.on_disconnect == "torque_off" or self.role == "leader" else "hold"
            raise SafeStateError(
                f"arm {self.name!r}: could not reach its safe state ({mode}) on disconnect "
                f"(the port is released): {failed}"
            )

    def _present_ticks_despite_alerts(self) -> np.ndarray:
        """Every servo's position; a latched hardware alert does not spoil the data (the
        sample that carried it is valid)."""
        try:
            return self._present_ticks_all()
        except ServoHardwareError as e:
            if e.sample is None:
                raise
            return np.asarray(e.sample.values["position"], dtype=np.int64)

    def _torque_off_every_servo(self) -> None:
        """Torque off, one servo at a time so that every servo gets it: a servo with a
        latched hardware error acknowledges the write (then reports its alert)."""
        first: DynamixelError | None = None
        for sid in self._servo_ids:
            try:
                self.bus.set_torque(False, [sid])
            except ServoHardwareError:
                pass  # written; the alert is the error already latched
            except DynamixelError as e:
                first = first or e
        if first is not None:
            raise first
        self._torque = False

    def __enter__(self) -> DynamixelArm:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        return f"DynamixelArm({self.name!r}, {self.role}, {self.model.name}, connected={self.is_connected})"


def _model_info(name: str):
    from duet.hardware.arm_model import canonical_model

    return canonical_model(name)
