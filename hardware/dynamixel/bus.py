"""MotorBus: one Dynamixel Protocol 2.0 bus (one U2D2 / USB-serial adapter), on dynamixel_sdk.

The packet layer is dynamixel_sdk's (PortHandler, Protocol 2.0 packet handler, GroupSyncRead,
GroupSyncWrite) with its byte stuffing replaced (StuffedPacketHandler: the SDK 4.1.0 sends
packets that need stuffing unstuffed); this class adds what a 50 Hz control loop needs around it:

- bounded retries per transaction (RetryPolicy) after a lost or corrupt status packet or a
  CRC-error status (the servo got our instruction corrupted), counted in `stats`, and one-line
  errors naming the arm, joint, servo ID and port (hardware/dynamixel/errors.py);
- one GroupSyncRead over the contiguous span of the requested fields (present current,
  velocity, position: addresses 126..135) for all motors per tick, decoded to signed int64
  arrays with the capture time taken right after the status packets arrived;
- the hardware-alert bit of every status packet checked: the servo's Hardware Error Status
  is read and raised as ServoHardwareError (overload, overheating, ...), never swallowed;
- port problems (missing, busy, no permission, unsupported baud rate) as PortError, and a
  connect-time ping of every servo (ServoNotFoundError / ModelMismatchError).

Thread-safe: transactions hold a lock, so a health read from another thread cannot
interleave with the control loop's packets.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from dynamixel_sdk import (
    COMM_RX_CORRUPT,
    COMM_RX_TIMEOUT,
    COMM_SUCCESS,
    GroupSyncRead,
    GroupSyncWrite,
    PortHandler,
)
from dynamixel_sdk.protocol2_packet_handler import (
    PKT_ID,
    PKT_INSTRUCTION,
    PKT_LENGTH_H,
    PKT_LENGTH_L,
    TXPACKET_MAX_LEN,
    Protocol2PacketHandler,
)
from dynamixel_sdk.robotis_def import COMM_PORT_BUSY, COMM_TX_ERROR, COMM_TX_FAIL

from duet.clock import Clock, MonotonicClock
from duet.errors import ConfigError

from .control_table import MODELS, SUPPORTED_BAUDRATES, ModelInfo, OperatingMode, Reg, Register, model_name_of
from .errors import (
    ALERT_BIT,
    BusCommError,
    DynamixelError,
    InstructionCrcError,
    ModelMismatchError,
    PortError,
    ServoHardwareError,
    ServoNotFoundError,
    decode_hardware_error,
    describe_status_error,
    one_line,
    where,
)
from .protocol import StatusError, encode_packet, unstuff

log = logging.getLogger(__name__)

# sync_read field name -> register
FIELDS: dict[str, Register] = {
    "current": Reg.PRESENT_CURRENT,
    "velocity": Reg.PRESENT_VELOCITY,
    "position": Reg.PRESENT_POSITION,
}
_SIGNED_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<i1"), 2: np.dtype("<i2"), 4: np.dtype("<i4")}
_UNSIGNED_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4")}
# Attempt failure code of a CRC-error status (beside the SDK's COMM_* codes, which are <= 0).
_STATUS_CRC = 1003


class StuffedPacketHandler(Protocol2PacketHandler):
    """dynamixel_sdk's Protocol 2.0 packet handler with byte stuffing done per the e-manual.

    dynamixel_sdk 4.1.0 gets stuffing wrong both ways:
    - txPacket calls addStuffing(txpacket) and drops its return value; when stuffing lengthens
      the packet, addStuffing builds a new list, so the packet goes out unstuffed with the
      unstuffed LEN and CRC (any write whose parameters hold FF FF FD: the servo sees a header
      inside the packet and drops or misreads it);
    - removeStuffing compacts the packet in place but tests later bytes against the already
      shifted ones, so a status packet holding FF FF FD .. FF FD FD loses a real FD (e.g.
      params FF FF FD FF FD FD read back as FF FF FD FF FD + one CRC byte), with COMM_SUCCESS.
    Both are replaced with protocol.encode_packet / unstuff; everything else, reception
    included, is the SDK's. Every transaction of MotorBus goes through here.
    """

    def txPacket(self, port, txpacket):
        if port.is_using:
            return COMM_PORT_BUSY
        port.is_using = True
        length = txpacket[PKT_LENGTH_L] | (txpacket[PKT_LENGTH_H] << 8)  # INST .. CRC, unstuffed
        packet = encode_packet(
            txpacket[PKT_ID], bytes(txpacket[PKT_INSTRUCTION : PKT_INSTRUCTION + length - 2])
        )
        if len(packet) > TXPACKET_MAX_LEN:
            port.is_using = False
            return COMM_TX_ERROR
        port.clearPort()
        if port.writePort(packet) != len(packet):
            port.is_using = False
            return COMM_TX_FAIL
        return COMM_SUCCESS

    def removeStuffing(self, packet):
        length = packet[PKT_LENGTH_L] | (packet[PKT_LENGTH_H] << 8)  # INST .. CRC, as received
        end = PKT_INSTRUCTION + length
        body = unstuff(bytes(packet[PKT_INSTRUCTION : end - 2]))
        out = list(packet[:PKT_INSTRUCTION]) + list(body) + list(packet[end - 2 :])
        length = len(body) + 2
        out[PKT_LENGTH_L], out[PKT_LENGTH_H] = length & 0xFF, length >> 8
        return out


@dataclass(frozen=True)
class Motor:
    id: int  # servo ID on the bus (0..252)
    model: str  # a key of control_table.MODELS, e.g. "XM430-W350"
    name: str  # joint or servo name used in messages, e.g. "shoulder"


@dataclass
class RetryPolicy:
    """Bounded retries. A transaction is tried `attempts` times in total, never more."""

    attempts: int = 3  # total tries per transaction (1 = no retry)
    timeout_ms: float | None = (
        None  # sync-read status timeout per attempt; None: bytes + 2 x latency timer + 2 ms
    )
    backoff_s: float = 0.0  # pause before a retry (lets late status packets of the failed try drain)

    def __post_init__(self):
        if not 1 <= int(self.attempts) <= 20:
            raise ConfigError(f"RetryPolicy.attempts must be within 1..20, got {self.attempts}")
        if self.timeout_ms is not None and not self.timeout_ms > 0:
            raise ConfigError(f"RetryPolicy.timeout_ms must be > 0 or None, got {self.timeout_ms}")
        if self.backoff_s < 0:
            raise ConfigError(f"RetryPolicy.backoff_s must be >= 0, got {self.backoff_s}")


@dataclass
class BusSample:
    stamp: float  # capture time: clock.now() right after the status packets arrived
    values: dict[str, np.ndarray]  # field -> (n_motors,) int64 in motor order, signed where the register is


class _AttemptFailed(Exception):
    def __init__(self, code: int, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def latency_timer_ms(port: str) -> int | None:
    """The FTDI latency timer of a USB-serial port (Linux sysfs), None if not an FTDI port."""
    try:
        dev = os.path.basename(os.path.realpath(port))
        with open(f"/sys/bus/usb-serial/devices/{dev}/latency_timer") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


class MotorBus:
    """One Dynamixel bus. See the module docstring.

    port: serial device (prefer /dev/serial/by-id/...). motors: the servos, in the order of
    every array this bus returns. label: the arm name for messages. port_handler: an injected
    dynamixel_sdk.PortHandler (the in-process fake's); default PortHandler(port).
    """

    def __init__(
        self,
        port: str,
        baudrate: int,
        motors: list[Motor],
        *,
        label: str = "",
        retry: RetryPolicy | None = None,
        port_handler: PortHandler | None = None,
        clock: Clock | None = None,
    ):
        self.port = port
        self.baudrate = int(baudrate)
        self.label = label
        self.retry = retry or RetryPolicy()
        self.motors: list[Motor] = list(motors)
        self._clock: Clock = clock or MonotonicClock()
        self._injected = port_handler
        if not self.motors:
            raise ConfigError(f"{where(label, port=port)}: no motors configured")
        seen: dict[int, str] = {}
        for m in self.motors:
            if not 0 <= m.id <= 252:
                raise ConfigError(f"{where(label, m.name, port=port)}: servo ID {m.id} outside 0..252")
            if m.id in seen:
                raise ConfigError(
                    f"{where(label, port=port)}: servo ID {m.id} used by both {seen[m.id]!r} and {m.name!r}"
                )
            seen[m.id] = m.name
            if m.model not in MODELS:
                raise ModelMismatchError(
                    f"{where(label, m.name, m.id, port)}: unknown servo model {m.model!r} in the config "
                    f"(known: {', '.join(sorted(MODELS))})"
                )
        self.ids: list[int] = [m.id for m in self.motors]
        self._by_id: dict[int, Motor] = {m.id: m for m in self.motors}
        self._index: dict[int, int] = {m.id: k for k, m in enumerate(self.motors)}
        self.models: list[ModelInfo] = [MODELS[m.model] for m in self.motors]
        self._ph: PortHandler | None = None
        self._pkt = StuffedPacketHandler()
        self._lock_fd: int | None = None
        self._lock = threading.RLock()
        self._reads: dict[tuple[int, int, tuple[int, ...]], GroupSyncRead] = {}
        self._writes: dict[tuple[int, int], GroupSyncWrite] = {}
        self.latency_timer_ms: int | None = None
        self.alerts: dict[int, frozenset[str]] = {}  # hardware errors seen at connect
        self.stats: dict[str, Any] = {
            "transactions": 0,  # logical transactions (a retried one counts once)
            "retries": 0,  # extra attempts
            "failures": 0,  # transactions that failed after every attempt
            "timeouts": 0,  # attempts with a missing status packet
            "crc_errors": 0,  # attempts with a corrupt packet: status CRC mismatch, or a CRC-error status
            "instruction_crc_errors": 0,  # of those: a servo reported our instruction corrupted (error 3)
            "hardware_errors": 0,  # hardware alerts raised
            "last_error": "",
        }

    # ------------------------------------------------------------------ connection

    @property
    def is_connected(self) -> bool:
        return self._ph is not None

    def motor(self, motor_id: int) -> Motor:
        return self._by_id[motor_id]

    def model_of(self, motor_id: int) -> ModelInfo:
        return MODELS[self._by_id[motor_id].model]

    def connect(self, *, reboot_on_hardware_error: bool = False) -> None:
        """Open the port, set the baud rate, ping every motor and check its model.

        Raises PortError, ServoNotFoundError, ModelMismatchError. A servo that reports a
        hardware error at connect raises ServoHardwareError, unless reboot_on_hardware_error
        (then it is rebooted, which clears the error and leaves its torque off).
        """
        with self._lock:
            if self._ph is not None:
                return
            where_port = where(self.label, port=self.port)
            if self.baudrate not in SUPPORTED_BAUDRATES:
                raise PortError(
                    f"{where_port}: baud rate {self.baudrate} is not supported; use one of "
                    f"{', '.join(str(b) for b in SUPPORTED_BAUDRATES)} (the servos' Baud Rate register must match)"
                )
            ph = self._injected if self._injected is not None else PortHandler(self.port)
            ph.baudrate = self.baudrate
            self._open(ph)
            self._ph = ph
            try:
                self._lock_port(ph)
                if self._injected is None:
                    self._check_latency_timer()
                self._ping_all()
            except BaseException:
                self._close_port()
                raise
            if self.alerts:
                bad = sorted(self.alerts)
                if reboot_on_hardware_error:
                    for i in bad:
                        log.warning(
                            "%s: hardware error %s at connect: rebooting it",
                            where(self.label, self._by_id[i].name, i, self.port),
                            sorted(self.alerts[i]),
                        )
                        self.reboot(i)
                    self.alerts.clear()
                else:
                    first = bad[0]
                    err = self._hardware_error(
                        first, self.alerts[first], {i: self.alerts[i] for i in bad[1:]}, None
                    )
                    self._close_port()
                    raise err

    def _open(self, ph: PortHandler) -> None:
        wp = where(self.label, port=self.port)
        try:
            ok = ph.openPort()
        except Exception as e:  # serial.SerialException is an OSError; termios.error is not
            code = getattr(e, "errno", None)
            text = one_line(str(e))
            if code == errno.ENOENT or "No such file" in text:
                raise PortError(
                    f"{wp}: serial port not found: check the USB cable and the path (ls /dev/serial/by-id/)"
                ) from None
            if code == errno.EBUSY or "busy" in text.lower():
                raise PortError(
                    f"{wp}: serial port is busy (another duet process or Dynamixel Wizard "
                    f"has it open): close that program, then retry"
                ) from None
            if code == errno.EACCES or "Permission denied" in text:
                raise PortError(
                    f"{wp}: permission denied: add your user to the dialout group "
                    f"(sudo usermod -aG dialout $USER) and log in again"
                ) from None
            raise PortError(
                f"{wp}: could not open the serial port ({text}): check the path "
                f"is a USB-serial adapter (/dev/serial/by-id/...)"
            ) from None
        if not ok:
            raise PortError(
                f"{wp}: could not open the port at {self.baudrate} baud: use a standard rate "
                f"({', '.join(str(b) for b in SUPPORTED_BAUDRATES)})"
            )

    def _lock_port(self, ph: PortHandler) -> None:
        """Exclusive advisory lock on the serial device: a second bus on the same port fails
        with PortError instead of interleaving packets with the first."""
        ser = getattr(ph, "ser", None)
        if ser is None:
            return
        fd = ser.fileno()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise PortError(
                f"{where(self.label, port=self.port)}: serial port is busy (another process or "
                f"bus holds it): close that program, then retry"
            ) from None
        self._lock_fd = fd

    def _check_latency_timer(self) -> None:
        self.latency_timer_ms = latency_timer_ms(self.port)
        if self.latency_timer_ms is not None and self.latency_timer_ms > 1:
            dev = os.path.basename(os.path.realpath(self.port))
            log.warning(
                "%s: the USB-serial latency timer is %d ms (each read waits for it); set it to 1: "
                "echo 1 | sudo tee /sys/bus/usb-serial/devices/%s/latency_timer",
                where(self.label, port=self.port),
                self.latency_timer_ms,
                dev,
            )

    def _ping_all(self) -> None:
        missing: list[int] = []
        mismatched: list[str] = []
        self.alerts = {}
        for m in self.motors:
            try:
                number, err = self._ping(m.id)
            except BusCommError:
                missing.append(m.id)
                continue
            expected = MODELS[m.model].number
            if number != expected:
                mismatched.append(
                    f"{where(self.label, m.name, m.id, self.port)}: the config says {m.model} ({expected}) "
                    f"but the servo reports {model_name_of(number)}"
                )
            if err & ALERT_BIT:
                self.alerts[m.id] = decode_hardware_error(self.read(Reg.HARDWARE_ERROR_STATUS, m.id))
        if missing:
            if len(missing) == len(self.motors):
                msg = (
                    f"{where(self.label, port=self.port)}: no servo answered a ping ({_ids_text(missing)} at "
                    f"{self.baudrate} baud): check the arm's power supply, that this is the arm's port, and "
                    f"that the servos' baud rate is {self.baudrate}"
                )
            else:
                names = ", ".join(f"{i} ({self._by_id[i].name})" for i in missing)
                msg = (
                    f"{where(self.label, port=self.port)}: servo ID {names} did not answer a ping: check its "
                    f"power and cable, its ID (Dynamixel Wizard), and that its baud rate is {self.baudrate}"
                )
            raise ServoNotFoundError(msg, ids=tuple(missing))
        if mismatched:
            raise ModelMismatchError(mismatched[0] + ": fix the arm config's model/ID or the servo's ID")

    def disconnect(self) -> None:
        """Close the port (torque is left as is; the arm decides its safe state). Idempotent."""
        with self._lock:
            self._close_port()

    def _close_port(self) -> None:
        ph, self._ph = self._ph, None
        self._reads.clear()
        self._writes.clear()
        if ph is None:
            return
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            except OSError:
                pass
            self._lock_fd = None
        try:
            if ph.is_open:
                ph.closePort()
        except Exception as e:  # a vanished USB device: nothing left to close
            log.debug("closing %s: %s", self.port, e)

    def _port(self) -> PortHandler:
        if self._ph is None:
            raise DynamixelError(
                f"{where(self.label, port=self.port)}: bus is not connected: call connect() first"
            )
        return self._ph

    # ------------------------------------------------------------------ retry core

    def _transact(self, what: str, ids: Sequence[int], attempt: Callable[[], Any]) -> Any:
        st = self.stats
        st["transactions"] += 1
        failure: _AttemptFailed | None = None
        for k in range(self.retry.attempts):
            if k:
                st["retries"] += 1
                if self.retry.backoff_s:
                    self._clock.sleep_until(self._clock.now() + self.retry.backoff_s)
            try:
                return attempt()
            except _AttemptFailed as f:
                failure = f
                if f.code == COMM_RX_TIMEOUT:
                    st["timeouts"] += 1
                elif f.code == COMM_RX_CORRUPT:
                    st["crc_errors"] += 1
                elif f.code == _STATUS_CRC:
                    st["crc_errors"] += 1
                    st["instruction_crc_errors"] += 1
        st["failures"] += 1
        assert failure is not None
        idtext = _ids_text(ids)
        cls: type[BusCommError]
        if failure.code == _STATUS_CRC:
            cls, fix = (
                InstructionCrcError,
                (
                    "noise corrupts the instructions: check the bus cable and its connectors, "
                    "and that no other program or device transmits on this bus"
                ),
            )
        else:
            cls, fix = BusCommError, "check the bus cable and the servos' power"
        msg = (
            f"{where(self.label, port=self.port)}: {what} with {idtext} failed {self.retry.attempts} times "
            f"(last: {failure.detail}): {fix} "
            f"[transactions {st['transactions']}, retries {st['retries']}, failures {st['failures']}, "
            f"timeouts {st['timeouts']}, crc errors {st['crc_errors']}]"
        )
        st["last_error"] = msg
        raise cls(msg, arm=self.label, ids=tuple(ids), counters=st)

    def _who(self, motor_id: int | None) -> str:
        return (
            f"ID {motor_id} ({self._by_id[motor_id].name})" if motor_id in self._by_id else f"ID {motor_id}"
        )

    def _check_crc_status(self, err: int, motor_id: int) -> None:
        """A status packet with error 3: the servo got the instruction corrupted -> retry."""
        if err & 0x7F == StatusError.CRC:
            raise _AttemptFailed(
                _STATUS_CRC, f"{self._who(motor_id)} reported a CRC error in the instruction packet"
            )

    def _comm_fail(self, code: int, motor_id: int | None) -> _AttemptFailed:
        who = self._who(motor_id)
        if code == COMM_RX_TIMEOUT:
            detail = f"no status packet from {who}"
        elif code == COMM_RX_CORRUPT:
            detail = f"corrupt status packet from {who}"
        else:
            detail = f"{self._pkt.getTxRxResult(code).replace('[TxRxResult] ', '')} ({who})"
        return _AttemptFailed(code, detail)

    # ------------------------------------------------------------------ sync read / write

    def sync_read(self, fields: tuple[str, ...] = ("position",)) -> BusSample:
        """One GroupSyncRead of `fields` (from "position", "velocity", "current") for every
        motor, retried per the policy. Raises BusCommError after the last attempt, and
        ServoHardwareError when a status packet carries the hardware-alert bit."""
        regs = []
        for f in fields:
            if f not in FIELDS:
                raise ValueError(f"sync_read field {f!r} unknown (valid: {', '.join(FIELDS)})")
            regs.append(FIELDS[f])
        start = min(r.address for r in regs)
        length = max(r.address + r.size for r in regs) - start
        with self._lock:
            rows, alerts, stamp = self._group_read(
                start, length, self.ids, f"sync read of {'+'.join(fields)}"
            )
            block = np.frombuffer(rows, dtype=np.uint8).reshape(len(self.ids), length)
            values = {}
            for f, reg in zip(fields, regs):
                off = reg.address - start
                dt = (_SIGNED_DTYPES if reg.signed else _UNSIGNED_DTYPES)[reg.size]
                values[f] = block[:, off : off + reg.size].copy().view(dt).reshape(-1).astype(np.int64)
            sample = BusSample(stamp, values)
            if alerts:
                self._raise_alerts(alerts, sample)
            return sample

    def _group_read(
        self, start: int, length: int, ids: Sequence[int], what: str
    ) -> tuple[bytes, list[int], float]:
        """One GroupSyncRead attempt loop -> (rows concatenated in `ids` order, alerting IDs, stamp)."""
        ph = self._port()
        key = (start, length, tuple(ids))
        group = self._reads.get(key)
        if group is None:
            group = GroupSyncRead(ph, self._pkt, start, length)
            for i in ids:
                group.addParam(i)
            self._reads[key] = group
        pkt = self._pkt
        timeout_ms = self.retry.timeout_ms
        if timeout_ms is None and self.latency_timer_ms is not None:
            # The SDK's own formula (bytes on the wire + 2 latency-timer periods + 2 ms), with the
            # adapter's real latency timer instead of its hard-coded 16 ms.
            timeout_ms = ph.tx_time_per_byte * (11 + length) * len(ids) + 2.0 * self.latency_timer_ms + 2.0

        def attempt() -> tuple[bytes, list[int], float]:
            code = group.txPacket()
            if code != COMM_SUCCESS:
                raise self._comm_fail(code, None)
            if timeout_ms is not None:
                ph.setPacketTimeoutMillis(timeout_ms)
            chunks = []
            alerts = []
            for i in ids:
                data, code, err = pkt.readRx(ph, i, length)
                if code != COMM_SUCCESS:
                    raise self._comm_fail(code, i)
                self._check_crc_status(err, i)
                if len(data) != length:
                    raise _AttemptFailed(COMM_RX_CORRUPT, f"short status packet from ID {i}")
                if err & 0x7F:
                    raise self._instruction_error(what, i, err)
                if err & ALERT_BIT:
                    alerts.append(i)
                chunks.append(bytes(data))
            return b"".join(chunks), alerts, self._clock.now()

        return self._transact(what, ids, attempt)

    def sync_write(
        self, reg: Register | str, values: Sequence[int] | np.ndarray, ids: Sequence[int] | None = None
    ) -> None:
        """One GroupSyncWrite of `values` (in `ids` order, default every motor) to `reg`.
        Sync writes get no status packets: a servo that missed one is not detected."""
        reg = _reg(reg)
        ids = self.ids if ids is None else list(ids)
        if len(values) != len(ids):
            raise ValueError(f"sync_write {reg.name}: {len(values)} values for {len(ids)} servos")
        with self._lock:
            ph = self._port()
            key = (reg.address, reg.size)
            group = self._writes.get(key)
            if group is None:
                group = GroupSyncWrite(ph, self._pkt, reg.address, reg.size)
                self._writes[key] = group
            group.clearParam()
            for i, v in zip(ids, values):
                group.addParam(int(i), list(reg.encode(int(v))))

            def attempt() -> None:
                code = group.txPacket()
                if code != COMM_SUCCESS:
                    raise self._comm_fail(code, None)

            self._transact(f"sync write of {reg.name}", ids, attempt)

    # ------------------------------------------------------------------ single-servo access

    def read(self, reg: Register | str, motor_id: int) -> int:
        """Read one register of one servo (retried). The hardware-alert bit is recorded in
        `alerts` but not raised here (read() is how the error status itself is read)."""
        reg = _reg(reg)
        with self._lock:
            ph = self._port()

            def attempt() -> int:
                data, code, err = self._pkt.readTxRx(ph, motor_id, reg.address, reg.size)
                if code != COMM_SUCCESS:
                    raise self._comm_fail(code, motor_id)
                self._check_crc_status(err, motor_id)
                if err & 0x7F:
                    raise self._instruction_error(f"read of {reg.name}", motor_id, err)
                if len(data) < reg.size:
                    raise _AttemptFailed(COMM_RX_CORRUPT, f"short status packet from ID {motor_id}")
                return reg.decode(data)

            return self._transact(f"read of {reg.name}", [motor_id], attempt)

    def write(self, reg: Register | str, motor_id: int, value: int) -> None:
        """Write one register of one servo (acknowledged, retried). Raises DynamixelError
        when the servo refuses (e.g. EEPROM with torque on), ServoHardwareError on an alert."""
        reg = _reg(reg)
        payload = list(reg.encode(int(value)))
        with self._lock:
            ph = self._port()

            def attempt() -> int:
                code, err = self._pkt.writeTxRx(ph, motor_id, reg.address, reg.size, payload)
                if code != COMM_SUCCESS:
                    raise self._comm_fail(code, motor_id)
                self._check_crc_status(err, motor_id)
                return err

            err = self._transact(f"write of {reg.name}", [motor_id], attempt)
            if err & ALERT_BIT:
                self._raise_alerts([motor_id], None)
            if err & 0x7F:
                raise self._instruction_error(f"write of {reg.name}={value}", motor_id, err)

    def _instruction_error(self, what: str, motor_id: int, err: int) -> DynamixelError:
        m = self._by_id.get(motor_id)
        hint = {
            7: "EEPROM items (ID, baud, modes, limits, offsets) can be written only with torque off: "
            "set_torque(False) first",
            6: "the value exceeds the servo's limit registers (Min/Max Position Limit, Current/Velocity/PWM Limit)",
            4: "the value is out of the item's range",
            1: "the servo could not execute it (a latched hardware error blocks torque on until a reboot)",
        }.get(err & 0x7F, "check the control-table address and length")
        return DynamixelError(
            f"{where(self.label, m.name if m else '', motor_id, self.port)}: {what} refused by the servo "
            f"({describe_status_error(err)}): {hint}"
        )

    # ------------------------------------------------------------------ hardware errors

    def _hardware_error(
        self,
        motor_id: int,
        flags: frozenset[str],
        others: dict[int, frozenset[str]],
        sample: BusSample | None,
    ) -> ServoHardwareError:
        m = self._by_id.get(motor_id)
        return ServoHardwareError(
            self.label, m.name if m else "", motor_id, flags, port=self.port, others=others, sample=sample
        )

    def _raise_alerts(self, ids: Sequence[int], sample: BusSample | None) -> None:
        found: dict[int, frozenset[str]] = {}
        for i in ids:
            flags = decode_hardware_error(self.read(Reg.HARDWARE_ERROR_STATUS, i))
            if flags:
                found[i] = flags
        if not found:
            return
        self.stats["hardware_errors"] += 1
        first = sorted(found)[0]
        err = self._hardware_error(
            first, found[first], {i: f for i, f in found.items() if i != first}, sample
        )
        self.stats["last_error"] = str(err)
        raise err

    # ------------------------------------------------------------------ configuration helpers

    def set_torque(self, enabled: bool, ids: Sequence[int] | None = None) -> None:
        """Torque on/off, one acknowledged write per servo."""
        for i in self.ids if ids is None else ids:
            self.write(Reg.TORQUE_ENABLE, i, int(bool(enabled)))

    def torque_enabled(self, ids: Sequence[int] | None = None) -> list[bool]:
        """Torque Enable of each servo (one sync read): a servo that rebooted (brown-out,
        reboot) comes back with torque off, which this detects."""
        return [bool(v) for v in self.sync_read_register(Reg.TORQUE_ENABLE, ids)]

    def sync_read_register(self, reg: Register | str, ids: Sequence[int] | None = None) -> np.ndarray:
        """One register of several servos (default all) in one sync read -> int64 array.
        Hardware alerts are not raised here (see sync_read)."""
        reg = _reg(reg)
        ids = self.ids if ids is None else [int(i) for i in ids]
        with self._lock:
            rows, _, _ = self._group_read(reg.address, reg.size, ids, f"sync read of {reg.name}")
        dt = (_SIGNED_DTYPES if reg.signed else _UNSIGNED_DTYPES)[reg.size]
        return np.frombuffer(rows, dtype=dt).astype(np.int64)

    def set_operating_mode(self, mode: OperatingMode | int, ids: Sequence[int] | None = None) -> None:
        """Set the operating mode where it differs; turns torque off first if needed and
        restores it afterwards (Operating Mode is an EEPROM item)."""
        mode = OperatingMode(mode)
        ids = self.ids if ids is None else list(ids)
        for i in ids:
            info = self.model_of(i)
            if mode not in info.modes:
                raise ModelMismatchError(
                    f"{where(self.label, self._by_id[i].name, i, self.port)}: {info.name} does not support "
                    f"operating mode {mode.name} (supports {', '.join(x.name for x in sorted(info.modes))}): "
                    f"fix the arm config"
                )
        with self._lock:
            for i in ids:
                if self.read(Reg.OPERATING_MODE, i) == mode:
                    continue
                torque = self.read(Reg.TORQUE_ENABLE, i)
                if torque:
                    self.write(Reg.TORQUE_ENABLE, i, 0)
                try:
                    self.write(Reg.OPERATING_MODE, i, int(mode))
                finally:
                    if torque:
                        self.write(Reg.TORQUE_ENABLE, i, 1)

    def reboot(self, motor_id: int, boot_timeout_s: float = 2.0) -> None:
        """REBOOT one servo (clears a latched hardware error; torque comes back off) and
        wait until it answers a ping again."""
        with self._lock:
            ph = self._port()

            def attempt() -> None:
                code, err = self._pkt.reboot(ph, motor_id)
                if code != COMM_SUCCESS:
                    raise self._comm_fail(code, motor_id)
                self._check_crc_status(err, motor_id)

            self._transact("reboot", [motor_id], attempt)
            deadline = self._clock.now() + boot_timeout_s
            while True:
                _, code, _ = self._pkt.ping(ph, motor_id)
                if code == COMM_SUCCESS:
                    break
                if self._clock.now() >= deadline:
                    m = self._by_id.get(motor_id)
                    raise ServoNotFoundError(
                        f"{where(self.label, m.name if m else '', motor_id, self.port)}: did not answer within "
                        f"{boot_timeout_s:g} s after a reboot: check its power, then power-cycle the arm",
                        ids=(motor_id,),
                    )
                self._clock.sleep_until(self._clock.now() + 0.05)
            self.alerts.pop(motor_id, None)

    def ping(self, motor_id: int) -> int:
        """Model number of a servo (retried)."""
        with self._lock:
            return self._ping(motor_id)[0]

    def _ping(self, motor_id: int) -> tuple[int, int]:
        ph = self._port()

        def attempt() -> tuple[int, int]:
            number, code, err = self._pkt.ping(ph, motor_id)
            if code != COMM_SUCCESS:
                raise self._comm_fail(code, motor_id)
            self._check_crc_status(err, motor_id)
            return number, err

        return self._transact("ping", [motor_id], attempt)

    def read_health(self) -> dict[int, dict[str, Any]]:
        """Per servo: name, temperature_c, input_voltage_v, hardware_errors (sorted flag
        names), torque. Two sync reads; alerts are reported here, not raised."""
        with self._lock:
            err_rows, _, _ = self._group_read(Reg.TORQUE_ENABLE.address, 7, self.ids, "health read")
            env_rows, _, _ = self._group_read(Reg.PRESENT_INPUT_VOLTAGE.address, 3, self.ids, "health read")
        out: dict[int, dict[str, Any]] = {}
        for k, i in enumerate(self.ids):
            e = err_rows[7 * k : 7 * k + 7]
            v = env_rows[3 * k : 3 * k + 3]
            out[i] = {
                "name": self._by_id[i].name,
                "temperature_c": int(v[2]),
                "input_voltage_v": round((v[0] | (v[1] << 8)) * 0.1, 1),
                "hardware_errors": sorted(decode_hardware_error(e[6])),
                "torque": bool(e[0]),
            }
        return out


def _reg(reg: Register | str) -> Register:
    return Reg.by_name(reg) if isinstance(reg, str) else reg


def _ids_text(ids: Sequence[int]) -> str:
    ids = list(ids)
    if len(ids) == 1:
        return f"servo ID {ids[0]}"
    if ids and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"servo IDs {ids[0]}-{ids[-1]}"
    return "servo IDs " + ",".join(str(i) for i in ids)
