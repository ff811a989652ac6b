"""MotorBus (real driver on dynamixel_sdk) against the fake bus through the in-process port."""

import numpy as np
import pytest

from duet.clock import FakeClock
from duet.hardware.dynamixel import (
    DynamixelError,
    ModelMismatchError,
    Motor,
    MotorBus,
    OperatingMode,
    Reg,
    ServoHardwareError,
)
from duet.hardware.dynamixel.control_table import VELOCITY_UNIT_RPM
from duet.hardware.mock.fake_dynamixel import FakeDynamixelBus

ARM = {
    1: ("waist", "XM430-W350"),
    2: ("shoulder", "XM540-W270"),
    3: ("elbow", "XM430-W350"),
    4: ("wrist", "XL430-W250"),
    5: ("gripper", "XM430-W350"),
}
ALL = ("position", "velocity", "current")


def make(servos=ARM, **fake_kw):
    clock = FakeClock()
    fake = FakeDynamixelBus({i: m for i, (_, m) in servos.items()}, clock=clock, **fake_kw)
    motors = [Motor(i, m, n) for i, (n, m) in servos.items()]
    bus = MotorBus(
        "fake0", 1_000_000, motors, label="left_follower", port_handler=fake.port_handler(), clock=clock
    )
    bus.connect()
    return clock, fake, bus


def test_sync_read_shapes_types_and_stamp():
    clock, fake, bus = make()
    clock.advance(1.5)
    s = bus.sync_read(ALL)
    assert s.stamp == clock.now()
    assert set(s.values) == set(ALL)
    for v in s.values.values():
        assert v.dtype == np.int64 and v.shape == (5,)
    assert s.values["position"].tolist() == [2048] * 5
    pos_only = bus.sync_read()
    assert list(pos_only.values) == ["position"]
    with pytest.raises(ValueError, match="unknown"):
        bus.sync_read(("torque",))


def test_motion_tracks_goal_at_model_speed_and_profile_velocity():
    clock, fake, bus = make()
    bus.set_torque(True)
    bus.write(Reg.PROFILE_VELOCITY, 3, 50)  # elbow: 50 * 0.229 rpm
    bus.sync_write(Reg.GOAL_POSITION, [3048] * 5)
    clock.advance(0.2)
    s = bus.sync_read(ALL)
    pos, vel = s.values["position"], s.values["velocity"]
    xm430 = 46 / 60 * 4096 * 0.2  # no-load speed over 0.2 s
    assert pos[0] == pytest.approx(2048 + xm430, abs=2)
    assert pos[1] == pytest.approx(2048 + 30 / 60 * 4096 * 0.2, abs=2)  # XM540-W270: 30 rpm
    assert pos[2] == pytest.approx(2048 + 50 * VELOCITY_UNIT_RPM / 60 * 4096 * 0.2, abs=2)
    assert vel[2] == pytest.approx(50, abs=1)
    assert (s.values["current"][[0, 1, 2, 4]] > 0).all()
    clock.advance(2.0)
    s = bus.sync_read(ALL)
    assert s.values["position"].tolist() == [3048] * 5
    assert s.values["velocity"].tolist() == [0] * 5
    assert fake.servo(1).goal_position == 3048 and fake.servo(1).torque_enabled


def test_signed_values_negative_positions_and_velocities():
    clock, fake, bus = make()
    bus.write(Reg.HOMING_OFFSET, 1, -3000)  # EEPROM: torque is off
    bus.set_operating_mode(OperatingMode.EXTENDED_POSITION, ids=[1])  # no 0..4095 goal limits
    bus.set_torque(True, ids=[1])
    s = bus.sync_read(ALL)
    assert s.values["position"][0] == 2048 - 3000
    bus.write(Reg.GOAL_POSITION, 1, -1500)
    clock.advance(0.1)
    s = bus.sync_read(ALL)
    assert s.values["velocity"][0] < 0 and s.values["current"][0] < 0
    assert bus.read(Reg.HOMING_OFFSET, 1) == -3000


def test_torque_off_follows_external_motion():
    clock, fake, bus = make()
    t0 = clock.now()
    fake.set_external_motion(2, lambda t: int(2048 + 1000 * (t - t0)))
    clock.advance(0.5)
    s = bus.sync_read(ALL)
    assert s.values["position"][1] == 2548
    assert s.values["position"][0] == 2048  # the others stay
    assert s.values["velocity"][1] > 0 and s.values["current"][1] == 0


def test_gripper_stalls_on_object_in_current_based_position_mode():
    clock, fake, bus = make()
    bus.set_operating_mode(OperatingMode.CURRENT_BASED_POSITION, ids=[5])
    bus.write(Reg.GOAL_CURRENT, 5, 200)
    bus.set_torque(True, ids=[5])
    fake.place_object(5, 2400)
    bus.write(Reg.GOAL_POSITION, 5, 3000)
    for _ in range(20):
        clock.advance(0.25)
        s = bus.sync_read(ALL)  # 5 s of squeezing: no overload in this mode
    assert s.values["position"][4] == 2400
    assert s.values["current"][4] == 200  # held at the goal current
    fake.place_object(5, None)
    clock.advance(2.0)
    assert bus.sync_read(ALL).values["position"][4] == 3000


def test_stall_in_position_mode_latches_overload():
    clock, fake, bus = make()
    bus.set_torque(True, ids=[5])
    fake.place_object(5, 2300)
    bus.write(Reg.GOAL_POSITION, 5, 3000)
    clock.advance(1.0)
    s = bus.sync_read(ALL)
    assert s.values["current"][4] == 1193  # at the XM430's current limit
    clock.advance(1.5)
    with pytest.raises(ServoHardwareError) as e:
        bus.sync_read(ALL)
    assert e.value.flags == {"overload"} and e.value.servo_id == 5 and e.value.joint == "gripper"
    assert not fake.servo(5).torque_enabled


def test_eeprom_write_with_torque_on_is_refused():
    clock, fake, bus = make()
    bus.set_torque(True)
    with pytest.raises(DynamixelError) as e:
        bus.write(Reg.OPERATING_MODE, 3, int(OperatingMode.VELOCITY))
    msg = str(e.value)
    assert "\n" not in msg and "elbow" in msg and "ID 3" in msg and "torque off" in msg
    assert fake.servo(3).operating_mode == OperatingMode.POSITION


def test_set_operating_mode_restores_torque():
    clock, fake, bus = make()
    bus.set_torque(True, ids=[1, 2])
    bus.set_operating_mode(OperatingMode.EXTENDED_POSITION, ids=[1, 2, 3])
    assert [fake.servo(i).operating_mode for i in (1, 2, 3)] == [4, 4, 4]
    assert bus.torque_enabled([1, 2, 3]) == [True, True, False]
    with pytest.raises(ModelMismatchError, match="XL430-W250 does not support"):
        bus.set_operating_mode(OperatingMode.CURRENT_BASED_POSITION, ids=[4])


def test_goal_outside_position_limits():
    clock, fake, bus = make()
    bus.write(Reg.MAX_POSITION_LIMIT, 1, 3000)
    bus.set_torque(True)
    with pytest.raises(DynamixelError, match="data limit"):
        bus.write(Reg.GOAL_POSITION, 1, 3500)
    bus.sync_write(
        Reg.GOAL_POSITION, [3500, 2100, 2100, 2100, 2100]
    )  # silently ignored by ID 1, like the servo
    assert fake.servo(1).goal_position == 2048 and fake.servo(2).goal_position == 2100


def test_health_and_reboot():
    clock, fake, bus = make()
    bus.set_torque(True)
    fake.servo(3).set_hardware_error({"overheating"})
    health = bus.read_health()
    assert health[3]["hardware_errors"] == ["overheating"] and health[3]["torque"] is False
    assert health[1] == {
        "name": "waist",
        "temperature_c": health[1]["temperature_c"],
        "input_voltage_v": 12.0,
        "hardware_errors": [],
        "torque": True,
    }
    assert 20 <= health[1]["temperature_c"] <= 80
    with pytest.raises(ServoHardwareError, match="overheating"):
        bus.set_torque(True, ids=[3])  # a shut-down servo refuses torque until rebooted
    bus.reboot(3)
    assert fake.servo(3).reboots == 1 and fake.servo(3).hardware_error_flags == frozenset()
    bus.set_torque(True, ids=[3])
    assert bus.torque_enabled([3]) == [True]


def test_hardware_error_at_connect():
    clock = FakeClock()
    fake = FakeDynamixelBus({1: "XM430-W350", 2: "XM430-W350"}, clock=clock)
    fake.servo(2).set_hardware_error({"input_voltage"})
    motors = [Motor(1, "XM430-W350", "a"), Motor(2, "XM430-W350", "b")]
    bus = MotorBus("fake0", 1_000_000, motors, label="arm", port_handler=fake.port_handler(), clock=clock)
    with pytest.raises(ServoHardwareError, match="input_voltage"):
        bus.connect()
    assert not bus.is_connected
    bus.connect(reboot_on_hardware_error=True)
    assert bus.is_connected and fake.servo(2).hardware_error_status == 0


def test_disconnect_is_idempotent_and_guards_use():
    clock, fake, bus = make()
    bus.disconnect()
    bus.disconnect()
    assert not bus.is_connected
    with pytest.raises(DynamixelError, match="not connected"):
        bus.sync_read()
    bus.connect()
    assert bus.sync_read().values["position"].shape == (5,)


def test_one_sync_read_and_one_sync_write_per_tick():
    clock, fake, bus = make()
    before = fake.transactions
    s = bus.sync_read(ALL)
    bus.sync_write(Reg.GOAL_POSITION, s.values["position"])
    assert fake.transactions - before == 2
    assert bus.stats["transactions"] >= 2 and bus.stats["retries"] == 0
