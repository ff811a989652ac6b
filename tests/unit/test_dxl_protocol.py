"""Packet codec (hardware/dynamixel/protocol.py) against the e-manual and dynamixel_sdk."""

import random

from dynamixel_sdk import COMM_SUCCESS, PacketHandler, PortHandler
from hypothesis import given, settings
from hypothesis import strategies as st

from duet.hardware.dynamixel.protocol import (
    Instruction,
    PacketReader,
    crc16,
    encode_packet,
    instruction_packet,
    status_packet,
    stuff,
    sync_read_sizes,
    sync_read_time_s,
    sync_write_size,
    unstuff,
)

# Bytes rich in the stuffing pattern.
pattern_bytes = st.lists(st.sampled_from([0xFF, 0xFD, 0x00, 0x55, 0x01]) | st.integers(0, 255), max_size=80).map(bytes)


class _Loopback(PortHandler):
    """A PortHandler that records what the SDK writes and serves queued bytes."""

    def __init__(self):
        super().__init__("loopback")
        self.written = b""
        self.rx = bytearray()
        self.is_open = True
        self.baudrate = 1_000_000
        self.tx_time_per_byte = 0.01

    def clearPort(self):
        pass

    def writePort(self, packet):
        self.written = bytes(packet)
        return len(packet)

    def readPort(self, length):
        out = bytes(self.rx[:length])
        del self.rx[:length]
        return out


def test_crc_matches_emanual_ping_example():
    # e-manual Protocol 2.0 PING example for ID 1: FF FF FD 00 01 03 00 01 19 4E
    assert instruction_packet(1, Instruction.PING) == bytes.fromhex("FFFFFD0001030001194E")


@given(st.binary(max_size=200))
def test_crc_matches_sdk(data):
    assert crc16(data) == PacketHandler(2.0).updateCRC(0, list(data), len(data))


@given(st.binary(max_size=100), st.binary(max_size=100))
def test_crc_is_incremental(a, b):
    assert crc16(a + b) == crc16(b, crc16(a))


@given(pattern_bytes)
def test_stuffing_round_trip(data):
    stuffed = stuff(data)
    assert unstuff(stuffed) == data
    # After stuffing, every FF FF FD is followed by the stuffing FD.
    for i in range(len(stuffed) - 2):
        if stuffed[i : i + 3] == b"\xff\xff\xfd":
            assert i + 3 < len(stuffed) and stuffed[i + 3] == 0xFD


def test_stuffing_example():
    assert stuff(b"\x03\xff\xff\xfd\x10") == b"\x03\xff\xff\xfd\xfd\x10"
    assert unstuff(b"\x03\xff\xff\xfd\xfd\x10") == b"\x03\xff\xff\xfd\x10"


@settings(max_examples=60)
@given(st.integers(0, 252), st.integers(0, 600), pattern_bytes.filter(lambda b: 1 <= len(b) <= 60))
def test_instruction_encoding_matches_sdk_tx(dxl_id, address, data):
    """What the SDK puts on the wire for a WRITE equals our encoding (stuffing + CRC)."""
    port = _Loopback()
    PacketHandler(2.0).writeTxOnly(port, dxl_id, address, len(data), list(data))
    params = address.to_bytes(2, "little") + data
    assert port.written == instruction_packet(dxl_id, Instruction.WRITE, params)


@settings(max_examples=60)
@given(st.integers(0, 252), st.integers(0, 255), pattern_bytes.filter(lambda b: 1 <= len(b) <= 40))
def test_status_packets_decode_in_sdk(dxl_id, error, params):
    """The fake's status packets (with stuffing) are read back by the SDK's rxPacket."""
    port = _Loopback()
    port.rx.extend(status_packet(dxl_id, error, params))
    port.setPacketTimeoutMillis(1000)
    data, result, err = PacketHandler(2.0).readRx(port, dxl_id, len(params))
    assert result == COMM_SUCCESS
    assert bytes(data) == params and err == error


@settings(max_examples=50)
@given(st.lists(st.tuples(st.integers(0, 253), pattern_bytes), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_reader_decodes_any_chunking(packets, rnd: random.Random):
    stream = b"\x00\x12\xff" + b"".join(encode_packet(i, b"\x02" + p) for i, p in packets)
    reader = PacketReader()
    out = []
    pos = 0
    while pos < len(stream):
        n = rnd.randint(1, 9)
        out.extend(reader.feed(stream[pos : pos + n]))
        pos += n
    assert [(p.id, p.instruction, p.params) for p in out] == [(i, 2, p) for i, p in packets]
    assert all(p.crc_ok for p in out)


def test_reader_flags_corrupt_crc_and_resyncs():
    good = status_packet(3, 0, b"\x01\x02")
    bad = bytearray(status_packet(4, 0, b"\x05"))
    bad[-1] ^= 0xFF
    out = PacketReader().feed(bytes(bad) + good)
    assert [(p.id, p.crc_ok) for p in out] == [(4, False), (3, True)]
    assert out[1].is_status and out[1].error == 0 and out[1].params == b"\x01\x02"


def test_wire_sizes():
    # SYNC_READ of 10 bytes from 18 servos: 14 + 18 instruction bytes, 18 * 21 status bytes.
    assert sync_read_sizes(18, 10) == (32, 378)
    assert sync_write_size(18, 4) == 14 + 18 * 5
    assert sync_read_time_s(18, 10, 1_000_000) == (32 + 378) * 10 / 1e6
    assert sync_read_time_s(1, 4, 1_000_000, return_delay_us=500) == (15 + 15) * 10 / 1e6 + 500e-6
