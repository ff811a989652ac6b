"""DynamixelArm against the wire-level fake bus, in-process, on a fake clock."""

import numpy as np
import pytest

from duet.clock import FakeClock, MonotonicClock
from duet.hardware.arm_model import load_arm_model
from duet.hardware.calibration import Calibration, JointCalibration, JointMap
from duet.hardware.dynamixel.arm import DynamixelArm, ShadowMismatchError
from duet.hardware.dynamixel.bus import Motor, MotorBus
from duet.hardware.dynamixel.control_table import OperatingMode, Reg
from duet.hardware.dynamixel.errors import PortError, ServoHardwareError
from duet.hardware.factory import make_arm, make_fake_bus
from duet.hardware.interfaces import Arm
from duet.hardware.mock.motions import make_motion
from duet.hardware.rig import ArmSlot, RigConfig, load_rig
from duet.hardware.safety import UnsafeCommandError

pytestmark = pytest.mark.timeout(60)
DT = 0.02
TICK = 2 * np.pi / 4096


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def rig(tmp_path):
    return load_rig("aloha", [f"calibration_dir={tmp_path}"])


def _arm(rig, name, clock, **slot_changes):
    for k, v in slot_changes.items():
        setattr(rig.arm(name), k, v)
    return make_arm(rig, name, use_mock=True, clock=clock)


def _run(clock, arm, target, ticks):
    sent = None
    for _ in range(ticks):
        clock.advance(DT)
        arm.read()
        sent = arm.write(target)
    return sent


def test_is_an_arm_and_describes_itself_disconnected(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    assert isinstance(arm, Arm)
    f = arm.features
    assert f.name == "left_follower" and f.role == "follower" and f.joint_names[-1] == "gripper"
    assert f.max_step.shape == (7,) and np.all(f.max_step > 0)
    assert not arm.is_connected


def test_follower_connect_configures_and_holds(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    fake = arm.fake_bus
    before = {sid: fake.servo(sid).present_position for sid in fake.ids}
    arm.connect()
    try:
        model = arm.model
        for sid in fake.ids:
            s = fake.servo(sid)
            assert s.torque_enabled
            assert s.goal_position == before[sid]  # holds where it was: no jump
            assert s.get(Reg.RETURN_DELAY_TIME) == 0
        g = fake.servo(model.gripper.primary)
        assert g.operating_mode == OperatingMode.CURRENT_BASED_POSITION
        assert g.get(Reg.CURRENT_LIMIT) == round(800 / 2.69)
        assert fake.servo(1).operating_mode == OperatingMode.POSITION
        assert fake.servo(2).get(Reg.DRIVE_MODE) & 1 == 1 and fake.servo(3).get(Reg.DRIVE_MODE) & 1 == 0
        state = arm.read()
        np.testing.assert_allclose(state.position[:-1], [0, -0.96, 1.16, 0, -0.3, 0], atol=TICK)
        np.testing.assert_allclose(arm.last_command, state.position, atol=1e-9)
        assert state.stamp == clock.now()
    finally:
        arm.disconnect()


def test_write_round_trip_shadows_written_and_never_fighting(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    fake = arm.fake_bus
    arm.connect()
    try:
        start = arm.read().position
        target = start + np.array([0.05, 0.06, -0.05, 0.1, -0.1, 0.1, 0.1])
        sent = arm.write(target)
        np.testing.assert_allclose(sent, target, atol=TICK)  # within step and limits: sent as asked
        jm = JointMap(arm.model, Calibration.nominal_for(arm.model))
        ticks = jm.to_ticks(sent)
        for j in arm.model.joints:
            for sid in j.ids:  # one sync write set every servo of the joint, shadows included
                assert fake.servo(sid).goal_position == ticks[j.index]
        for _ in range(30):
            clock.advance(DT)
            state = arm.read()
        np.testing.assert_allclose(state.position, sent, atol=2 * TICK)
        for j in arm.model.joints:
            if not j.shadows:
                continue
            prim = fake.servo(j.primary)
            for sid in j.shadows:
                sh = fake.servo(sid)
                assert sh.present_position == prim.present_position  # same axis position
                # mirror-mounted: the shafts turn opposite ways in the servos' own frames,
                # so neither pushes against the other: both settle at holding current.
                assert sh._pos == -prim._pos or prim._pos == -sh._pos
                assert abs(sh.present_current) * 2.69 < 100 and abs(prim.present_current) * 2.69 < 100
    finally:
        arm.disconnect()


def test_follower_tracks_a_commanded_pose_step_limited(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    arm.connect()
    try:
        start = arm.read().position
        target = np.array([0.8, -0.2, 0.5, -0.7, 0.6, 1.0, 1.0])
        prev = start
        for _ in range(150):
            clock.advance(DT)
            arm.read()
            sent = arm.write(target)
            assert np.all(np.abs(sent - prev) <= arm.features.max_step + 1e-9)
            prev = sent
        np.testing.assert_allclose(sent, target, atol=TICK)
        for _ in range(20):
            clock.advance(DT)
            state = arm.read()
        np.testing.assert_allclose(state.position[:-1], target[:-1], atol=0.01)
        assert state.position[-1] == pytest.approx(1.0, abs=0.01)
    finally:
        arm.disconnect()


def test_gripper_normalization_both_ends(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    fake = arm.fake_bus
    arm.connect()
    try:
        pose = arm.read().position
        g = arm.model.gripper.primary
        for value, raw in ((1.0, 1.4910), (0.0, -0.6213)):
            target = pose.copy()
            target[-1] = value
            _run(clock, arm, target, 40)
            goal_rad = (fake.servo(g).goal_position - 2048) * TICK
            assert goal_rad == pytest.approx(raw, abs=TICK)
            state = arm.read()
            assert state.position[-1] == pytest.approx(value, abs=0.005)
            assert state.gripper_raw == pytest.approx(raw, abs=2 * TICK)
        # beyond the range: clamped to 0..1, and the write says so
        target[-1] = 1.7
        sent = _run(clock, arm, target, 40)
        assert sent[-1] == pytest.approx(1.0, abs=1e-3)
    finally:
        arm.disconnect()


def test_gripper_squeezes_an_object_with_bounded_current(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    fake = arm.fake_bus
    arm.connect()
    try:
        pose = arm.read().position
        g = arm.model.gripper.primary
        fake.place_object(g, 2048 + int(0.4 / TICK))  # an object between open and closed
        pose[-1] = 0.0
        _run(clock, arm, pose, 100)  # squeeze for 2 s: current-based position mode, no overload
        state = arm.read()
        limit_ma = round(800 / 2.69) * 2.69
        assert 0.45 < state.position[-1] < 0.55  # stopped at the object
        assert abs(state.effort[-1]) == pytest.approx(limit_ma, rel=0.01)
        assert not fake.servo(g).hardware_error_flags
    finally:
        arm.disconnect()


def test_unsafe_commands_rejected_servos_keep_their_goal(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    fake = arm.fake_bus
    arm.connect()
    try:
        goals = {sid: fake.servo(sid).goal_position for sid in fake.ids}
        bad = arm.read().position
        bad[3] = np.nan
        with pytest.raises(UnsafeCommandError, match="forearm_roll is nan"):
            arm.write(bad)
        with pytest.raises(UnsafeCommandError):
            arm.write(np.zeros(6))
        assert {sid: fake.servo(sid).goal_position for sid in fake.ids} == goals
        far = np.full(7, 10.0)
        sent = arm.write(far)  # clamped and step-limited; the return value says what was sent
        assert np.all(sent <= arm.features.upper + 1e-9)
        assert np.all(np.abs(sent - arm.last_command) < 1e-12)
    finally:
        arm.disconnect()


def test_leader_is_torque_off_and_follows_its_scripted_motion(rig, clock):
    t0 = clock.now()
    arm = _arm(rig, "left_leader", clock)
    fake = arm.fake_bus
    arm.connect()
    try:
        assert not any(fake.servo(sid).torque_enabled for sid in fake.ids)
        expected = make_motion("wave", arm.model, t0=t0)
        seen = []
        for _ in range(250):  # 5 s
            clock.advance(DT)
            state = arm.read()
            want = expected(clock.now())
            np.testing.assert_allclose(state.position[:-1], want[:-1], atol=TICK)
            assert state.position[-1] == pytest.approx(want[-1], abs=0.01)
            assert np.all(state.position >= arm.features.lower - 0.005)
            assert np.all(state.position <= arm.features.upper + 0.005)
            seen.append(state.position)
        seen = np.array(seen)
        assert np.all(np.ptp(seen[:, :-1], axis=0) > 0.1)  # every joint moved
        assert seen[:, -1].min() < 0.02 and seen[:, -1].max() > 0.98  # gripper: whole range
        assert np.max(np.abs(np.diff(seen, axis=0))) < 0.1  # smooth
        vel = arm.read().velocity
        assert np.any(np.abs(vel) > 0.01)
    finally:
        arm.disconnect()


def test_motion_is_deterministic_from_the_clock(rig):
    c1, c2 = FakeClock(50.0), FakeClock(50.0)
    a, b = _arm(rig, "right_leader", c1), _arm(rig, "right_leader", c2)
    a.connect()
    b.connect()
    try:
        for _ in range(20):
            c1.advance(0.05)
            c2.advance(0.05)
            np.testing.assert_array_equal(a.read().position, b.read().position)
    finally:
        a.disconnect()
        b.disconnect()


def test_disconnect_torque_off_is_idempotent_and_releases_the_port(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    fake = arm.fake_bus
    arm.connect()
    arm.disconnect()
    arm.disconnect()
    assert not arm.is_connected
    assert not any(fake.servo(sid).torque_enabled for sid in fake.ids)
    arm.connect()  # the port was released: connects again
    assert arm.is_connected
    arm.disconnect()


def test_disconnect_hold_keeps_torque(rig, clock):
    arm = _arm(rig, "left_follower", clock, on_disconnect="hold")
    fake = arm.fake_bus
    arm.connect()
    arm.disconnect()
    assert all(fake.servo(sid).torque_enabled for sid in fake.ids)


def test_set_torque_holds_present_pose(rig, clock):
    arm = _arm(rig, "left_leader", clock)
    fake = arm.fake_bus
    arm.connect()
    try:
        for _ in range(25):
            clock.advance(DT)
            arm.read()
        pose = arm.read().position
        arm.set_torque(True)
        for sid in fake.ids:
            s = fake.servo(sid)
            assert s.torque_enabled and s.goal_position == s.present_position
        np.testing.assert_allclose(arm.last_command, pose, atol=2 * TICK)
        arm.set_torque(False)
        assert not any(fake.servo(sid).torque_enabled for sid in fake.ids)
    finally:
        arm.disconnect()


def test_port_busy_one_line(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    arm.connect()
    try:
        other = MotorBus(
            "fake",
            1_000_000,
            [Motor(1, "XM540-W270", "waist")],
            label="intruder",
            port_handler=arm.fake_bus.port_handler(),
            clock=clock,
        )
        with pytest.raises(PortError, match="busy") as e:
            other.connect()
        assert "\n" not in str(e.value)
    finally:
        arm.disconnect()


def test_shadow_off_its_primary_is_refused(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    arm.fake_bus.servo(5).set_present_position(arm.fake_bus.servo(4).present_position + 600)
    with pytest.raises(ShadowMismatchError, match="joint 'elbow': shadow ID 5") as e:
        arm.connect()
    assert "\n" not in str(e.value)
    assert not arm.is_connected and not arm.bus.is_connected


def test_hardware_error_propagates_with_arm_and_joint(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    arm.connect()
    try:
        arm.fake_bus.servo(9).set_hardware_error({"overload"})
        with pytest.raises(ServoHardwareError) as e:
            arm.read()
        assert e.value.arm == "left_follower" and e.value.joint == "gripper" and e.value.servo_id == 9
        assert "overload" in str(e.value)
        h = arm.health()
        assert h["servos"]["9"]["hardware_errors"] == ["overload"]
    finally:
        arm.disconnect()


def test_health_is_rate_limited(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    arm.connect()
    try:
        h1 = arm.health()
        assert h1["servos"]["1"]["input_voltage_v"] == pytest.approx(12.0)
        n = arm.bus.stats["transactions"]
        clock.advance(0.5)
        h2 = arm.health()
        assert arm.bus.stats["transactions"] == n  # cached: no bus traffic
        assert h2["servos_age_s"] == pytest.approx(0.5)
        clock.advance(0.6)
        arm.health()
        assert arm.bus.stats["transactions"] > n
        arm.read()
        import json

        h = arm.health()
        json.dumps(h)  # plain JSON-able values
        assert h["shadow_error_ticks"] == 0
    finally:
        arm.disconnect()


def test_custom_calibration_offsets_and_signs(tmp_path, clock):
    model = load_arm_model("vx300s")
    joints = {j.name: JointCalibration(2048, 1) for j in model.joints}
    joints["waist"] = JointCalibration(2148, -1)  # zero 100 ticks off, reversed
    cal = Calibration(model.name, joints, 1.3, -0.5)
    path = cal.save(tmp_path / "cal.json")
    slot = ArmSlot(name="f", role="follower", model="vx300s")
    rig = RigConfig(arms=[slot], calibration_dir=str(tmp_path))
    fake = make_fake_bus(model, slot, clock)
    bus = MotorBus(
        "fake",
        1_000_000,
        [Motor(s, m, n) for s, m, n in model.servos],
        label="f",
        port_handler=fake.port_handler(),
        clock=clock,
    )
    arm = DynamixelArm("f", "follower", model, bus, calibration_path=path, clock=clock)
    arm.connect()
    try:
        assert arm.read().position[0] == pytest.approx(-(2048 - 2148) * TICK)
        fake.servo(1).set_present_position(2148 - 512)
        assert arm.read().position[0] == pytest.approx(512 * TICK)
    finally:
        arm.disconnect()
    del rig


def test_lossy_bus_is_retried_not_fatal(rig):
    # Real time: a lost status packet costs the SDK's real timeout (~35 ms) before the retry.
    arm = _arm(rig, "left_follower", MonotonicClock(), fault_scenario="lossy_10pct")
    arm.connect()
    try:
        pose = arm.read().position
        for k in range(60):
            arm.read()
            arm.write(pose + 0.2 * np.sin(k / 20.0))
        stats = arm.health()["bus"]
        assert stats["retries"] > 0 and stats["failures"] == 0
    finally:
        arm.disconnect()


def test_reconnect_of_a_holding_follower_never_drops_torque(rig, clock):
    arm = _arm(rig, "left_follower", clock, on_disconnect="hold")
    arm.connect()
    arm.disconnect()  # left holding
    calls = []
    original = arm.bus.set_torque
    arm.bus.set_torque = lambda enabled, ids=None: (calls.append(enabled), original(enabled, ids))[1]
    arm.connect()  # configuration already right: nothing to write, torque stays on
    try:
        assert False not in calls
        assert all(arm.fake_bus.servo(sid).torque_enabled for sid in arm.fake_bus.ids)
    finally:
        arm.disconnect()


def test_misconfigured_servo_is_fixed_at_connect(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    fake = arm.fake_bus
    fake.servo(9).set(Reg.OPERATING_MODE, int(OperatingMode.POSITION))
    fake.servo(6).set(Reg.RETURN_DELAY_TIME, 250)
    fake.servo(1).set(Reg.TORQUE_ENABLE, 1)  # EEPROM needs torque off: the arm handles it
    arm.connect()
    try:
        assert fake.servo(9).operating_mode == OperatingMode.CURRENT_BASED_POSITION
        assert fake.servo(6).get(Reg.RETURN_DELAY_TIME) == 0
        assert arm.torque_enabled
    finally:
        arm.disconnect()


def test_drive_mode_comes_from_the_model(rig, clock):
    # A shadow whose Drive Mode bit was flipped (e.g. by Dynamixel Wizard) is put back to the
    # model's before anything is measured or written, so it cannot fight its primary.
    arm = _arm(rig, "left_follower", clock)
    arm.fake_bus.servo(3).set(Reg.DRIVE_MODE, 1)
    arm.connect()
    try:
        assert arm.fake_bus.servo(3).get(Reg.DRIVE_MODE) == 0
        assert arm.health()["shadow_error_ticks"] == 0 if arm.read() else False
    finally:
        arm.disconnect()


def test_disconnect_with_a_latched_overload_still_reaches_torque_off(rig, clock, caplog):
    arm = _arm(rig, "left_follower", clock)
    arm.connect()
    fake = arm.fake_bus
    fake.servo(9).set_hardware_error({"overload"})  # the gripper shuts down; every status packet alerts
    with pytest.raises(ServoHardwareError):
        arm.read()
    arm.disconnect()  # the configured safe state (torque_off) is reached despite the alert
    assert not any(fake.servo(s).torque_enabled for s in fake.ids)
    assert not arm.is_connected and not arm.bus.is_connected
    assert "could not reach" not in caplog.text


def test_a_safe_state_that_cannot_be_reached_is_an_error(rig, clock):
    from duet.hardware.dynamixel.errors import DynamixelError
    from duet.hardware.mock.faults import FaultInjector, FaultRule

    arm = _arm(rig, "left_follower", clock)
    arm.connect()
    arm.fake_bus.faults = FaultInjector([FaultRule("no_reply", target="all")])  # the bus went dead
    with pytest.raises(DynamixelError, match="left_follower.*could not reach its safe state") as e:
        arm.disconnect()
    assert "\n" not in str(e.value)
    assert not arm.is_connected and not arm.bus.is_connected  # the port is released all the same
    arm.disconnect()  # idempotent


def test_hardware_error_is_the_arm_fault_until_a_clean_read(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    arm.connect()
    try:
        assert arm.fault == ""
        arm.fake_bus.servo(9).set_hardware_error({"overload"})
        with pytest.raises(ServoHardwareError):
            arm.read()
        assert "ID 9" in arm.fault and "overload" in arm.fault and "left_follower" in arm.fault
        arm.bus.reboot(9)  # clears the latched error (torque comes back off)
        arm.read()
        assert arm.fault == ""
    finally:
        arm.disconnect()


def test_restore_torque_after_a_brown_out_holds_the_present_pose(rig, clock):
    arm = _arm(rig, "left_follower", clock)
    arm.connect()
    try:
        fake = arm.fake_bus
        assert arm.restore_torque() == ""  # all on: nothing to do
        clock.advance(DT)
        for s in fake.ids:
            fake.servo(s).reboot(clock.now())
        for s in (4, 5):  # the elbow sagged (primary and shadow, register frames)
            fake.servo(s).set_present_position(fake.servo(s).present_position + 150)
        assert not any(fake.servo(s).torque_enabled for s in fake.ids)
        msg = arm.restore_torque()
        assert "left_follower" in msg and "torque" in msg and "IDs 1-9" in msg
        assert all(fake.servo(s).torque_enabled for s in fake.ids)
        for s in fake.ids:  # holding where it is, not jumping back to the old goal
            assert abs(fake.servo(s).goal_position - fake.servo(s).present_position) <= 1
        assert arm.restore_torque() == ""
    finally:
        arm.disconnect()
