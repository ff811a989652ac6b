"""Dynamixel bus errors. Every message is one line naming the arm, joint, servo ID and port
where known, and the fix."""

from __future__ import annotations

from typing import Any

from duet.errors import DuetError

# Hardware Error Status (address 70) bits -> flag names.
HARDWARE_ERROR_BITS: dict[int, str] = {
    0: "input_voltage",
    2: "overheating",
    3: "encoder",
    4: "electrical_shock",
    5: "overload",
}
HARDWARE_ERROR_FIXES: dict[str, str] = {
    "input_voltage": "check the supply voltage (12 V for XM/XL430) and its wiring",
    "overheating": "let the servo cool down and reduce its sustained load",
    "encoder": "the encoder failed: power-cycle, and replace the servo if it persists",
    "electrical_shock": "electrical fault: check the wiring and the supply, then power-cycle",
    "overload": "remove the obstruction or reduce the load (grippers: use current-based position mode)",
}
# Protocol 2.0 status-packet error numbers (low 7 bits of the error byte).
STATUS_ERRORS: dict[int, str] = {
    1: "result fail",
    2: "instruction error",
    3: "CRC error",
    4: "data range error",
    5: "data length error",
    6: "data limit error",
    7: "access error",
}
ALERT_BIT = 0x80


def decode_hardware_error(status_byte: int) -> frozenset[str]:
    """Hardware Error Status register value -> flag names (unknown bits are ignored)."""
    return frozenset(name for bit, name in HARDWARE_ERROR_BITS.items() if status_byte & (1 << bit))


def encode_hardware_error(flags) -> int:
    """Flag names -> Hardware Error Status value (inverse of decode_hardware_error)."""
    value = 0
    bits = {name: bit for bit, name in HARDWARE_ERROR_BITS.items()}
    for f in flags:
        if f not in bits:
            raise ValueError(f"unknown hardware error flag {f!r} (valid: {', '.join(sorted(bits))})")
        value |= 1 << bits[f]
    return value


def describe_status_error(error_byte: int) -> str:
    """The status packet's error byte in words, e.g. 'access error' or 'hardware alert'."""
    parts = []
    if error_byte & 0x7F:
        parts.append(STATUS_ERRORS.get(error_byte & 0x7F, f"error {error_byte & 0x7F}"))
    if error_byte & ALERT_BIT:
        parts.append("hardware alert")
    return " + ".join(parts) or "no error"


def where(arm: str = "", joint: str = "", servo_id: int | None = None, port: str = "") -> str:
    """ "arm 'left_follower' joint 'waist' (ID 1) on /dev/ttyUSB0" with the known parts."""
    parts = []
    if arm:
        parts.append(f"arm {arm!r}")
    if joint:
        parts.append(f"joint {joint!r}")
    if servo_id is not None:
        parts.append(f"(ID {servo_id})" if joint else f"servo ID {servo_id}")
    text = " ".join(parts) or "Dynamixel bus"
    return f"{text} on {port}" if port else text


def one_line(text: str) -> str:
    return " ".join(str(text).split())


class DynamixelError(DuetError):
    """A Dynamixel bus problem the user can fix."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


class PortError(DynamixelError):
    """The serial port is missing, busy, not permitted, or the baud rate is unsupported."""


class ServoNotFoundError(DynamixelError):
    """A configured servo ID does not answer."""

    def __init__(self, message: str, *, ids: tuple[int, ...] = ()):
        super().__init__(message)
        self.ids = tuple(ids)


class ModelMismatchError(DynamixelError):
    """Unknown model name in the config, or the servo reports another model number."""


class BusCommError(DynamixelError):
    """A transaction still failing after its retries. `counters` is a copy of the bus stats."""

    def __init__(
        self,
        message: str,
        *,
        arm: str = "",
        ids: tuple[int, ...] = (),
        counters: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.arm = arm
        self.ids = tuple(ids)
        self.counters = dict(counters or {})


class InstructionCrcError(BusCommError):
    """A transaction whose last attempt was answered with a CRC-error status (error 3): the
    servo received our instruction packet corrupted (noise, a bad connector, a second
    transmitter on the bus). Retried like a lost packet before it is raised."""


class ServoHardwareError(DynamixelError):
    """A servo reports a hardware error (the alert bit of its status packets is set).

    `flags` is a subset of {"input_voltage", "overheating", "encoder", "electrical_shock",
    "overload"}. `others` maps further alerting servo IDs to their flags. `sample` is the
    sync-read sample that carried the alert (or None): the data in it is valid.
    """

    def __init__(
        self,
        arm: str,
        joint: str,
        servo_id: int,
        flags: frozenset[str],
        *,
        port: str = "",
        others: dict[int, frozenset[str]] | None = None,
        sample: Any = None,
    ):
        self.arm = arm
        self.joint = joint
        self.servo_id = servo_id
        self.flags = frozenset(flags)
        self.others = dict(others or {})
        self.sample = sample
        names = ", ".join(sorted(self.flags)) or "unknown"
        fixes = "; ".join(HARDWARE_ERROR_FIXES[f] for f in sorted(self.flags) if f in HARDWARE_ERROR_FIXES)
        extra = ""
        if self.others:
            extra = (
                " (also alerting: "
                + ", ".join(
                    f"ID {i}: {', '.join(sorted(fl)) or 'unknown'}" for i, fl in sorted(self.others.items())
                )
                + ")"
            )
        super().__init__(
            f"{where(arm, joint, servo_id, port)}: hardware error {names}{extra}: the servo may have "
            f"switched its torque off; {fixes or 'check the servo'}; then reboot the servo "
            f"(MotorBus.reboot) or power-cycle the arm"
        )
