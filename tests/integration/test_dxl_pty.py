"""The unmodified dynamixel_sdk.PortHandler on a pseudo-terminal served by the fake bus."""

import time

import pytest

from duet.hardware.dynamixel import (
    Motor,
    MotorBus,
    PortError,
    Reg,
    ServoNotFoundError,
)
from duet.hardware.mock.fake_dynamixel import FakeDynamixelBus
from duet.hardware.mock.faults import parse_scenario

SERVOS = {1: "XM430-W350", 2: "XM430-W350", 3: "XL430-W250"}
MOTORS = [
    Motor(1, "XM430-W350", "shoulder"),
    Motor(2, "XM430-W350", "elbow"),
    Motor(3, "XL430-W250", "gripper"),
]


@pytest.fixture
def served():
    fake = FakeDynamixelBus(SERVOS, faults=parse_scenario("slow_bus:1"))
    path = fake.serve_pty()
    yield fake, path
    fake.close()


@pytest.mark.timeout(30)
def test_loop_over_pty(served):
    fake, path = served
    bus = MotorBus(path, 1_000_000, MOTORS, label="left_leader")
    bus.connect()
    try:
        bus.set_torque(True)
        bus.sync_write(Reg.GOAL_POSITION, [2200, 2300, 2400])
        for _ in range(30):
            s = bus.sync_read(("position", "velocity", "current"))
            bus.sync_write(Reg.GOAL_POSITION, [2200, 2300, 2400])
        assert s.values["position"].shape == (3,)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and s.values["position"].tolist() != [2200, 2300, 2400]:
            s = bus.sync_read(("position", "velocity", "current"))
        assert s.values["position"].tolist() == [2200, 2300, 2400]
        assert fake.servo(2).goal_position == 2300
        assert bus.read(Reg.MODEL_NUMBER, 3) == 1060
        assert bus.stats["failures"] == 0
    finally:
        bus.disconnect()


@pytest.mark.timeout(30)
def test_busy_port(served):
    fake, path = served
    first = MotorBus(path, 1_000_000, MOTORS, label="left_leader")
    first.connect()
    try:
        with pytest.raises(PortError, match="busy") as e:
            MotorBus(path, 1_000_000, MOTORS, label="left_leader_again").connect()
        assert "\n" not in str(e.value) and path in str(e.value)
    finally:
        first.disconnect()
    second = MotorBus(path, 1_000_000, MOTORS, label="left_leader_again")
    second.connect()  # free again after disconnect
    second.disconnect()


@pytest.mark.timeout(30)
def test_wrong_baud_rate_finds_no_servo(served):
    fake, path = served
    bus = MotorBus(
        path,
        57_600,
        MOTORS,
        label="left_leader",
    )
    with pytest.raises(ServoNotFoundError) as e:
        bus.connect()
    msg = str(e.value)
    assert "no servo answered" in msg and "57600" in msg and "baud" in msg and "\n" not in msg
    assert not bus.is_connected


def test_missing_port_path(tmp_path):
    bus = MotorBus(str(tmp_path / "ttyUSB9"), 1_000_000, MOTORS, label="left_leader")
    with pytest.raises(PortError, match="not found") as e:
        bus.connect()
    assert "left_leader" in str(e.value) and "/dev/serial/by-id" in str(e.value)
