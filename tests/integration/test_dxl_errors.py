"""Bad input ends in a one-line DuetError naming the thing and the fix."""

import pytest

from duet.clock import FakeClock
from duet.errors import DuetError
from duet.hardware.dynamixel import (
    ModelMismatchError,
    Motor,
    MotorBus,
    PortError,
    ServoNotFoundError,
)
from duet.hardware.mock.fake_dynamixel import FakeDynamixelBus


def _bus(fake, motors, baud=1_000_000, clock=None):
    return MotorBus(
        "/dev/ttyFAKE", baud, motors, label="left_follower", port_handler=fake.port_handler(), clock=clock
    )


def _one_line(err: Exception) -> str:
    msg = str(err)
    assert isinstance(err, DuetError) and "\n" not in msg and msg
    return msg


def test_unknown_model_name_in_config():
    with pytest.raises(ModelMismatchError) as e:
        MotorBus("/dev/ttyFAKE", 1_000_000, [Motor(1, "XM430-W999", "waist")], label="left_follower")
    msg = _one_line(e.value)
    assert "XM430-W999" in msg and "waist" in msg and "XM430-W350" in msg  # lists the known models


def test_wrong_model_on_the_bus():
    clock = FakeClock()
    fake = FakeDynamixelBus({1: "XM430-W350", 2: "XL430-W250"}, clock=clock)
    bus = _bus(fake, [Motor(1, "XM430-W350", "waist"), Motor(2, "XM540-W270", "shoulder")], clock=clock)
    with pytest.raises(ModelMismatchError) as e:
        bus.connect()
    msg = _one_line(e.value)
    assert "shoulder" in msg and "ID 2" in msg and "XM540-W270" in msg and "XL430-W250 (1060)" in msg
    assert not bus.is_connected


def test_unsupported_baud_rate():
    fake = FakeDynamixelBus({1: "XM430-W350"})
    with pytest.raises(PortError) as e:
        _bus(fake, [Motor(1, "XM430-W350", "waist")], baud=1234).connect()
    msg = _one_line(e.value)
    assert "1234" in msg and "1000000" in msg


def test_id_that_does_not_answer():
    clock = FakeClock()
    fake = FakeDynamixelBus({1: "XM430-W350", 2: "XM430-W350"}, clock=clock)
    bus = _bus(
        fake,
        [
            Motor(1, "XM430-W350", "waist"),
            Motor(2, "XM430-W350", "shoulder"),
            Motor(7, "XM430-W350", "gripper"),
        ],
        clock=clock,
    )
    with pytest.raises(ServoNotFoundError) as e:
        bus.connect()
    msg = _one_line(e.value)
    assert "7 (gripper)" in msg and "power" in msg and "ID" in msg and "baud" in msg
    assert e.value.ids == (7,)


def test_wrong_baud_in_process():
    clock = FakeClock()
    fake = FakeDynamixelBus({1: "XM430-W350"}, clock=clock, baudrate=57_600)
    with pytest.raises(ServoNotFoundError, match="baud rate is 1000000"):
        _bus(fake, [Motor(1, "XM430-W350", "waist")], clock=clock).connect()


def test_busy_in_process_port():
    clock = FakeClock()
    fake = FakeDynamixelBus({1: "XM430-W350"}, clock=clock)
    a = _bus(fake, [Motor(1, "XM430-W350", "waist")], clock=clock)
    a.connect()
    with pytest.raises(PortError, match="busy"):
        _bus(fake, [Motor(1, "XM430-W350", "waist")], clock=clock).connect()


def test_duplicate_ids_and_bad_ids_in_config():
    with pytest.raises(DuetError, match="used by both"):
        MotorBus("/dev/x", 1_000_000, [Motor(1, "XM430-W350", "a"), Motor(1, "XM430-W350", "b")])
    with pytest.raises(DuetError, match="outside 0..252"):
        MotorBus("/dev/x", 1_000_000, [Motor(300, "XM430-W350", "a")])
    with pytest.raises(DuetError, match="unknown model"):
        FakeDynamixelBus({1: "AX-12"})
