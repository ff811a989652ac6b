"""A wire-level fake Dynamixel Protocol 2.0 bus: the mock backend of the real driver.

The real driver (hardware/dynamixel/bus.py, on dynamixel_sdk) talks to it unmodified, either
through an in-process dynamixel_sdk.PortHandler subclass (``port_handler()``: no OS port,
replies available at once, no busy-wait) or through a pseudo-terminal (``serve_pty()``: a
server thread answers on the master side; the UNMODIFIED dynamixel_sdk.PortHandler opens the
slave path).

Each FakeServo keeps an X-series control table (EEPROM + RAM) with the access rules of the
real servo (EEPROM writes refused while torque is on, read-only items, limit checks) and
simulates its motion lazily from the injected clock whenever a packet addresses it (no
physics thread): in the position modes the shaft tracks Goal Position at Profile Velocity
(or the model's no-load speed), velocity / current / PWM modes integrate their goal, present
velocity and a simple current model follow, the current limit is respected in current-based
position mode, and a gripper stalls against an object placed with ``place_object`` (current
rises to its limit; a stall at full current in plain position mode latches an overload error
after ``overload_after_s``, like a real servo). Torque off: the shaft stays, or follows
``set_external_motion`` (a human moving a leader arm).

Fault injection (hardware/mock/faults.py) decides per instruction packet: missed packets,
corrupted status CRCs, latched hardware errors, reboots, added latency.

The receiving side follows the e-manual's Protocol 2.0 reception order (header, ID, LEN bytes,
CRC over the bytes as sent, then destuffing): an instruction whose CRC does not match is
answered by the servo it names with a status packet carrying error 3 (CRC error), a broadcast
one is ignored; an instruction whose parameters hold an FF FF FD without the stuffing FD is
ignored (counters["bad_stuffing"]); and, like a servo's UART receiver, a partial packet is
dropped once no byte has arrived for ``inter_byte_timeout_s`` of the injected clock, so a
truncated packet cannot swallow the packets after it (counters["inter_byte_timeouts"]).

Not modelled: Profile Acceleration (velocity changes are immediate), time-based profiles
(Drive Mode bit 2), indirect addresses, FAST_SYNC_READ / FAST_BULK_READ (no reply), the
Bus Watchdog, Protocol 1.0.
"""

from __future__ import annotations

import errno
import math
import os
import pty
import select
import struct
import termios
import threading
import tty
from collections import deque
from collections.abc import Callable
from typing import Any

import serial
from dynamixel_sdk import PortHandler

from duet.clock import Clock, MonotonicClock
from duet.errors import ConfigError

from ..dynamixel.control_table import (
    BAUD_CODES,
    BAUD_TO_CODE,
    MODELS,
    PWM_MAX,
    TABLE_SIZE,
    VELOCITY_UNIT_RPM,
    ModelInfo,
    OperatingMode,
    Reg,
    Register,
)
from ..dynamixel.errors import decode_hardware_error, encode_hardware_error
from ..dynamixel.protocol import (
    ALERT,
    BROADCAST_ID,
    Instruction,
    Packet,
    PacketReader,
    StatusError,
    status_packet,
    wire_time_s,
)
from .faults import FaultActions, FaultInjector

FIRMWARE_VERSION = 52
# Gap after which a servo drops a partial packet. ROBOTIS publishes no figure for the X series;
# 10 ms is longer than any gap inside one packet from a USB-serial adapter (1 ms USB frames) and
# shorter than the SDK's status timeout (34 ms), so the driver's retry after a swallowed packet
# is heard.
INTER_BYTE_TIMEOUT_S = 0.010
_POSITION_MODES = (
    OperatingMode.POSITION,
    OperatingMode.EXTENDED_POSITION,
    OperatingMode.CURRENT_BASED_POSITION,
)
_EXTENDED_RANGE = 1_048_575  # goal position range in the multi-turn modes

# byte address -> the register that covers it
_ADDR_REG: list[Register | None] = [None] * TABLE_SIZE
for _r in Reg.all():
    for _a in range(_r.address, _r.address + _r.size):
        _ADDR_REG[_a] = _r


_FMT = {
    (1, False): "<B",
    (1, True): "<b",
    (2, False): "<H",
    (2, True): "<h",
    (4, False): "<I",
    (4, True): "<i",
}
_STRUCTS: dict[Register, struct.Struct] = {r: struct.Struct(_FMT[(r.size, r.signed)]) for r in Reg.all()}
_RANGES: dict[Register, tuple[int, int]] = {r: r.value_range for r in Reg.all()}
# Present values 120..146: realtime tick, moving, moving status, PWM, current, velocity, position,
# velocity trajectory, position trajectory, input voltage, temperature.
_PRESENT = struct.Struct("<HBBhhiiiiHB")
_I32 = (-(1 << 31), (1 << 31) - 1)


def _u(reg: Register, table: bytearray) -> int:
    return _STRUCTS[reg].unpack_from(table, reg.address)[0]


def _put(reg: Register, table: bytearray, value: int) -> None:
    lo, hi = _RANGES[reg]
    _STRUCTS[reg].pack_into(table, reg.address, max(lo, min(hi, int(value))))


def _clip(v: float, lo: int, hi: int) -> int:
    return max(lo, min(hi, round(v)))


class FakeServo:
    """One simulated X-series servo. Inspect with the properties; tests may call
    set_present_position / set_hardware_error directly."""

    overload_after_s = 2.0  # full-current stall in (extended) position mode before an overload error
    holding_current_ma = 30.0  # current drawn holding position
    tracking_ma_per_tick = 8.0  # current model while moving: proportional to the tracking error

    def __init__(
        self,
        servo_id: int,
        model: ModelInfo,
        *,
        now: float,
        baud_code: int = 3,
        position: int = 2048,
        input_voltage: float = 12.0,
        temperature_c: float = 30.0,
    ):
        self.model = model
        self.table = bytearray(TABLE_SIZE)
        self.external_motion: Callable[[float], int] | None = None
        self.object_ticks: int | None = None  # present-position frame
        self.reboots = 0
        self.packets = 0  # instruction packets this servo acted on
        self.input_voltage = input_voltage
        self.ambient_c = temperature_c
        self._t = now
        self._pos = float(position)  # shaft position, physical frame (ticks)
        self._vel = 0.0  # physical ticks/s
        self._cur_ma = 0.0  # physical sign
        self._stall_s = 0.0
        self._stalled = False
        self._registered: tuple[int, bytes] | None = None
        self._eeprom_defaults(servo_id, baud_code)
        self._ram_defaults()

    # ------------------------------------------------------------------ defaults / reset

    def _eeprom_defaults(self, servo_id: int, baud_code: int) -> None:
        t, m = self.table, self.model
        t[0:64] = bytes(64)
        _put(Reg.MODEL_NUMBER, t, m.number)
        _put(Reg.FIRMWARE_VERSION, t, FIRMWARE_VERSION)
        _put(Reg.ID, t, servo_id)
        _put(Reg.BAUD_RATE, t, baud_code)
        _put(Reg.RETURN_DELAY_TIME, t, 250)
        _put(Reg.OPERATING_MODE, t, OperatingMode.POSITION)
        _put(Reg.SECONDARY_ID, t, 255)
        _put(Reg.PROTOCOL_TYPE, t, 2)
        _put(Reg.MOVING_THRESHOLD, t, 10)
        _put(Reg.TEMPERATURE_LIMIT, t, 80)
        _put(Reg.MAX_VOLTAGE_LIMIT, t, 160)
        _put(Reg.MIN_VOLTAGE_LIMIT, t, 95)
        _put(Reg.PWM_LIMIT, t, PWM_MAX)
        if m.current_limit_default is not None:
            _put(Reg.CURRENT_LIMIT, t, m.current_limit_default)
        _put(Reg.VELOCITY_LIMIT, t, m.velocity_limit_default)
        _put(Reg.MAX_POSITION_LIMIT, t, m.resolution - 1)
        _put(Reg.MIN_POSITION_LIMIT, t, 0)
        _put(Reg.SHUTDOWN, t, 0b110100)  # overheating, electrical shock, overload

    def _ram_defaults(self) -> None:
        t = self.table
        t[64:TABLE_SIZE] = bytes(TABLE_SIZE - 64)
        _put(Reg.STATUS_RETURN_LEVEL, t, 2)
        _put(Reg.VELOCITY_I_GAIN, t, 1920)
        _put(Reg.VELOCITY_P_GAIN, t, 100)
        _put(Reg.POSITION_P_GAIN, t, 800)
        _put(Reg.GOAL_PWM, t, _u(Reg.PWM_LIMIT, t))
        if self.model.has_current:
            _put(Reg.GOAL_CURRENT, t, _u(Reg.CURRENT_LIMIT, t))
        self._vel = 0.0
        self._cur_ma = 0.0
        self._stall_s = 0.0
        self._stalled = False
        self._registered = None
        self._publish()
        _put(Reg.GOAL_POSITION, t, _u(Reg.PRESENT_POSITION, t))

    def reboot(self, now: float) -> None:
        """Power-on reset: RAM back to defaults (torque off, hardware error cleared)."""
        self.step(now)
        self.reboots += 1
        self._ram_defaults()

    def factory_reset(self, option: int, now: float) -> int:
        """FACTORY_RESET: 0xFF everything, 0x01 all but ID, 0x02 all but ID and baud rate."""
        if option not in (0xFF, 0x01, 0x02):
            return StatusError.DATA_RANGE
        if self.torque_enabled:
            return StatusError.ACCESS
        self.step(now)
        sid, baud = self.id, self.get(Reg.BAUD_RATE)
        self._eeprom_defaults(
            1 if option == 0xFF else sid, 1 if option == 0xFF else (baud if option == 0x02 else 1)
        )
        self._ram_defaults()
        return 0

    # ------------------------------------------------------------------ inspection

    def get(self, reg: Register) -> int:
        return _u(reg, self.table)

    def set(self, reg: Register, value: int) -> None:
        """Set a register directly (test setup), bypassing the access rules."""
        _put(reg, self.table, value)
        self._publish()

    @property
    def id(self) -> int:
        return self.table[Reg.ID.address]

    @property
    def baudrate(self) -> int:
        return BAUD_CODES.get(self.table[Reg.BAUD_RATE.address], -1)

    @property
    def torque_enabled(self) -> bool:
        return bool(self.table[Reg.TORQUE_ENABLE.address])

    @property
    def operating_mode(self) -> int:
        return self.table[Reg.OPERATING_MODE.address]

    @property
    def goal_position(self) -> int:
        return self.get(Reg.GOAL_POSITION)

    @property
    def present_position(self) -> int:
        return self.get(Reg.PRESENT_POSITION)

    @property
    def present_velocity(self) -> int:
        return self.get(Reg.PRESENT_VELOCITY)

    @property
    def present_current(self) -> int:
        return self.get(Reg.PRESENT_CURRENT)

    @property
    def hardware_error_status(self) -> int:
        return self.table[Reg.HARDWARE_ERROR_STATUS.address]

    @property
    def hardware_error_flags(self) -> frozenset[str]:
        return decode_hardware_error(self.hardware_error_status)

    def set_hardware_error(self, flags) -> None:
        """Latch hardware error flags (as the servo's firmware would); shuts torque off for
        the flags its Shutdown register selects."""
        value = self.hardware_error_status | encode_hardware_error(flags)
        self.table[Reg.HARDWARE_ERROR_STATUS.address] = value
        if value & self.table[Reg.SHUTDOWN.address]:
            self.table[Reg.TORQUE_ENABLE.address] = 0

    def set_present_position(self, ticks: int) -> None:
        """Move the shaft (by hand) to `ticks` in the present-position frame."""
        self._pos = float(self._to_phys(ticks))
        self._publish()

    # ------------------------------------------------------------------ frames

    def _sign(self) -> int:
        return -1 if self.table[Reg.DRIVE_MODE.address] & 1 else 1

    def _to_phys(self, user: float) -> float:
        return (user - self.get(Reg.HOMING_OFFSET)) * self._sign()

    def _to_user(self, phys: float) -> float:
        return self._sign() * phys + self.get(Reg.HOMING_OFFSET)

    # ------------------------------------------------------------------ motion

    def _ticks_per_s(self, velocity_units: float) -> float:
        return velocity_units * VELOCITY_UNIT_RPM * self.model.resolution / 60.0

    def _limit_ma(self) -> float:
        m = self.model
        if m.current_unit_ma is None:
            return m.stall_current_a * 1000.0
        return self.get(Reg.CURRENT_LIMIT) * m.current_unit_ma

    def step(self, now: float) -> None:
        """Advance the simulation to `now` (lazily, on each packet addressing this servo)."""
        dt = now - self._t
        if dt <= 0:
            return
        self._t = now
        t = self.table
        if not t[Reg.TORQUE_ENABLE.address]:
            if self.external_motion is not None:
                new = float(self._to_phys(int(self.external_motion(now))))
                self._vel = (new - self._pos) / dt
                self._pos = new
            else:
                self._vel = 0.0
            self._cur_ma = 0.0
            self._stall_s = 0.0
            self._stalled = False
            self._publish()
            return
        m = self.model
        mode = t[Reg.OPERATING_MODE.address]
        no_load = self._ticks_per_s(m.no_load_rpm / VELOCITY_UNIT_RPM)
        vlimit = min(no_load, self._ticks_per_s(self.get(Reg.VELOCITY_LIMIT)) or no_load)
        limit_ma = self._limit_ma()
        pos = self._pos
        if mode in _POSITION_MODES:
            goal = self._to_phys(self.get(Reg.GOAL_POSITION))
            pv = self.get(Reg.PROFILE_VELOCITY)
            vmax = min(vlimit, self._ticks_per_s(pv)) if pv > 0 else vlimit
            if mode == OperatingMode.CURRENT_BASED_POSITION and m.current_unit_ma is not None:
                limit_ma = min(limit_ma, abs(self.get(Reg.GOAL_CURRENT)) * m.current_unit_ma)
            err = goal - pos
            new = pos + max(-vmax * dt, min(vmax * dt, err))
            new, blocked = self._block(pos, new, goal)
            if blocked:
                cur = math.copysign(limit_ma, goal - new)
            else:
                cur = max(-limit_ma, min(limit_ma, self.tracking_ma_per_tick * (goal - new)))
                if abs(cur) < self.holding_current_ma and goal != new:
                    cur = math.copysign(self.holding_current_ma, goal - new)
        else:
            if mode == OperatingMode.VELOCITY:
                v = self._ticks_per_s(self.get(Reg.GOAL_VELOCITY))
                v = max(-vlimit, min(vlimit, v))
                cur = math.copysign(self.holding_current_ma, v) if v else 0.0
            elif mode == OperatingMode.CURRENT:
                goal_ma = self.get(Reg.GOAL_CURRENT) * (m.current_unit_ma or 0.0)
                goal_ma = max(-limit_ma, min(limit_ma, goal_ma))
                v = no_load * goal_ma / (m.stall_current_a * 1000.0)
                cur = goal_ma
            else:  # PWM
                duty = self.get(Reg.GOAL_PWM) / PWM_MAX
                v = no_load * duty
                cur = m.stall_current_a * 1000.0 * duty * 0.2
            target = pos + v * dt
            new, blocked = self._block(pos, target, target)
            if blocked:
                cur = math.copysign(min(limit_ma, m.stall_current_a * 1000.0 * 0.5), v)
        self._stalled = blocked
        if mode in _POSITION_MODES and (blocked or new == goal):
            self._vel = 0.0  # arrived (or pressing): the lazily integrated interval may hide it
        else:
            self._vel = (new - pos) / dt
        if (
            blocked
            and mode in (OperatingMode.POSITION, OperatingMode.EXTENDED_POSITION)
            and abs(cur) >= limit_ma
        ):
            self._stall_s += dt
        else:
            self._stall_s = 0.0
        self._pos = new
        self._cur_ma = cur
        if self._stall_s >= self.overload_after_s:
            self.set_hardware_error({"overload"})
            self._cur_ma = 0.0
        self._publish()

    def _block(self, pos: float, new: float, goal: float) -> tuple[float, bool]:
        """Stop at the placed object; blocked = pressing against it."""
        if self.object_ticks is None:
            return new, False
        obj = self._to_phys(self.object_ticks)
        if pos <= obj and goal > obj and new >= obj:
            return obj, True
        if pos >= obj and goal < obj and new <= obj:
            return obj, True
        return new, False

    def _publish(self) -> None:
        """Write the simulated state into the present-value registers (120..146)."""
        t, m = self.table, self.model
        sign = self._sign()
        vel_units = sign * self._vel * 60.0 / (VELOCITY_UNIT_RPM * m.resolution)
        stall_ma = m.stall_current_a * 1000.0
        if m.current_unit_ma is not None:
            cur = sign * self._cur_ma / m.current_unit_ma
        else:  # Present Load, 0.1 % of the maximum torque
            cur = sign * 1000.0 * self._cur_ma / stall_ma
        pwm = sign * PWM_MAX * max(-1.0, min(1.0, self._cur_ma / stall_ma))
        moving = int(abs(vel_units) > _u(Reg.MOVING_THRESHOLD, t))
        goal = _u(Reg.GOAL_POSITION, t)
        temp = self.ambient_c + 25.0 * abs(self._cur_ma) / stall_ma
        _PRESENT.pack_into(
            t,
            120,
            int(self._t * 1000.0) % 32768,
            moving,
            0,
            _clip(pwm, -PWM_MAX, PWM_MAX),
            _clip(cur, -32768, 32767),
            _clip(vel_units, *_I32),
            _clip(self._to_user(self._pos), *_I32),
            0,
            goal,
            _clip(self.input_voltage * 10, 0, 65535),
            _clip(temp, 0, 255),
        )

    # ------------------------------------------------------------------ control table access

    def read(self, address: int, length: int) -> tuple[int, bytes]:
        if length <= 0 or address < 0 or address + length > TABLE_SIZE:
            return StatusError.ACCESS, b""
        return 0, bytes(self.table[address : address + length])

    def write(self, address: int, data: bytes) -> int:
        """Apply a WRITE; returns the status error number (0 = done)."""
        end = address + len(data)
        if not data or address < 0 or end > TABLE_SIZE:
            return StatusError.ACCESS
        t = self.table
        torque = t[Reg.TORQUE_ENABLE.address]
        touched: list[Register] = []
        for a in range(address, end):
            reg = _ADDR_REG[a]
            if reg is None or (touched and touched[-1] is reg):
                continue
            if not reg.writable or (reg.eeprom and torque):
                return StatusError.ACCESS
            if not self.model.has_current and reg in (Reg.CURRENT_LIMIT, Reg.GOAL_CURRENT):
                return StatusError.ACCESS
            touched.append(reg)
        new = bytearray(t)
        new[address:end] = data
        for reg in touched:
            err = self._check(reg, _u(reg, new), new)
            if err:
                return err
        # Commit only the covered register bytes (gaps stay zero like reserved space).
        for reg in touched:
            t[reg.address : reg.address + reg.size] = new[reg.address : reg.address + reg.size]
        if Reg.HOMING_OFFSET in touched or Reg.DRIVE_MODE in touched:
            self._publish()  # the present values move to the new frame at once
        return 0

    def _check(self, reg: Register, value: int, new: bytearray) -> int:
        mode = new[Reg.OPERATING_MODE.address]
        if reg is Reg.OPERATING_MODE:
            return 0 if value in {int(x) for x in self.model.modes} else StatusError.DATA_RANGE
        if reg is Reg.BAUD_RATE:
            return 0 if value in BAUD_CODES else StatusError.DATA_RANGE
        if reg is Reg.ID:
            return 0 if value <= 252 else StatusError.DATA_RANGE
        if reg is Reg.TORQUE_ENABLE:
            if value not in (0, 1):
                return StatusError.DATA_RANGE
            if value and self.hardware_error_status & new[Reg.SHUTDOWN.address]:
                return StatusError.RESULT_FAIL  # shut down: only a reboot re-arms the servo
            return 0
        if reg is Reg.GOAL_POSITION:
            if mode == OperatingMode.POSITION:
                lo, hi = _u(Reg.MIN_POSITION_LIMIT, new), _u(Reg.MAX_POSITION_LIMIT, new)
            else:
                lo, hi = -_EXTENDED_RANGE, _EXTENDED_RANGE
            return 0 if lo <= value <= hi else StatusError.DATA_LIMIT
        if reg is Reg.GOAL_CURRENT:
            return 0 if abs(value) <= _u(Reg.CURRENT_LIMIT, new) else StatusError.DATA_LIMIT
        if reg is Reg.GOAL_VELOCITY:
            return 0 if abs(value) <= _u(Reg.VELOCITY_LIMIT, new) else StatusError.DATA_LIMIT
        if reg is Reg.GOAL_PWM:
            return 0 if abs(value) <= _u(Reg.PWM_LIMIT, new) else StatusError.DATA_LIMIT
        if reg is Reg.CURRENT_LIMIT and self.model.current_limit_default is not None:
            return 0 if value <= self.model.current_limit_default else StatusError.DATA_LIMIT
        return 0

    def error_byte(self, err: int = 0) -> int:
        return (err & 0x7F) | (ALERT if self.hardware_error_status else 0)


class FakePortHandler(PortHandler):
    """A dynamixel_sdk PortHandler wired to a FakeDynamixelBus in-process.

    No OS port. Replies are queued with the (injected-clock) time they become available;
    readPort waits for them with clock.sleep_until instead of busy-polling, and returns
    nothing once the SDK's packet timeout has passed, so timeouts behave like a real port's.
    The SDK's timing (getCurrentTime) runs on the injected clock too.
    """

    def __init__(self, bus: FakeDynamixelBus, port_name: str = "fake"):
        super().__init__(port_name)
        self._bus = bus
        self._clock = bus.clock
        self._rx = bytearray()
        self._pending: deque[tuple[float, bytes]] = deque()
        self._reader = bus._new_reader()  # the servos' receiver

    def openPort(self):
        return self.setBaudRate(self.baudrate)

    def closePort(self):
        self._bus._detach(self)
        self.is_open = False
        self.clearPort()
        self._reader.reset()

    def clearPort(self):
        """Flush the host's input (what the SDK does before each instruction). The servos'
        receivers keep what they got: a partial packet ends by their inter-byte timeout."""
        self._rx.clear()
        self._pending.clear()

    def setBaudRate(self, baudrate):
        if self.getCFlagBaud(baudrate) <= 0:
            return False
        if not self.is_open:
            self._bus._attach(self)  # raises serial.SerialException(EBUSY) if another handler has it
            self.is_open = True
        self.baudrate = baudrate
        self.tx_time_per_byte = (1000.0 / baudrate) * 10.0
        self.clearPort()
        self._reader.reset()
        return True

    def _deliver(self) -> None:
        now = self._clock.now()
        while self._pending and self._pending[0][0] <= now:
            self._rx.extend(self._pending.popleft()[1])

    def getBytesAvailable(self):
        self._deliver()
        return len(self._rx)

    def readPort(self, length):
        self._deliver()
        if not self._rx:
            deadline = (self.packet_start_time + self.packet_timeout) / 1000.0
            if self._pending and self._pending[0][0] <= deadline:
                self._clock.sleep_until(self._pending[0][0])
                self._deliver()
            else:
                self._clock.sleep_until(
                    deadline + 1e-6
                )  # nothing comes in time: let the timeout pass (SDK tests '>')
                return b""
        out = bytes(self._rx[:length])
        del self._rx[:length]
        return out

    def writePort(self, packet):
        if not self.is_open:
            return 0
        data = bytes(packet)
        self._pending.extend(self._bus._receive(self._reader, data, self.baudrate))
        return len(data)

    def getCurrentTime(self):
        return self._clock.now() * 1000.0


class _PtyServer(threading.Thread):
    """Answers on the master side of a pseudo-terminal."""

    _SPEEDS = {
        getattr(termios, f"B{b}"): b
        for b in (
            9600,
            19200,
            38400,
            57600,
            115200,
            230400,
            460800,
            500000,
            576000,
            921600,
            1000000,
            1152000,
            2000000,
            2500000,
            3000000,
            3500000,
            4000000,
        )
        if hasattr(termios, f"B{b}")
    }

    def __init__(self, bus: FakeDynamixelBus):
        super().__init__(name="fake-dynamixel-pty", daemon=True)
        self.bus = bus
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self._stop_r, self._stop_w = os.pipe()
        self._reader = bus._new_reader()

    def baudrate(self) -> int:
        try:
            speed = termios.tcgetattr(self.master)[5]
        except termios.error:
            return self.bus.baudrate
        return self._SPEEDS.get(speed, 0)

    def run(self) -> None:
        while True:
            ready, _, _ = select.select([self.master, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            for when, reply in self.bus._receive(self._reader, data, self.baudrate()):
                self.bus.clock.sleep_until(when)
                view = memoryview(reply)
                while view:
                    try:
                        n = os.write(self.master, view)
                    except OSError:
                        return
                    view = view[n:]

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        self.join(timeout=5.0)
        for fd in (self.master, self.slave, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass


class FakeDynamixelBus:
    """Simulated servos on one Protocol 2.0 bus.

    servos: {id: model name}. clock: the time source of motion, latency and timeouts
    (default MonotonicClock). faults: a FaultInjector (see hardware/mock/faults.py).
    baudrate: the servos' baud rate (the port must be opened at the same rate or they hear
    noise). simulate_wire_time: delay replies by the bytes' wire time at the port's baud
    rate plus each servo's return delay (off by default: replies are immediate).
    inter_byte_timeout_s: a partial packet is dropped after this long without a byte (None: never).
    """

    def __init__(
        self,
        servos: dict[int, str],
        *,
        clock: Clock | None = None,
        faults: FaultInjector | None = None,
        baudrate: int = 1_000_000,
        simulate_wire_time: bool = False,
        input_voltage: float = 12.0,
        position: int = 2048,
        inter_byte_timeout_s: float | None = INTER_BYTE_TIMEOUT_S,
    ):
        if baudrate not in BAUD_TO_CODE:
            raise ConfigError(
                f"fake Dynamixel bus: baud rate {baudrate} is not a Dynamixel rate "
                f"(use one of {', '.join(str(b) for b in sorted(BAUD_TO_CODE))})"
            )
        self.clock: Clock = clock or MonotonicClock()
        self.baudrate = baudrate
        self.faults = faults
        self.simulate_wire_time = simulate_wire_time
        if inter_byte_timeout_s is not None and not inter_byte_timeout_s > 0:
            raise ConfigError(
                f"fake Dynamixel bus: inter_byte_timeout_s must be > 0 or None, got {inter_byte_timeout_s}"
            )
        self.inter_byte_timeout_s = inter_byte_timeout_s
        self.transactions = 0  # instruction packets received (any ID)
        self.counters: dict[str, int] = {
            "bad_instruction_crc": 0,
            "status_packets": 0,
            "dropped_by_fault": 0,
            "corrupted_by_fault": 0,
            "wrong_baud": 0,
            "bad_stuffing": 0,
            "inter_byte_timeouts": 0,
        }
        self._lock = threading.RLock()
        self._t0: float | None = None
        self._servos: dict[int, FakeServo] = {}
        self._attached: Any = None
        self._servers: list[_PtyServer] = []
        now = self.clock.now()
        for sid, model in sorted(servos.items()):
            if model not in MODELS:
                raise ConfigError(
                    f"fake Dynamixel bus: servo ID {sid}: unknown model {model!r} "
                    f"(known: {', '.join(sorted(MODELS))})"
                )
            if not 0 <= sid <= 252:
                raise ConfigError(f"fake Dynamixel bus: servo ID {sid} outside 0..252")
            self._servos[sid] = FakeServo(
                sid,
                MODELS[model],
                now=now,
                baud_code=BAUD_TO_CODE[baudrate],
                position=position,
                input_voltage=input_voltage,
            )
        if faults is not None:
            faults.bind(list(self._servos))

    # ------------------------------------------------------------------ public

    def port_handler(self, name: str = "fake") -> FakePortHandler:
        """A dynamixel_sdk.PortHandler talking to this bus in-process (one open at a time)."""
        return FakePortHandler(self, name)

    def serve_pty(self) -> str:
        """Serve the bus on a new pseudo-terminal; returns the slave path for the
        unmodified dynamixel_sdk.PortHandler. close() stops every server."""
        server = _PtyServer(self)
        server.start()
        self._servers.append(server)
        return server.path

    def close(self) -> None:
        for s in self._servers:
            s.stop()
        self._servers.clear()

    def __enter__(self) -> FakeDynamixelBus:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._servos)

    def servo(self, servo_id: int) -> FakeServo:
        with self._lock:
            s = self._servos[servo_id]
            s.step(self.clock.now())
            return s

    def set_external_motion(self, servo_id: int, fn: Callable[[float], int] | None) -> None:
        """While torque is off, Present Position follows fn(t) (t: the clock's time)."""
        with self._lock:
            s = self._servos[servo_id]
            s.step(self.clock.now())
            s.external_motion = fn

    def place_object(self, servo_id: int, ticks: int | None) -> None:
        """An object at `ticks` (present-position frame) blocks the shaft; None removes it."""
        with self._lock:
            s = self._servos[servo_id]
            s.step(self.clock.now())
            s.object_ticks = ticks

    # ------------------------------------------------------------------ port side

    def _attach(self, handler: Any) -> None:
        with self._lock:
            if self._attached is not None and self._attached is not handler:
                raise serial.SerialException(errno.EBUSY, f"could not open port {handler.port_name}: busy")
            self._attached = handler

    def _detach(self, handler: Any) -> None:
        with self._lock:
            if self._attached is handler:
                self._attached = None

    def _new_reader(self) -> PacketReader:
        return PacketReader(inter_byte_timeout_s=self.inter_byte_timeout_s)

    def _receive(self, reader: PacketReader, data: bytes, baudrate: int) -> list[tuple[float, bytes]]:
        """Bytes from the host -> [(time the replies are available, reply bytes)]."""
        with self._lock:
            out = []
            timed_out = reader.timed_out
            packets = reader.feed(data, self.clock.now())
            self.counters["inter_byte_timeouts"] += reader.timed_out - timed_out
            for pkt in packets:
                reply = self._transaction(pkt, baudrate)
                if reply is not None:
                    out.append(reply)
            return out

    def _addressed(self, pkt: Packet) -> list[int]:
        inst, p = pkt.instruction, pkt.params
        if pkt.id != BROADCAST_ID:
            return [pkt.id]
        if inst == Instruction.SYNC_READ:
            return list(p[4:])
        if inst == Instruction.SYNC_WRITE and len(p) >= 4:
            n = p[2] | (p[3] << 8)
            return list(p[4 :: n + 1])
        if inst == Instruction.BULK_READ:
            return list(p[0::5])
        if inst == Instruction.BULK_WRITE:
            ids, i = [], 0
            while i + 5 <= len(p):
                ids.append(p[i])
                i += 5 + (p[i + 3] | (p[i + 4] << 8))
            return ids
        return sorted(self._servos)

    def _transaction(self, pkt: Packet, baudrate: int) -> tuple[float, bytes] | None:
        now = self.clock.now()
        if self._t0 is None:
            self._t0 = now
        self.transactions += 1
        if not pkt.crc_ok:
            self.counters["bad_instruction_crc"] += 1
            return self._crc_error_reply(pkt, baudrate, now)
        if not pkt.stuffing_ok:
            # A header inside the packet: a receiver destuffing per the e-manual gets other
            # parameters than were meant (ROBOTIS' reference receiver drops that FD and shifts
            # the rest). The fake ignores it, so the defect shows as a missing effect.
            self.counters["bad_stuffing"] += 1
            return None
        addressed = self._addressed(pkt)
        actions = (
            self.faults.decide(self.transactions, now - self._t0, addressed)
            if self.faults is not None
            else FaultActions()
        )
        for sid in actions.reboot:
            if sid in self._servos:
                self._servos[sid].reboot(now)
        for sid, flags in actions.hardware_errors.items():
            if sid in self._servos:
                self._servos[sid].step(now)
                self._servos[sid].set_hardware_error(flags)
        listening = {sid for sid, s in self._servos.items() if s.baudrate == baudrate}
        if len(listening) < len(self._servos):
            self.counters["wrong_baud"] += 1
        self.counters["dropped_by_fault"] += len(actions.deaf & set(addressed))
        listening -= actions.deaf
        for sid in addressed:
            if sid in listening:
                self._servos[sid].step(now)
                self._servos[sid].packets += 1
        replies = self._dispatch(pkt, listening, now)
        if not replies:
            return None
        chunks = []
        for sid, raw in replies:
            if sid in actions.bad_crc:
                raw = raw[:-1] + bytes((raw[-1] ^ 0xA5,))
                self.counters["corrupted_by_fault"] += 1
            chunks.append(raw)
        self.counters["status_packets"] += len(chunks)
        delay = actions.latency_s
        if self.simulate_wire_time:
            rx = sum(len(c) for c in chunks)
            delay += wire_time_s(len(pkt.raw) + rx, baudrate)
            delay += sum(
                self._servos[sid].get(Reg.RETURN_DELAY_TIME) * 2e-6
                for sid, _ in replies
                if sid in self._servos
            )
        return now + delay, b"".join(chunks)

    def _crc_error_reply(self, pkt: Packet, baudrate: int, now: float) -> tuple[float, bytes] | None:
        """An instruction whose CRC does not match: the servo its ID names answers with error 3
        (CRC error, e-manual Protocol 2.0 status packet), when its Status Return Level answers
        that instruction; a broadcast or an absent ID gets no answer."""
        s = self._servos.get(pkt.id)
        if s is None or s.baudrate != baudrate:
            return None
        level = 0 if pkt.instruction == Instruction.PING else 1 if pkt.instruction == Instruction.READ else 2
        if s.table[Reg.STATUS_RETURN_LEVEL.address] < level:
            return None
        raw = status_packet(pkt.id, s.error_byte(StatusError.CRC))
        self.counters["status_packets"] += 1
        delay = 0.0
        if self.simulate_wire_time:
            delay = wire_time_s(len(pkt.raw) + len(raw), baudrate) + s.get(Reg.RETURN_DELAY_TIME) * 2e-6
        return now + delay, raw

    def _dispatch(self, pkt: Packet, listening: set[int], now: float) -> list[tuple[int, bytes]]:
        inst, p, sid = pkt.instruction, pkt.params, pkt.id
        servos = self._servos
        out: list[tuple[int, bytes]] = []

        def reply(s: FakeServo, err: int = 0, params: bytes = b"", level: int = 2) -> None:
            if s.table[Reg.STATUS_RETURN_LEVEL.address] >= level:
                # A unicast is answered with the packet's ID (even by a servo whose ID it just changed).
                rid = sid if sid != BROADCAST_ID else s.id
                out.append((rid, status_packet(rid, s.error_byte(err), params)))

        def ping_params(s: FakeServo) -> bytes:
            return s.model.number.to_bytes(2, "little") + bytes((s.get(Reg.FIRMWARE_VERSION),))

        if sid == BROADCAST_ID:
            if inst == Instruction.PING:
                for i in sorted(listening):
                    reply(servos[i], 0, ping_params(servos[i]), level=0)
            elif inst == Instruction.SYNC_READ and len(p) >= 4:
                addr, n = p[0] | (p[1] << 8), p[2] | (p[3] << 8)
                for i in p[4:]:
                    if i in listening:
                        err, data = servos[i].read(addr, n)
                        reply(servos[i], err, data, level=1)
            elif inst == Instruction.SYNC_WRITE and len(p) >= 4:
                addr, n = p[0] | (p[1] << 8), p[2] | (p[3] << 8)
                for k in range(4, len(p) - n, n + 1):
                    if p[k] in listening:
                        servos[p[k]].write(addr, p[k + 1 : k + 1 + n])
            elif inst == Instruction.BULK_READ:
                for k in range(0, len(p) - 4, 5):
                    i = p[k]
                    if i in listening:
                        err, data = servos[i].read(p[k + 1] | (p[k + 2] << 8), p[k + 3] | (p[k + 4] << 8))
                        reply(servos[i], err, data, level=1)
            elif inst == Instruction.BULK_WRITE:
                k = 0
                while k + 5 <= len(p):
                    i, addr, n = p[k], p[k + 1] | (p[k + 2] << 8), p[k + 3] | (p[k + 4] << 8)
                    if i in listening:
                        servos[i].write(addr, p[k + 5 : k + 5 + n])
                    k += 5 + n
            elif inst == Instruction.WRITE and len(p) >= 3:
                for i in listening:
                    servos[i].write(p[0] | (p[1] << 8), p[2:])
            elif inst == Instruction.ACTION:
                for i in listening:
                    self._action(servos[i])
            # FAST_SYNC_READ, FAST_BULK_READ, broadcast REBOOT...: not modelled, no reply
            self._rekey()
            return out

        s = servos.get(sid)
        if s is None or sid not in listening:
            return out
        if inst == Instruction.PING:
            reply(s, 0, ping_params(s), level=0)
        elif inst == Instruction.READ:
            if len(p) != 4:
                reply(s, StatusError.DATA_LENGTH, level=1)
            else:
                err, data = s.read(p[0] | (p[1] << 8), p[2] | (p[3] << 8))
                reply(s, err, data, level=1)
        elif inst == Instruction.WRITE:
            if len(p) < 3:
                reply(s, StatusError.DATA_LENGTH)
            else:
                reply(s, s.write(p[0] | (p[1] << 8), p[2:]))
        elif inst == Instruction.REG_WRITE:
            if len(p) < 3:
                reply(s, StatusError.DATA_LENGTH)
            else:
                s._registered = (p[0] | (p[1] << 8), bytes(p[2:]))
                s.table[Reg.REGISTERED_INSTRUCTION.address] = 1
                reply(s)
        elif inst == Instruction.ACTION:
            reply(s, self._action(s))
        elif inst == Instruction.REBOOT:
            reply(s)
            s.reboot(now)
        elif inst == Instruction.FACTORY_RESET:
            reply(s, s.factory_reset(p[0] if p else 0xFF, now))
        elif inst == Instruction.CLEAR:
            if s.torque_enabled:
                reply(s, StatusError.RESULT_FAIL)
            else:
                s._pos = math.fmod(s._pos, s.model.resolution)
                s._publish()
                reply(s)
        else:
            reply(s, StatusError.INSTRUCTION)
        self._rekey()
        return out

    def _action(self, s: FakeServo) -> int:
        if s._registered is None:
            return StatusError.RESULT_FAIL
        addr, data = s._registered
        s._registered = None
        s.table[Reg.REGISTERED_INSTRUCTION.address] = 0
        return s.write(addr, data)

    def _rekey(self) -> None:
        """A WRITE to the ID register moves the servo to its new ID."""
        if any(k != s.id for k, s in self._servos.items()):
            self._servos = {s.id: s for s in self._servos.values()}
            if self.faults is not None:
                self.faults.bind(list(self._servos))
