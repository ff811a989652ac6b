"""The fake bus as a Protocol 2.0 device, driven with plain dynamixel_sdk calls (and MotorBus
where the behaviour is the driver's): instructions, access rules, operating modes."""

import threading

import pytest
from dynamixel_sdk import COMM_RX_TIMEOUT, COMM_SUCCESS, GroupBulkRead, GroupBulkWrite, PacketHandler

from duet.clock import FakeClock, MonotonicClock
from duet.hardware.dynamixel import Motor, MotorBus, OperatingMode, Reg, ServoHardwareError
from duet.hardware.dynamixel.protocol import (
    Instruction,
    PacketReader,
    instruction_packet,
    sync_read_sizes,
    wire_time_s,
)
from duet.hardware.mock.fake_dynamixel import FakeDynamixelBus

SERVOS = {1: "XM430-W350", 2: "XL430-W250", 3: "XM540-W270"}


@pytest.fixture
def sdk():
    clock = FakeClock()
    fake = FakeDynamixelBus(SERVOS, clock=clock)
    ph = fake.port_handler()
    assert ph.openPort()
    return clock, fake, ph, PacketHandler(2.0)


def test_ping_and_broadcast_ping(sdk):
    clock, fake, ph, pkt = sdk
    assert pkt.ping(ph, 2)[:2] == (1060, COMM_SUCCESS)
    assert pkt.ping(ph, 9)[1] == COMM_RX_TIMEOUT
    found, code = pkt.broadcastPing(ph)
    assert code == COMM_SUCCESS
    assert {i: v[0] for i, v in found.items()} == {1: 1020, 2: 1060, 3: 1120}


def test_bulk_read(sdk):
    clock, fake, ph, pkt = sdk
    g = GroupBulkRead(ph, pkt)
    assert g.addParam(1, Reg.PRESENT_POSITION.address, 4) and g.addParam(3, Reg.MODEL_NUMBER.address, 2)
    assert g.txRxPacket() == COMM_SUCCESS
    assert g.getData(1, Reg.PRESENT_POSITION.address, 4) == 2048
    assert g.getData(3, Reg.MODEL_NUMBER.address, 2) == 1120


def test_bulk_write_and_broadcast_write(sdk):
    clock, fake, ph, pkt = sdk
    g = GroupBulkWrite(ph, pkt)
    assert g.addParam(1, Reg.LED.address, 1, [1]) and g.addParam(
        3, Reg.PROFILE_VELOCITY.address, 4, [9, 0, 0, 0]
    )
    assert g.txPacket() == COMM_SUCCESS
    assert fake.servo(1).get(Reg.LED) == 1 and fake.servo(3).get(Reg.PROFILE_VELOCITY) == 9
    assert pkt.write1ByteTxOnly(ph, 0xFE, Reg.LED.address, 1) == COMM_SUCCESS  # broadcast: no reply
    assert [fake.servo(i).get(Reg.LED) for i in SERVOS] == [1, 1, 1]


def test_access_rules(sdk):
    clock, fake, ph, pkt = sdk
    assert pkt.write2ByteTxRx(ph, 1, Reg.MODEL_NUMBER.address, 5) == (COMM_SUCCESS, 7)  # read-only
    assert pkt.write2ByteTxRx(ph, 2, Reg.GOAL_CURRENT.address, 5) == (COMM_SUCCESS, 7)  # XL430: no current
    assert pkt.write1ByteTxRx(ph, 1, Reg.OPERATING_MODE.address, 2) == (COMM_SUCCESS, 4)  # no mode 2
    assert pkt.write1ByteTxRx(ph, 2, Reg.OPERATING_MODE.address, 5) == (COMM_SUCCESS, 4)  # XL430: no mode 5
    assert pkt.write1ByteTxRx(ph, 1, Reg.TORQUE_ENABLE.address, 1) == (COMM_SUCCESS, 0)
    assert pkt.write4ByteTxRx(ph, 1, Reg.HOMING_OFFSET.address, 10) == (COMM_SUCCESS, 7)  # EEPROM, torque on
    assert pkt.readTxRx(ph, 1, 140, 10)[1:] == (COMM_SUCCESS, 7)  # past the table
    assert fake.servo(1).get(Reg.HOMING_OFFSET) == 0


def test_reg_write_action_reboot_and_factory_reset(sdk):
    clock, fake, ph, pkt = sdk
    assert pkt.regWriteTxRx(ph, 1, Reg.LED.address, 1, [1]) == (COMM_SUCCESS, 0)
    assert fake.servo(1).get(Reg.LED) == 0 and fake.servo(1).get(Reg.REGISTERED_INSTRUCTION) == 1
    assert pkt.action(ph, 1) == COMM_SUCCESS
    assert fake.servo(1).get(Reg.LED) == 1
    pkt.write1ByteTxRx(ph, 1, Reg.TORQUE_ENABLE.address, 1)
    assert pkt.factoryReset(ph, 1, 0x02) == (COMM_SUCCESS, 7)  # refused with torque on
    assert pkt.reboot(ph, 1) == (COMM_SUCCESS, 0)
    s = fake.servo(1)
    assert s.reboots == 1 and not s.torque_enabled and s.get(Reg.LED) == 0
    pkt.write1ByteTxRx(ph, 1, Reg.RETURN_DELAY_TIME.address, 0)
    assert pkt.factoryReset(ph, 1, 0x02) == (COMM_SUCCESS, 0)
    assert s.get(Reg.RETURN_DELAY_TIME) == 250 and s.id == 1 and s.baudrate == 1_000_000


def test_id_change_and_status_return_level(sdk):
    clock, fake, ph, pkt = sdk
    assert pkt.write1ByteTxRx(ph, 2, Reg.ID.address, 7) == (COMM_SUCCESS, 0)
    assert fake.ids == [1, 3, 7] and pkt.ping(ph, 7)[:2] == (1060, COMM_SUCCESS)
    pkt.write1ByteTxRx(ph, 1, Reg.STATUS_RETURN_LEVEL.address, 1)  # replies to PING and READ only
    assert pkt.write1ByteTxRx(ph, 1, Reg.LED.address, 1)[0] == COMM_RX_TIMEOUT
    assert fake.servo(1).get(Reg.LED) == 1  # executed, just silent
    assert pkt.read1ByteTxRx(ph, 1, Reg.LED.address)[:2] == (1, COMM_SUCCESS)


def test_unknown_instruction_and_corrupt_instruction(sdk):
    clock, fake, ph, pkt = sdk
    reader = PacketReader()
    replies = fake._receive(reader, instruction_packet(1, 0x77), 1_000_000)
    (status,) = reader.feed(replies[0][1]) if replies else ()
    assert status.error == 2  # instruction error
    bad = bytearray(instruction_packet(1, Instruction.PING))
    bad[-1] ^= 1
    (reply,) = fake._receive(PacketReader(), bytes(bad), 1_000_000)
    (status,) = PacketReader().feed(reply[1])
    assert (status.id, status.error, status.params) == (1, 3, b"")  # e-manual: error 3, CRC error
    bad_broadcast = bytearray(instruction_packet(0xFE, Instruction.PING))
    bad_broadcast[-1] ^= 1
    assert fake._receive(PacketReader(), bytes(bad_broadcast), 1_000_000) == []  # nobody answers
    assert fake.counters["bad_instruction_crc"] == 2


def _bus(fake, clock):
    motors = [Motor(i, m, f"j{i}") for i, m in SERVOS.items()]
    bus = MotorBus("fake", 1_000_000, motors, label="arm", port_handler=fake.port_handler(), clock=clock)
    bus.connect()
    return bus


def test_velocity_current_and_pwm_modes():
    clock = FakeClock()
    fake = FakeDynamixelBus(SERVOS, clock=clock)
    bus = _bus(fake, clock)
    bus.set_operating_mode(OperatingMode.VELOCITY, ids=[1])
    bus.set_operating_mode(OperatingMode.CURRENT, ids=[3])
    bus.set_operating_mode(OperatingMode.PWM, ids=[2])
    bus.write(Reg.GOAL_VELOCITY, 1, -100)  # -22.9 rpm
    bus.write(Reg.GOAL_CURRENT, 3, 500)
    bus.write(Reg.GOAL_PWM, 2, 442)  # half duty
    bus.set_torque(True)
    clock.advance(0.5)
    s = bus.sync_read(("position", "velocity", "current"))
    assert s.values["position"][0] == pytest.approx(2048 - 100 * 0.229 / 60 * 4096 * 0.5, abs=2)
    assert s.values["velocity"][0] == -100
    assert s.values["current"][2] == 500 and s.values["velocity"][2] > 0
    assert s.values["velocity"][1] == pytest.approx(61 / 0.229 / 2, rel=0.02)  # half the no-load speed
    assert s.values["current"][1] > 0  # XL430: Present Load, 0.1 % units


def test_xl430_reports_load_not_current():
    clock = FakeClock()
    fake = FakeDynamixelBus({1: "XL430-W250"}, clock=clock)
    bus = MotorBus(
        "fake", 1_000_000, [Motor(1, "XL430-W250", "gripper")], port_handler=fake.port_handler(), clock=clock
    )
    bus.connect()
    bus.set_torque(True)
    fake.place_object(1, 2100)
    bus.write(Reg.GOAL_POSITION, 1, 2500)
    clock.advance(1.0)
    load = bus.sync_read(("current",)).values["current"][0]
    assert load == 1000  # 100.0 % of the maximum torque while pressing


def test_simulated_wire_time_delays_the_sample():
    clock = FakeClock()
    fake = FakeDynamixelBus(SERVOS, clock=clock, simulate_wire_time=True)
    bus = _bus(fake, clock)
    for i in SERVOS:
        bus.write(Reg.RETURN_DELAY_TIME, i, 0)
    t0 = clock.now()
    s = bus.sync_read(("position", "velocity", "current"))
    tx, rx = sync_read_sizes(3, 10)
    assert s.stamp - t0 == pytest.approx(wire_time_s(tx + rx, 1_000_000), rel=1e-6)


def test_hardware_alert_on_write_raises():
    clock = FakeClock()
    fake = FakeDynamixelBus(SERVOS, clock=clock)
    bus = _bus(fake, clock)
    fake.servo(3).set_hardware_error({"electrical_shock"})
    with pytest.raises(ServoHardwareError, match="electrical_shock") as e:
        bus.write(Reg.LED, 3, 1)
    assert e.value.servo_id == 3 and e.value.joint == "j3"


@pytest.mark.timeout(60)
def test_health_reads_from_another_thread_do_not_interleave():
    fake = FakeDynamixelBus(SERVOS, clock=MonotonicClock())
    bus = _bus(fake, MonotonicClock())
    errors = []

    def health():
        try:
            for _ in range(100):
                assert set(bus.read_health()) == set(SERVOS)
        except Exception as e:  # surfaced below
            errors.append(e)

    t = threading.Thread(target=health)
    t.start()
    for _ in range(300):
        bus.sync_read(("position", "velocity", "current"))
    t.join()
    assert not errors and bus.stats["failures"] == 0 and bus.stats["retries"] == 0
