"""Packet codec (hardware/dynamixel/protocol.py) against the e-manual, and what duet's packet
handler (bus.StuffedPacketHandler, dynamixel_sdk with its stuffing replaced) puts on the wire."""

import random

from dynamixel_sdk import COMM_SUCCESS, PacketHandler, PortHandler
from hypothesis import example, given, settings
from hypothesis import strategies as st

from duet.hardware.dynamixel.bus import StuffedPacketHandler
from duet.hardware.dynamixel.protocol import (
    Instruction,
    PacketReader,
    crc16,
    encode_packet,
    instruction_packet,
    is_stuffed,
    status_packet,
    stuff,
    sync_read_sizes,
    sync_read_time_s,
    sync_write_size,
    unstuff,
)

# Bytes rich in the stuffing pattern.
pattern_bytes = st.lists(
    st.sampled_from([0xFF, 0xFD, 0x00, 0x55, 0x01]) | st.integers(0, 255), max_size=80
).map(bytes)


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
    assert is_stuffed(b"\x03\xff\xff\xfd\xfd\x10") and not is_stuffed(b"\x03\xff\xff\xfd\x10")


def test_emanual_stuffing_rule_by_hand():
    # e-manual "Processing Order of Transmission": FF FF FD in INST..PARAMS gets an FD; LEN
    # counts the stuffed bytes; the CRC covers them. WRITE to ID 1, address 0x74, data FF FF FD:
    # INST 03, params 74 00 FF FF FD FD (stuffed) -> LEN = 1 + 6 + 2 = 9.
    head_body = bytes.fromhex("FFFFFD00010900037400FFFFFDFD")
    crc = crc16(head_body)
    expected = head_body + bytes((crc & 0xFF, crc >> 8))
    assert instruction_packet(1, Instruction.WRITE, bytes.fromhex("7400FFFFFD")) == expected


@settings(max_examples=60)
@given(st.integers(0, 252), st.integers(0, 600), pattern_bytes.filter(lambda b: 1 <= len(b) <= 60))
@example(1, 0x74, b"\xff\xff\xfd")  # the SDK sends this one with LEN 8 where the spec says 9
def test_instruction_encoding_matches_spec(dxl_id, address, data):
    """What duet's packet handler puts on the wire for a WRITE is the spec's packet (stuffing,
    LEN and CRC per the e-manual; instruction_packet is checked against it above)."""
    port = _Loopback()
    assert StuffedPacketHandler().writeTxOnly(port, dxl_id, address, len(data), list(data)) == COMM_SUCCESS
    params = address.to_bytes(2, "little") + data
    assert port.written == instruction_packet(dxl_id, Instruction.WRITE, params)
    (pkt,) = PacketReader().feed(port.written)
    assert pkt.crc_ok and pkt.stuffing_ok and pkt.params == params


def test_sdk_tx_stuffing_defect_is_why_duet_has_its_own():
    """dynamixel_sdk 4.1.0 txPacket drops addStuffing's result: the packet goes out unstuffed.
    If this fails after an SDK upgrade, the SDK is fixed and StuffedPacketHandler.txPacket can go."""
    port = _Loopback()
    PacketHandler(2.0).writeTxOnly(port, 1, 0x74, 3, [0xFF, 0xFF, 0xFD])
    assert port.written[5] == 8 and instruction_packet(1, Instruction.WRITE, b"\x74\x00\xff\xff\xfd")[5] == 9
    (pkt,) = PacketReader().feed(port.written)
    assert pkt.crc_ok and not pkt.stuffing_ok


@settings(max_examples=60)
@given(st.integers(0, 252), st.integers(0, 255), pattern_bytes.filter(lambda b: 1 <= len(b) <= 40))
@example(1, 0, b"\xff\xff\xfd\xff\xfd\xfd")  # the SDK's removeStuffing loses an FD here
def test_status_packets_decode_through_duets_handler(dxl_id, error, params):
    """The fake's status packets (with stuffing) are read back by the SDK's rxPacket with duet's
    destuffing."""
    port = _Loopback()
    port.rx.extend(status_packet(dxl_id, error, params))
    port.setPacketTimeoutMillis(1000)
    data, result, err = StuffedPacketHandler().readRx(port, dxl_id, len(params))
    assert result == COMM_SUCCESS
    assert bytes(data) == params and err == error


def test_sdk_rx_destuffing_defect_is_why_duet_has_its_own():
    """dynamixel_sdk 4.1.0 removeStuffing compares against bytes it already shifted. If this
    fails after an SDK upgrade, StuffedPacketHandler.removeStuffing can go."""
    params = b"\xff\xff\xfd\xff\xfd\xfd"
    port = _Loopback()
    port.rx.extend(status_packet(1, 0, params))
    port.setPacketTimeoutMillis(1000)
    data, result, _ = PacketHandler(2.0).readRx(port, 1, len(params))
    assert result == COMM_SUCCESS and bytes(data) != params


@settings(max_examples=50)
@given(
    st.lists(st.tuples(st.integers(0, 253), pattern_bytes), min_size=1, max_size=6),
    st.randoms(use_true_random=False),
)
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


def test_reader_drops_a_partial_packet_after_the_inter_byte_timeout():
    ping = instruction_packet(1, Instruction.PING)
    truncated = b"\xff\xff\xfd\x00\x01\xe8\x03\x03\x74"  # announces LEN 1000
    reader = PacketReader(inter_byte_timeout_s=0.01)
    assert reader.feed(truncated, now=5.0) == []
    assert reader.feed(ping, now=5.005) == [] and reader.pending == len(truncated) + len(
        ping
    )  # no gap: same packet
    (pkt,) = reader.feed(ping, now=5.020)  # gap of 15 ms: the partial packet is dropped first
    assert (
        (pkt.id, pkt.instruction) == (1, Instruction.PING) and reader.timed_out == 1 and reader.pending == 0
    )
    untimed = PacketReader()  # no timeout (or no arrival times): the stream decides alone
    untimed.feed(truncated, now=5.0)
    assert untimed.feed(ping, now=99.0) == []


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
