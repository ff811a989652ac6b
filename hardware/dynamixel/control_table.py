"""The DYNAMIXEL X-series control table (Protocol 2.0), the models duet knows, and unit
conversions.

Sources: the ROBOTIS e-manual page of each model (https://emanual.robotis.com/docs/en/dxl/x/<model>/):
control table addresses, model numbers, present-current units, no-load speed, stall current
and stall torque at 12 V (XL330: 5 V). Every X-series servo shares the addresses below; models without current sensing
(XL430, XC430) report Present Load (0.1 % units) at address 126 and have no Current Limit /
Goal Current.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

TICKS_PER_REV_X = 4096  # X series: 12-bit absolute encoder
VELOCITY_UNIT_RPM = 0.229  # Present/Goal Velocity and Profile Velocity unit
LOAD_UNIT_PERCENT = 0.1  # Present Load unit (models without current sensing)
VOLTAGE_UNIT_V = 0.1  # Present Input Voltage unit
RETURN_DELAY_UNIT_US = 2.0  # Return Delay Time unit (default 250 -> 500 us)
PWM_MAX = 885  # Goal PWM / Present PWM full scale (100 %)
TABLE_SIZE = 147  # addresses 0..146 (indirect addresses are not modelled)


class OperatingMode(IntEnum):
    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16


_ALL_MODES = frozenset(OperatingMode)
_NO_CURRENT_MODES = frozenset(
    {OperatingMode.VELOCITY, OperatingMode.POSITION, OperatingMode.EXTENDED_POSITION, OperatingMode.PWM}
)


@dataclass(frozen=True)
class ModelInfo:
    name: str  # e.g. "XM430-W350"
    number: int  # Model Number register value
    resolution: int  # ticks per revolution
    current_unit_ma: float | None  # mA per unit of Present Current; None: no current sensing (reports load)
    no_load_rpm: float = 46.0  # no-load speed at 12 V (rev/min)
    stall_current_a: float = 2.3  # stall current at 12 V (A)
    stall_torque_nm: float = 4.1  # stall torque at 12 V (N*m): with stall_current_a, the torque constant
    current_limit_default: int | None = None  # Current Limit register default (units); None: no register
    modes: frozenset[OperatingMode] = _ALL_MODES  # supported operating modes

    @property
    def has_current(self) -> bool:
        return self.current_unit_ma is not None

    @property
    def torque_per_amp(self) -> float:
        """Output torque per ampere of motor current (N*m/A, from the 12 V stall figures)."""
        return self.stall_torque_nm / self.stall_current_a

    @property
    def velocity_limit_default(self) -> int:
        """Velocity Limit default: the no-load speed in 0.229 rpm units."""
        return int(round(self.no_load_rpm / VELOCITY_UNIT_RPM))


def _m(name, number, unit, rpm, stall, torque, limit, modes=_ALL_MODES) -> ModelInfo:
    return ModelInfo(name, number, TICKS_PER_REV_X, unit, rpm, stall, torque, limit, modes)


MODELS: dict[str, ModelInfo] = {
    m.name: m
    for m in (
        _m("XM430-W350", 1020, 2.69, 46, 2.3, 4.1, 1193),
        _m("XM430-W210", 1030, 2.69, 77, 2.3, 3.0, 1193),
        _m("XM540-W270", 1120, 2.69, 30, 4.4, 10.6, 2047),
        _m("XM540-W150", 1130, 2.69, 53, 4.4, 7.3, 2047),
        _m("XH430-W350", 1000, 2.69, 46, 1.3, 3.4, 648),
        _m("XH430-W210", 1010, 2.69, 77, 1.3, 2.5, 648),
        _m("XH540-W270", 1100, 2.69, 30, 4.5, 10.6, 2047),
        _m("XH540-W150", 1110, 2.69, 53, 4.5, 7.5, 2047),
        _m("XL430-W250", 1060, None, 61, 1.4, 1.5, None, _NO_CURRENT_MODES),
        _m("XC430-W150", 1070, None, 106, 1.4, 1.6, None, _NO_CURRENT_MODES),
        _m("XC430-W240", 1080, None, 70, 1.4, 1.9, None, _NO_CURRENT_MODES),
        _m("XL330-M288", 1200, 1.0, 103, 1.47, 0.52, 1750),
        _m("XL330-M077", 1190, 1.0, 383, 1.47, 0.215, 1750),
    )
}
MODELS_BY_NUMBER: dict[int, ModelInfo] = {m.number: m for m in MODELS.values()}


def model_name_of(number: int) -> str:
    """'XM430-W350 (1020)' for a known number, else 'model number 1234'."""
    m = MODELS_BY_NUMBER.get(number)
    return f"{m.name} ({number})" if m else f"unknown model number {number}"


@dataclass(frozen=True, eq=False)
class Register:
    """One control-table item. Unpacks as (address, size): ``addr, size = Reg.GOAL_POSITION``.
    Compared and hashed by identity: each item exists once, as an attribute of Reg."""

    name: str
    address: int
    size: int  # bytes: 1, 2 or 4
    signed: bool = False
    writable: bool = True
    eeprom: bool = False  # EEPROM items can be written only with torque off

    def __iter__(self):
        return iter((self.address, self.size))

    def encode(self, value: int) -> bytes:
        """Little-endian bytes; ValueError when the value does not fit the register."""
        try:
            return int(value).to_bytes(self.size, "little", signed=self.signed)
        except OverflowError:
            lo, hi = self.value_range
            raise ValueError(f"{self.name}: value {value} does not fit ({lo}..{hi})") from None

    def decode(self, data: bytes | bytearray | list[int]) -> int:
        return int.from_bytes(bytes(data[: self.size]), "little", signed=self.signed)

    @property
    def value_range(self) -> tuple[int, int]:
        bits = 8 * self.size
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.signed else (0, (1 << bits) - 1)


def _ee(name, a, s, signed=False, writable=True):
    return Register(name, a, s, signed, writable, eeprom=True)


def _ram(name, a, s, signed=False, writable=True):
    return Register(name, a, s, signed, writable, eeprom=False)


class Reg:
    """X-series control table (Protocol 2.0). Attributes are Register(address, size, ...)."""

    # EEPROM (written only with torque off)
    MODEL_NUMBER = _ee("MODEL_NUMBER", 0, 2, writable=False)
    MODEL_INFORMATION = _ee("MODEL_INFORMATION", 2, 4, writable=False)
    FIRMWARE_VERSION = _ee("FIRMWARE_VERSION", 6, 1, writable=False)
    ID = _ee("ID", 7, 1)
    BAUD_RATE = _ee("BAUD_RATE", 8, 1)
    RETURN_DELAY_TIME = _ee("RETURN_DELAY_TIME", 9, 1)
    DRIVE_MODE = _ee("DRIVE_MODE", 10, 1)
    OPERATING_MODE = _ee("OPERATING_MODE", 11, 1)
    SECONDARY_ID = _ee("SECONDARY_ID", 12, 1)
    PROTOCOL_TYPE = _ee("PROTOCOL_TYPE", 13, 1)
    HOMING_OFFSET = _ee("HOMING_OFFSET", 20, 4, signed=True)
    MOVING_THRESHOLD = _ee("MOVING_THRESHOLD", 24, 4)
    TEMPERATURE_LIMIT = _ee("TEMPERATURE_LIMIT", 31, 1)
    MAX_VOLTAGE_LIMIT = _ee("MAX_VOLTAGE_LIMIT", 32, 2)
    MIN_VOLTAGE_LIMIT = _ee("MIN_VOLTAGE_LIMIT", 34, 2)
    PWM_LIMIT = _ee("PWM_LIMIT", 36, 2)
    CURRENT_LIMIT = _ee("CURRENT_LIMIT", 38, 2)
    VELOCITY_LIMIT = _ee("VELOCITY_LIMIT", 44, 4)
    MAX_POSITION_LIMIT = _ee("MAX_POSITION_LIMIT", 48, 4)
    MIN_POSITION_LIMIT = _ee("MIN_POSITION_LIMIT", 52, 4)
    SHUTDOWN = _ee("SHUTDOWN", 63, 1)
    # RAM
    TORQUE_ENABLE = _ram("TORQUE_ENABLE", 64, 1)
    LED = _ram("LED", 65, 1)
    STATUS_RETURN_LEVEL = _ram("STATUS_RETURN_LEVEL", 68, 1)
    REGISTERED_INSTRUCTION = _ram("REGISTERED_INSTRUCTION", 69, 1, writable=False)
    HARDWARE_ERROR_STATUS = _ram("HARDWARE_ERROR_STATUS", 70, 1, writable=False)
    VELOCITY_I_GAIN = _ram("VELOCITY_I_GAIN", 76, 2)
    VELOCITY_P_GAIN = _ram("VELOCITY_P_GAIN", 78, 2)
    POSITION_D_GAIN = _ram("POSITION_D_GAIN", 80, 2)
    POSITION_I_GAIN = _ram("POSITION_I_GAIN", 82, 2)
    POSITION_P_GAIN = _ram("POSITION_P_GAIN", 84, 2)
    FEEDFORWARD_2ND_GAIN = _ram("FEEDFORWARD_2ND_GAIN", 88, 2)
    FEEDFORWARD_1ST_GAIN = _ram("FEEDFORWARD_1ST_GAIN", 90, 2)
    BUS_WATCHDOG = _ram("BUS_WATCHDOG", 98, 1)
    GOAL_PWM = _ram("GOAL_PWM", 100, 2, signed=True)
    GOAL_CURRENT = _ram("GOAL_CURRENT", 102, 2, signed=True)
    GOAL_VELOCITY = _ram("GOAL_VELOCITY", 104, 4, signed=True)
    PROFILE_ACCELERATION = _ram("PROFILE_ACCELERATION", 108, 4)
    PROFILE_VELOCITY = _ram("PROFILE_VELOCITY", 112, 4)
    GOAL_POSITION = _ram("GOAL_POSITION", 116, 4, signed=True)
    REALTIME_TICK = _ram("REALTIME_TICK", 120, 2, writable=False)
    MOVING = _ram("MOVING", 122, 1, writable=False)
    MOVING_STATUS = _ram("MOVING_STATUS", 123, 1, writable=False)
    PRESENT_PWM = _ram("PRESENT_PWM", 124, 2, signed=True, writable=False)
    PRESENT_CURRENT = _ram("PRESENT_CURRENT", 126, 2, signed=True, writable=False)  # Present Load on XL/XC430
    PRESENT_VELOCITY = _ram("PRESENT_VELOCITY", 128, 4, signed=True, writable=False)
    PRESENT_POSITION = _ram("PRESENT_POSITION", 132, 4, signed=True, writable=False)
    VELOCITY_TRAJECTORY = _ram("VELOCITY_TRAJECTORY", 136, 4, signed=True, writable=False)
    POSITION_TRAJECTORY = _ram("POSITION_TRAJECTORY", 140, 4, signed=True, writable=False)
    PRESENT_INPUT_VOLTAGE = _ram("PRESENT_INPUT_VOLTAGE", 144, 2, writable=False)
    PRESENT_TEMPERATURE = _ram("PRESENT_TEMPERATURE", 146, 1, writable=False)

    @classmethod
    def all(cls) -> list[Register]:
        return sorted((v for v in vars(cls).values() if isinstance(v, Register)), key=lambda r: r.address)

    @classmethod
    def by_name(cls, name: str) -> Register:
        reg = getattr(cls, name.upper(), None)
        if not isinstance(reg, Register):
            raise KeyError(f"no control-table item {name!r}")
        return reg

    @classmethod
    def at(cls, address: int) -> Register | None:
        for r in cls.all():
            if r.address == address:
                return r
        return None


# Baud Rate register (8) value -> bits per second.
BAUD_CODES: dict[int, int] = {
    0: 9_600,
    1: 57_600,
    2: 115_200,
    3: 1_000_000,
    4: 2_000_000,
    5: 3_000_000,
    6: 4_000_000,
    7: 4_500_000,
}
BAUD_TO_CODE: dict[int, int] = {v: k for k, v in BAUD_CODES.items()}
# Rates both the servos and dynamixel_sdk's PortHandler (standard termios rates) accept.
SUPPORTED_BAUDRATES: tuple[int, ...] = (9_600, 57_600, 115_200, 1_000_000, 2_000_000, 3_000_000, 4_000_000)


# ----------------------------------------------------------------------------- conversions


def ticks_to_radians(ticks, resolution: int = TICKS_PER_REV_X, center: int | None = None):
    """Encoder ticks -> radians about `center` (default resolution // 2, the X-series middle)."""
    c = resolution // 2 if center is None else center
    return (ticks - c) * (2.0 * math.pi / resolution)


def radians_to_ticks(rad, resolution: int = TICKS_PER_REV_X, center: int | None = None):
    """Radians -> encoder ticks (float; round before writing)."""
    c = resolution // 2 if center is None else center
    return rad * (resolution / (2.0 * math.pi)) + c


def velocity_to_rad_s(units):
    """Present/Goal Velocity units (0.229 rpm) -> rad/s."""
    return units * (VELOCITY_UNIT_RPM * 2.0 * math.pi / 60.0)


def rad_s_to_velocity(rad_s):
    """rad/s -> velocity units (0.229 rpm), float."""
    return rad_s / (VELOCITY_UNIT_RPM * 2.0 * math.pi / 60.0)


def velocity_to_ticks_s(units, resolution: int = TICKS_PER_REV_X):
    """Velocity units (0.229 rpm) -> encoder ticks per second."""
    return units * VELOCITY_UNIT_RPM * resolution / 60.0


def current_to_ma(units, model: ModelInfo):
    """Present Current units -> mA; raises ValueError for a model without current sensing."""
    if model.current_unit_ma is None:
        raise ValueError(f"{model.name} has no current sensing (address 126 is Present Load, 0.1 % units)")
    return units * model.current_unit_ma
