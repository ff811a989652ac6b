"""The wire between MotorBus and the fake bus: byte stuffing on the way out (dynamixel_sdk 4.1.0
sends packets that need stuffing unstuffed), CRC-error status packets, and the servos'
inter-byte timeout after a truncated packet. In-process port, FakeClock."""

import pytest

from duet.clock import FakeClock
from duet.hardware.dynamixel import BusCommError, Motor, MotorBus, OperatingMode, Reg
from duet.hardware.dynamixel.errors import InstructionCrcError
from duet.hardware.dynamixel.protocol import HEADER, Instruction, crc16, instruction_packet
from duet.hardware.mock.fake_dynamixel import FakeDynamixelBus, FakePortHandler

SERVOS = {1: ("waist", "XM430-W350"), 2: ("shoulder", "XM540-W270"), 3: ("elbow", "XM430-W350")}
BAUD = 1_000_000
# Goal Position -131073 is FF FF FD FF on the wire: a packet header inside the parameters.
HEADER_VALUE = -131073
assert Reg.GOAL_POSITION.encode(HEADER_VALUE) == b"\xff\xff\xfd\xff"


class NoisyPort(FakePortHandler):
    """The in-process port with line noise on the way to the servos: the next `corrupt`
    instruction packets arrive with a flipped CRC bit."""

    def __init__(self, bus: FakeDynamixelBus, corrupt: int = 0):
        super().__init__(bus, "noisy")
        self.corrupt = corrupt

    def writePort(self, packet):
        data = bytearray(packet)
        if self.corrupt and self.is_open:
            self.corrupt -= 1
            data[-1] ^= 0x01
        return super().writePort(bytes(data))


def make(port_cls=FakePortHandler, retry=None):
    clock = FakeClock()
    fake = FakeDynamixelBus({i: m for i, (_, m) in SERVOS.items()}, clock=clock)
    port = port_cls(fake)
    motors = [Motor(i, m, n) for i, (n, m) in SERVOS.items()]
    bus = MotorBus("fake0", BAUD, motors, label="left_follower", port_handler=port, clock=clock, retry=retry)
    bus.connect()
    return clock, fake, bus, port


# ---------------------------------------------------------------------------- byte stuffing


def test_sync_write_with_a_header_in_the_params_reaches_the_fake_intact():
    clock, fake, bus, _ = make()
    bus.set_operating_mode(OperatingMode.EXTENDED_POSITION)
    bus.sync_write(Reg.GOAL_POSITION, [HEADER_VALUE, 2048, HEADER_VALUE])
    assert [fake.servo(i).goal_position for i in SERVOS] == [HEADER_VALUE, 2048, HEADER_VALUE]
    assert fake.counters["bad_stuffing"] == 0


def test_write_and_read_back_a_value_that_needs_stuffing():
    clock, fake, bus, _ = make()
    bus.set_operating_mode(OperatingMode.EXTENDED_POSITION, ids=[2])
    bus.write(Reg.GOAL_POSITION, 2, HEADER_VALUE)
    assert fake.servo(2).goal_position == HEADER_VALUE
    # The status packet carries FF FF FD FF too (stuffed by the fake, destuffed on reading).
    assert bus.read(Reg.GOAL_POSITION, 2) == HEADER_VALUE
    assert bus.sync_read_register(Reg.GOAL_POSITION, [2, 1]).tolist() == [HEADER_VALUE, 2048]
    assert fake.counters["bad_stuffing"] == 0 and bus.stats["failures"] == 0


def test_fake_ignores_an_unstuffed_header_inside_a_packet():
    """What dynamixel_sdk 4.1.0 sends for that sync write: LEN and CRC of the unstuffed bytes."""
    clock = FakeClock()
    fake = FakeDynamixelBus({1: "XM430-W350"}, clock=clock)
    fake.servo(1).set(Reg.OPERATING_MODE, int(OperatingMode.EXTENDED_POSITION))
    params = (
        Reg.GOAL_POSITION.address.to_bytes(2, "little") + (4).to_bytes(2, "little") + b"\x01\xff\xff\xfd\xff"
    )
    good = instruction_packet(0xFE, Instruction.SYNC_WRITE, params)
    body = bytes((Instruction.SYNC_WRITE,)) + params
    head = HEADER + bytes((0xFE, len(body) + 2, 0))
    crc = crc16(head + body)
    unstuffed = head + body + bytes((crc & 0xFF, crc >> 8))
    assert len(unstuffed) == len(good) - 1
    assert fake._receive(fake._new_reader(), unstuffed, BAUD) == []
    assert fake.counters["bad_stuffing"] == 1 and fake.servo(1).goal_position == 2048
    fake._receive(fake._new_reader(), good, BAUD)
    assert fake.servo(1).goal_position == HEADER_VALUE


# ---------------------------------------------------------------------------- CRC-error status


def test_crc_error_status_is_retried_and_counted():
    clock, fake, bus, port = make(NoisyPort)
    port.corrupt = 1
    assert bus.read(Reg.PRESENT_POSITION, 2) == 2048
    port.corrupt = 2
    bus.write(Reg.LED, 3, 1)
    assert fake.servo(3).get(Reg.LED) == 1
    port.corrupt = 1
    assert bus.ping(1) == 1020
    assert fake.counters["bad_instruction_crc"] == 4
    st = bus.stats
    assert st["instruction_crc_errors"] == 4 and st["crc_errors"] == 4
    assert st["retries"] == 4 and st["failures"] == 0 and st["timeouts"] == 0


def test_persistent_crc_error_status_raises_a_typed_one_line_error():
    clock, fake, bus, port = make(NoisyPort)
    port.corrupt = 3
    with pytest.raises(InstructionCrcError) as e:
        bus.read(Reg.PRESENT_POSITION, 3)
    assert isinstance(e.value, BusCommError)
    msg = str(e.value)
    assert "\n" not in msg
    assert "left_follower" in msg and "ID 3 (elbow)" in msg and "CRC error" in msg and "failed 3 times" in msg
    assert e.value.ids == (3,) and e.value.counters["instruction_crc_errors"] == 3


# ---------------------------------------------------------------------------- inter-byte timeout

TRUNCATED = HEADER + bytes((1, 1000 & 0xFF, 1000 >> 8, Instruction.WRITE, 0x41, 0x00))  # announces 1000 bytes


def test_pings_after_a_truncated_long_packet_are_answered():
    clock = FakeClock()
    fake = FakeDynamixelBus({1: "XM430-W350"}, clock=clock)
    reader = fake._new_reader()
    assert fake._receive(reader, TRUNCATED, BAUD) == []
    answered = 0
    for _ in range(100):  # 100 pings = 1000 bytes: all swallowed by a receiver without a timeout
        clock.advance(0.034)  # one ping per SDK status timeout (16 ms latency timer)
        answered += len(fake._receive(reader, instruction_packet(1, Instruction.PING), BAUD))
    assert answered == 100
    assert fake.counters["inter_byte_timeouts"] == 1


def test_bytes_without_a_gap_stay_in_the_packet():
    clock = FakeClock()
    fake = FakeDynamixelBus({1: "XM430-W350"}, clock=clock)
    reader = fake._new_reader()
    ping = instruction_packet(1, Instruction.PING)
    fake._receive(reader, TRUNCATED, BAUD)
    clock.advance(fake.inter_byte_timeout_s * 0.5)
    assert fake._receive(reader, ping, BAUD) == []  # part of the long packet, as on a real bus
    clock.advance(fake.inter_byte_timeout_s * 1.5)
    assert len(fake._receive(reader, ping, BAUD)) == 1


def test_motor_bus_recovers_from_a_truncated_packet_with_one_retry():
    clock, fake, bus, port = make()
    port.writePort(TRUNCATED)  # e.g. a write cut off on the wire
    assert bus.ping(1) == 1020  # first try swallowed; the retry comes after the inter-byte timeout
    assert bus.stats["timeouts"] == 1 and bus.stats["retries"] == 1 and bus.stats["failures"] == 0
    assert fake.counters["inter_byte_timeouts"] == 1
