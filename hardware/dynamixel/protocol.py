"""Dynamixel Protocol 2.0 packet codec: CRC-16, byte stuffing, packet encode / stream decode,
and wire-time arithmetic.

The driver (hardware/dynamixel/bus.py) uses dynamixel_sdk's packet layer with its byte stuffing
replaced by stuff / unstuff below (the SDK's is defective, see bus.StuffedPacketHandler); this
module is also the servo side of the wire for the fake bus (hardware/mock/fake_dynamixel.py) and
the packet-size arithmetic for benchmarks. Packet layout::

    FF FF FD 00 | ID | LEN_L LEN_H | INST | PARAMS... | CRC_L CRC_H      (instruction)
    FF FF FD 00 | ID | LEN_L LEN_H | 0x55 | ERR | PARAMS... | CRC_L CRC_H (status)

LEN counts INST .. CRC after stuffing. CRC-16 (polynomial 0x8005, MSB first, init 0) covers
header .. last parameter. Stuffing: in INST .. PARAMS, every FF FF FD gets an extra FD.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC
STATUS = 0x55


class Instruction(IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    CLEAR = 0x10
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    FAST_SYNC_READ = 0x8A
    BULK_READ = 0x92
    BULK_WRITE = 0x93
    FAST_BULK_READ = 0x9A


class StatusError(IntEnum):
    """Low 7 bits of a status packet's error byte; ALERT (0x80) is ORed on top."""

    NONE = 0
    RESULT_FAIL = 1
    INSTRUCTION = 2
    CRC = 3
    DATA_RANGE = 4
    DATA_LENGTH = 5
    DATA_LIMIT = 6
    ACCESS = 7


ALERT = 0x80


def _make_crc_table(poly: int = 0x8005) -> tuple[int, ...]:
    table = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ poly) if c & 0x8000 else (c << 1)
        table.append(c & 0xFFFF)
    return tuple(table)


CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Dynamixel CRC-16 (poly 0x8005, not reflected, init 0) of `data`, continuing from `crc`."""
    table = CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ b) & 0xFF]
    return crc


def stuff(payload: bytes | bytearray) -> bytes:
    """Insert an FD after every FF FF FD of `payload` (the INST .. PARAMS field)."""
    if b"\xff\xff\xfd" not in payload:
        return bytes(payload)
    out = bytearray()
    for i, b in enumerate(payload):
        out.append(b)
        if b == 0xFD and i >= 2 and payload[i - 1] == 0xFF and payload[i - 2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(field: bytes | bytearray) -> bytes:
    """Inverse of stuff: drop the FD that follows each FF FF FD. A field that is not validly
    stuffed (an FF FF FD not followed by FD) is returned with that sequence as is; see
    is_stuffed."""
    if b"\xff\xff\xfd\xfd" not in field:
        return bytes(field)
    out = bytearray()
    i, n = 0, len(field)
    while i < n:
        b = field[i]
        out.append(b)
        if (
            b == 0xFD
            and i >= 2
            and field[i - 1] == 0xFF
            and field[i - 2] == 0xFF
            and i + 1 < n
            and field[i + 1] == 0xFD
        ):
            i += 2
            continue
        i += 1
    return bytes(out)


def is_stuffed(field: bytes | bytearray) -> bool:
    """True if `field` (INST .. PARAMS as sent) is validly stuffed: every FF FF FD in it is
    followed by the stuffing FD. An unstuffed FF FF FD is a header inside the packet."""
    return b"\xff\xff\xfd" not in field or stuff(unstuff(field)) == bytes(field)


def encode_packet(dxl_id: int, payload: bytes | bytearray) -> bytes:
    """A complete packet from the unstuffed INST .. PARAMS payload (stuffing and CRC added)."""
    body = stuff(payload)
    length = len(body) + 2
    head = HEADER + bytes((dxl_id & 0xFF, length & 0xFF, (length >> 8) & 0xFF))
    pkt = head + body
    crc = crc16(pkt)
    return pkt + bytes((crc & 0xFF, crc >> 8))


def instruction_packet(dxl_id: int, instruction: int, params: bytes | bytearray = b"") -> bytes:
    return encode_packet(dxl_id, bytes((instruction,)) + bytes(params))


def status_packet(dxl_id: int, error: int = 0, params: bytes | bytearray = b"") -> bytes:
    return encode_packet(dxl_id, bytes((STATUS, error & 0xFF)) + bytes(params))


@dataclass(frozen=True)
class Packet:
    """A decoded packet. For a status packet instruction == 0x55 and `error` is set."""

    id: int
    instruction: int
    params: bytes
    error: int | None = None
    crc_ok: bool = True
    raw: bytes = b""
    stuffing_ok: bool = True  # False: an FF FF FD without its stuffing FD (params as received)

    @property
    def is_status(self) -> bool:
        return self.instruction == STATUS


class PacketReader:
    """Incremental decoder of a byte stream into packets.

    feed(data) returns the complete packets found; bytes before a header are skipped, a
    packet whose CRC does not match comes back with crc_ok=False (its params undecoded), one
    whose INST .. PARAMS field is not validly stuffed with stuffing_ok=False.
    `max_length` bounds LEN so a corrupted length cannot stall the stream forever.

    Inter-byte timeout (like a servo's receiver): with `inter_byte_timeout_s` set and feed()
    given the arrival time `now`, a partial packet is dropped when no byte has arrived for
    longer than the timeout, so a truncated packet (a host killed mid-write, a LEN corrupted
    upwards) cannot swallow the packets that follow it.
    """

    def __init__(self, max_length: int = 1024, inter_byte_timeout_s: float | None = None):
        self._buf = bytearray()
        self.max_length = max_length
        self.inter_byte_timeout_s = inter_byte_timeout_s
        self.skipped = 0  # bytes dropped while looking for a header
        self.timed_out = 0  # partial packets dropped by the inter-byte timeout
        self._last_byte_t: float | None = None

    def reset(self) -> None:
        self._buf.clear()
        self._last_byte_t = None

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray, now: float | None = None) -> list[Packet]:
        buf = self._buf
        if now is not None:
            timeout = self.inter_byte_timeout_s
            if (
                buf
                and timeout is not None
                and self._last_byte_t is not None
                and now - self._last_byte_t > timeout
            ):
                self.timed_out += 1
                self.skipped += len(buf)
                buf.clear()
            if data:
                self._last_byte_t = now
        buf.extend(data)
        out: list[Packet] = []
        while True:
            start = buf.find(b"\xff\xff\xfd")
            if start < 0:
                keep = 2 if buf.endswith(b"\xff\xff") else (1 if buf.endswith(b"\xff") else 0)
                self.skipped += len(buf) - keep
                del buf[: len(buf) - keep]
                return out
            if start:
                self.skipped += start
                del buf[:start]
            if len(buf) < 7:
                return out
            if buf[3] != 0x00:  # reserved byte (FD here would be a stuffed sequence, not a header)
                self.skipped += 1
                del buf[:1]
                continue
            length = buf[5] | (buf[6] << 8)
            if length < 3 or length > self.max_length:
                self.skipped += 1
                del buf[:1]
                continue
            total = 7 + length
            if len(buf) < total:
                return out
            raw = bytes(buf[:total])
            del buf[:total]
            crc = raw[-2] | (raw[-1] << 8)
            if crc16(raw[:-2]) != crc:
                out.append(Packet(raw[4], raw[7], b"", None, crc_ok=False, raw=raw))
                continue
            field = raw[7:-2]
            payload = unstuff(field)
            ok = is_stuffed(field)
            inst = payload[0]
            if inst == STATUS:
                out.append(
                    Packet(
                        raw[4],
                        inst,
                        payload[2:],
                        payload[1] if len(payload) > 1 else 0,
                        raw=raw,
                        stuffing_ok=ok,
                    )
                )
            else:
                out.append(Packet(raw[4], inst, payload[1:], raw=raw, stuffing_ok=ok))


# ----------------------------------------------------------------------------- wire time

BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop


def sync_read_sizes(n_servos: int, data_length: int) -> tuple[int, int]:
    """(instruction bytes, total status bytes) of one SYNC_READ, without stuffing."""
    return 14 + n_servos, n_servos * (11 + data_length)


def sync_write_size(n_servos: int, data_length: int) -> int:
    """Bytes of one SYNC_WRITE instruction (no status packets), without stuffing."""
    return 14 + n_servos * (1 + data_length)


def wire_time_s(n_bytes: int, baudrate: int) -> float:
    return n_bytes * BITS_PER_BYTE / float(baudrate)


def sync_read_time_s(n_servos: int, data_length: int, baudrate: int, return_delay_us: float = 0.0) -> float:
    """Bus time of one SYNC_READ: instruction + every status packet + each servo's return delay.
    Excludes the USB-serial adapter's latency (FTDI latency timer)."""
    tx, rx = sync_read_sizes(n_servos, data_length)
    return wire_time_s(tx + rx, baudrate) + n_servos * return_delay_us * 1e-6
