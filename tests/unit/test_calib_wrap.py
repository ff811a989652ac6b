"""Calibration: ticks <-> joint space, the +-pi wrap, files and their validation."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from duet.errors import ConfigError
from duet.hardware.arm_model import load_arm_model, rad_to_ticks, ticks_to_rad
from duet.hardware.calibration import (
    Calibration,
    CalibrationError,
    JointCalibration,
    JointMap,
    calibration_path,
    port_id,
)
from duet.hardware.rig import ArmSlot, RigConfig

MODEL = load_arm_model("vx300s")
TICK = 2 * math.pi / 4096


def test_ticks_radians_convention():
    assert ticks_to_rad(2048) == 0.0
    assert ticks_to_rad(3072) == pytest.approx(math.pi / 2)
    assert ticks_to_rad(0) == pytest.approx(-math.pi)
    assert rad_to_ticks(0.0) == 2048
    assert rad_to_ticks(-math.pi / 2) == 1024
    t = np.arange(0, 4096)
    np.testing.assert_array_equal(rad_to_ticks(ticks_to_rad(t)), t)


def _calib(zero, sign):
    joints = {j.name: JointCalibration(int(zero), int(sign)) for j in MODEL.joints}
    return Calibration(MODEL.name, joints, 1.49, -0.62)


@settings(max_examples=150, deadline=None)
@given(
    zero=st.integers(0, 4095),
    sign=st.sampled_from([1, -1]),
    a0=st.floats(-3.1, 3.1),
    steps=st.lists(st.floats(-0.5, 0.5), min_size=1, max_size=60),
    single_turn=st.booleans(),
)
def test_unwrap_never_jumps_2pi(zero, sign, a0, steps, single_turn):
    """A joint moving continuously (any zero offset, either sign, across the encoder's
    4095 -> 0 wrap) decodes continuously: no 2*pi jumps, error within half a tick."""
    jm = JointMap(MODEL, _calib(zero, sign))
    true = a0 + np.concatenate([[0.0], np.cumsum(steps)])
    prev = None
    decoded = []
    for a in true:
        t = np.rint(zero + sign * a / TICK)
        if single_turn:
            t = t % 4096  # the register reports one turn only
        ticks = np.full(MODEL.n, t)
        raw = jm.raw_angles(ticks, prev)
        prev = raw
        decoded.append(raw[0])
    decoded = np.array(decoded)
    assert np.all(np.abs(decoded - true) <= TICK / 2 + 1e-9)
    assert np.all(np.abs(np.diff(decoded)) <= np.abs(np.diff(true)) + TICK + 1e-9)


@settings(max_examples=100, deadline=None)
@given(zero=st.integers(0, 4095), sign=st.sampled_from([1, -1]), a=st.floats(-3.1, 3.1))
def test_first_reading_wraps_around_calibrated_zero(zero, sign, a):
    jm = JointMap(MODEL, _calib(zero, sign))
    t = np.rint(zero + sign * a / TICK) % 4096
    raw = jm.raw_angles(np.full(MODEL.n, t))
    assert abs(raw[0] - a) <= TICK / 2 + 1e-9


@settings(max_examples=100, deadline=None)
@given(
    zero=st.integers(600, 3500),
    sign=st.sampled_from([1, -1]),
    u=st.lists(st.floats(0.0, 1.0), min_size=7, max_size=7),
)
def test_position_ticks_round_trip(zero, sign, u):
    jm = JointMap(MODEL, _calib(zero, sign))
    pos = MODEL.lower + np.array(u) * (MODEL.upper - MODEL.lower)
    ticks = jm.to_ticks(pos)
    assert ticks.dtype == np.int64
    assert np.all((ticks >= 0) & (ticks <= 4095))
    back = jm.from_ticks_exact(ticks, near=pos)
    # within half a tick where no clipping to the single-turn range happened
    unclipped = np.abs(jm.zero + jm.sign * jm.to_raw(pos) / TICK - ticks) <= 0.5 + 1e-9
    span = np.ones(MODEL.n)
    span[-1] = abs(jm.g_span)
    err = np.abs(back - pos) * span
    assert np.all(err[unclipped] <= TICK / 2 + 1e-9)


def test_gripper_normalization_both_ends():
    cal = Calibration.nominal_for(MODEL)
    jm = JointMap(MODEL, cal)
    raw = np.zeros(MODEL.n)
    raw[-1] = cal.gripper_open
    assert jm.to_position(raw)[-1] == pytest.approx(1.0)
    raw[-1] = cal.gripper_closed
    assert jm.to_position(raw)[-1] == pytest.approx(0.0)
    pos = np.zeros(MODEL.n)
    pos[-1] = 1.0
    assert jm.to_raw(pos)[-1] == pytest.approx(cal.gripper_open)
    # Leader gripper: open angle below closed (wx250s) still maps open -> 1.
    leader = load_arm_model("wx250s")
    lj = JointMap(leader, Calibration.nominal_for(leader))
    raw = np.zeros(leader.n)
    raw[-1] = -0.8
    assert lj.to_position(raw)[-1] == pytest.approx(1.0)
    raw[-1] = -1.65
    assert lj.to_position(raw)[-1] == pytest.approx(0.0)


def test_nominal_calibration():
    cal = Calibration.nominal_for(MODEL)
    assert cal.nominal
    assert set(cal.joints) == set(MODEL.joint_names)
    assert all(c.zero_ticks == 2048 and c.sign == 1 for c in cal.joints.values())
    assert (cal.gripper_open, cal.gripper_closed) == (1.4910, -0.6213)


def test_from_measurements_and_file_round_trip(tmp_path):
    zero = np.array([2000, 2100, 1990, 2048, 3000, 100, 1234])
    cal = Calibration.from_measurements(
        MODEL, zero, gripper_open_ticks=3020, gripper_closed_ticks=1640, port_id="usb-X"
    )
    assert cal.joints["waist"].zero_ticks == 2000
    assert cal.joints["gripper"].zero_ticks == 2048  # gripper keeps the servo's own center
    assert cal.gripper_open == pytest.approx((3020 - 2048) * TICK)
    path = cal.save(tmp_path / "sub" / "usb-X.json")
    loaded = Calibration.load(path, MODEL)
    assert loaded.joints == cal.joints
    assert loaded.gripper_open == pytest.approx(cal.gripper_open)
    assert loaded.port_id == "usb-X"
    assert not loaded.nominal


def test_gripper_not_moved_is_rejected():
    with pytest.raises(CalibrationError, match="open and closed readings are the same"):
        Calibration.from_measurements(MODEL, np.full(7, 2048), 2050, 2049)


def _write(tmp_path, mutate):
    data = Calibration.nominal_for(MODEL).to_json()
    mutate(data)
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(data))
    return p


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda d: d["joints"].pop("wrist_angle"),
            "joint 'wrist_angle' missing .6 joints calibrated, model has 7",
        ),
        (
            lambda d: d["joints"].update(extra={"zero_ticks": 1, "sign": 1}),
            "joint 'extra' is not in arm model",
        ),
        (lambda d: d["joints"]["elbow"].update(zero_ticks=5000), "joint 'elbow': zero_ticks 5000"),
        (lambda d: d["joints"]["elbow"].update(sign=2), "joint 'elbow': sign 2"),
        (lambda d: d.update(arm_model="wx250s"), "made for arm model 'wx250s'"),
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.update(format="x"), "not a duet arm calibration"),
        (lambda d: d["gripper"].update(open_rad=d["gripper"]["closed_rad"]), "must differ"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, mutate, match):
    p = _write(tmp_path, mutate)
    with pytest.raises(CalibrationError, match=match) as e:
        Calibration.load(p, MODEL, fix="run `duet calibrate --rig aloha --arm x`")
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "duet calibrate --rig aloha --arm x" in msg
    assert isinstance(e.value, ConfigError)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CalibrationError, match="no calibration file"):
        Calibration.load(tmp_path / "nope.json", MODEL)
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(CalibrationError, match="unreadable"):
        Calibration.load(p, MODEL)


def test_port_id_and_paths(tmp_path):
    by_id = "/dev/serial/by-id/usb-FTDI_USB__-__Serial_Converter_FT6Z5ABC-if00-port0"
    assert port_id(by_id) == "usb-FTDI_USB__-__Serial_Converter_FT6Z5ABC-if00-port0"
    assert port_id("", fallback="left_leader") == "left_leader"
    rig = RigConfig(
        calibration_dir=str(tmp_path), arms=[ArmSlot(name="a", role="leader", model="wx250s", port=by_id)]
    )
    slot = rig.arms[0]
    assert calibration_path(rig, slot) == tmp_path / (port_id(by_id) + ".json")
    assert calibration_path(rig, slot, mock=True) == tmp_path / "mock" / (port_id(by_id) + ".json")
    slot.calibration = "custom.json"
    assert calibration_path(rig, slot) == tmp_path / "custom.json"
