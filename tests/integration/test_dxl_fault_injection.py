"""Every injected fault produces the documented driver behaviour (in-process port, FakeClock)."""

import pytest

from duet.clock import FakeClock, Pacer
from duet.hardware.dynamixel import BusCommError, Motor, MotorBus, Reg, RetryPolicy, ServoHardwareError
from duet.hardware.mock.fake_dynamixel import FakeDynamixelBus
from duet.hardware.mock.faults import FaultInjector, FaultRule, parse_scenario

NAMES = ["waist", "shoulder", "elbow", "forearm", "wrist", "wrist_rot", "gripper"]
SERVOS = {i + 1: "XM430-W350" for i in range(len(NAMES))}
ALL = ("position", "velocity", "current")


def make(faults, retry=None):
    clock = FakeClock()
    fake = FakeDynamixelBus(SERVOS, clock=clock, faults=faults)
    motors = [Motor(i, m, NAMES[i - 1]) for i, m in SERVOS.items()]
    bus = MotorBus(
        "fake0",
        1_000_000,
        motors,
        label="right_follower",
        retry=retry,
        port_handler=fake.port_handler(),
        clock=clock,
    )
    bus.connect()
    return clock, fake, bus


def test_lost_reply_is_retried_and_counted():
    inj = FaultInjector()
    clock, fake, bus = make(inj)
    inj.add(FaultRule("no_reply", ids=(4,), start_transaction=fake.transactions + 3, count=1))
    for _ in range(10):
        s = bus.sync_read(ALL)
    assert s.values["position"].shape == (7,)
    assert inj.fired["no_reply"] == 1
    assert bus.stats["retries"] == 1 and bus.stats["timeouts"] == 1 and bus.stats["failures"] == 0


def test_persistent_loss_raises_bus_comm_error_naming_arm_and_ids():
    inj = FaultInjector()
    clock, fake, bus = make(inj)
    inj.add(FaultRule("no_reply", ids=(3,), start_transaction=fake.transactions + 3))
    with pytest.raises(BusCommError) as e:
        for _ in range(10):
            bus.sync_read(ALL)
    msg = str(e.value)
    assert "\n" not in msg
    assert "right_follower" in msg and "ID 3 (elbow)" in msg and "failed 3 times" in msg
    assert e.value.arm == "right_follower" and e.value.ids == tuple(SERVOS)
    assert e.value.counters["failures"] == 1 and e.value.counters["timeouts"] == 3
    assert bus.stats["last_error"] == msg


def test_retries_are_bounded_by_the_policy():
    inj = FaultInjector()
    clock, fake, bus = make(inj, retry=RetryPolicy(attempts=5))
    inj.add(FaultRule("no_reply", ids=(2,), start_transaction=fake.transactions + 3))
    with pytest.raises(BusCommError, match="failed 5 times"):
        for _ in range(10):
            bus.sync_read(ALL)
    assert inj.fired["no_reply"] == 5


def test_bad_crc_is_retried():
    inj = FaultInjector()
    clock, fake, bus = make(inj)
    inj.add(FaultRule("bad_crc", ids=(6,), start_transaction=fake.transactions + 3, count=2))
    for _ in range(10):
        bus.sync_read(ALL)
    assert bus.stats["crc_errors"] == 2 and bus.stats["retries"] == 2 and bus.stats["failures"] == 0


def test_overload_raises_servo_hardware_error_naming_joint_and_id():
    clock, fake, bus = make(parse_scenario("overload_gripper_at_2s"))
    bus.set_torque(True)
    pacer = Pacer(50, clock)
    pacer.start()
    with pytest.raises(ServoHardwareError) as e:
        for _ in range(200):
            pacer.wait()
            bus.sync_read(ALL)
    err = e.value
    assert (
        err.flags == {"overload"}
        and err.servo_id == 7
        and err.joint == "gripper"
        and err.arm == "right_follower"
    )
    assert "gripper" in str(err) and "ID 7" in str(err) and "\n" not in str(err)
    assert err.sample is not None and err.sample.values["position"].shape == (7,)
    assert clock.now() - 1000.0 == pytest.approx(2.0, abs=0.05)
    assert bus.stats["hardware_errors"] == 1
    assert bus.torque_enabled([7]) == [False]  # the servo shut down (Shutdown register: overload)
    bus.reboot(7)
    bus.sync_read(ALL)  # cleared


def test_reboot_leaves_torque_off_detectably():
    clock, fake, bus = make(parse_scenario("reboot_at_2s:5"))
    bus.set_torque(True)
    bus.sync_write(Reg.GOAL_POSITION, [2100] * 7)
    clock.advance(2.5)
    bus.sync_read(ALL)  # no error: a reboot is silent on the wire ...
    assert bus.torque_enabled() == [True, True, True, True, False, True, True]  # ... but detectable
    assert fake.servo(5).reboots == 1


def test_latency_still_works_and_stamps_the_arrival():
    clock, fake, bus = make(parse_scenario("slow_bus:5"))
    t0 = clock.now()
    s = bus.sync_read(ALL)
    assert s.stamp == pytest.approx(t0 + 0.005)
    assert bus.stats["retries"] == 0


def test_latency_beyond_the_timeout_fails_cleanly():
    clock, fake, bus = make(parse_scenario("none"), retry=RetryPolicy(attempts=2, timeout_ms=3.0))
    bus.sync_read(ALL)
    fake.faults = parse_scenario("slow_bus:5")
    with pytest.raises(BusCommError, match="failed 2 times"):
        bus.sync_read(ALL)
    assert bus.stats["timeouts"] == 2


@pytest.mark.timeout(60)
def test_one_percent_loss_does_not_stop_a_500_tick_loop():
    clock, fake, bus = make(parse_scenario("lossy_1pct", seed=3))
    bus.set_torque(True)
    pacer = Pacer(50, clock)
    pacer.start()
    for k in range(500):
        pacer.wait()
        s = bus.sync_read(ALL)
        bus.sync_write(Reg.GOAL_POSITION, s.values["position"] + (10 if k % 2 else -10))
    assert fake.faults.fired["no_reply"] > 0
    assert bus.stats["retries"] > 0 and bus.stats["failures"] == 0


def test_timeout_follows_the_adapter_latency_timer():
    """With a known 1 ms latency timer the sync-read timeout is bytes + 2 x 1 ms + 2 ms (here
    ~5 ms for 7 servos), not the SDK's fixed 34 ms: a 3 ms late reply passes, a 7 ms one fails."""
    clock, fake, bus = make(parse_scenario("slow_bus:3"), retry=RetryPolicy(attempts=1))
    bus.latency_timer_ms = 1  # what connect() reads from sysfs for a real FTDI port
    bus.sync_read(ALL)
    fake.faults = parse_scenario("slow_bus:7")
    t0 = clock.now()
    with pytest.raises(BusCommError):
        bus.sync_read(ALL)
    assert clock.now() - t0 == pytest.approx((7 * 21 * 0.01 + 4.0) / 1000, abs=1e-4)
