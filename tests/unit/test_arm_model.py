"""Arm models: shipped configs and the loader's one-line errors."""

import math

import pytest
import yaml

from duet.errors import ConfigError
from duet.hardware.arm_model import load_arm_model, shipped_arm_models


def test_shipped_models():
    assert {"vx300s", "wx250s"} <= set(shipped_arm_models())
    vx = load_arm_model("vx300s")
    assert vx.joint_names == (
        "waist",
        "shoulder",
        "elbow",
        "forearm_roll",
        "wrist_angle",
        "wrist_rotate",
        "gripper",
    )
    assert [j.ids for j in vx.joints] == [(1,), (2, 3), (4, 5), (6,), (7,), (8,), (9,)]
    assert vx.servo_models[1] == "XM540-W270" and vx.servo_models[9] == "XM430-W350"
    assert (
        vx.gripper.is_gripper
        and vx.gripper.mode == "current_based_position"
        and vx.gripper.current_limit_ma > 0
    )
    # Interbotix drive modes: the ViperX primaries of shoulder / elbow are reversed, shadows not.
    assert vx.joint_of("shoulder").reverse == (True, False)
    wx = load_arm_model("wx250s")
    assert len(wx.servos) == 9 and wx.servo_models[8] == "XL430-W250"
    assert wx.joint_of("elbow").reverse == (False, True)
    assert wx.gripper.mode == "position"
    for m in (vx, wx):
        assert all(-math.pi - 1e-3 <= lo < hi <= math.pi + 1e-3 for lo, hi in zip(m.lower, m.upper))
        assert (m.lower[-1], m.upper[-1]) == (0.0, 1.0)


BASE = {
    "name": "tiny",
    "joints": [
        {"name": "pan", "servos": [{"id": 1, "model": "XM430-W350"}], "lower": -1.0, "upper": 1.0},
        {
            "name": "tilt",
            "servos": [{"id": 2, "model": "xm430-w350"}, {"id": 3, "model": "XM430-W350", "reverse": True}],
            "lower": -1.0,
            "upper": 1.0,
        },
    ],
    "gripper": {"servos": [{"id": 4, "model": "XL430-W250"}], "open": 0.5, "closed": -0.5},
}


def _write(tmp_path, data):
    p = tmp_path / "arm.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_custom_arm_from_yaml(tmp_path):
    m = load_arm_model(str(_write(tmp_path, BASE)))
    assert m.joint_names == ("pan", "tilt", "gripper")
    assert m.joint_of("tilt").shadows == (3,)
    assert [s[2] for s in m.servos] == ["pan", "tilt", "tilt_shadow", "gripper"]


def _variant(path_fn):
    import copy

    d = copy.deepcopy(BASE)
    path_fn(d)
    return d


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda d: d["joints"][0]["servos"][0].update(model="XM999-W1"),
            "joint 'pan': unknown servo model 'XM999-W1'",
        ),
        (
            lambda d: d["joints"][1]["servos"][1].update(id=1),
            "joint 'tilt': servo ID 1 is already used by joint 'pan'",
        ),
        (lambda d: d["joints"][0].update(lower=2.0), "joint 'pan': needs lower < upper"),
        (lambda d: d["joints"][0].update(upper=4.0), "joint 'pan': limits must lie within -pi..pi"),
        (
            lambda d: d["gripper"].update(mode="current_based_position"),
            "joint 'gripper': XL430-W250 has no current",
        ),
        (
            lambda d: d["joints"][1]["servos"][1].update(model="XM540-W270"),
            "joint 'tilt': shadow servos must be",
        ),
        (lambda d: d["joints"][0].update(servos=[]), "joint 'pan': no servos"),
        (lambda d: d["joints"][1].update(name="pan"), "joint 'pan': joint name used twice"),
        (lambda d: d["gripper"].update(open=-0.5), "joint 'gripper': open and closed"),
        (lambda d: d["joints"][0].update(max_velocity=0), "joint 'pan': max_velocity"),
        (lambda d: d["joints"][0]["servos"][0].update(id=300), "servo ID 300 outside"),
        (lambda d: d.update(home=[0.0]), "home has 1 values for 2 arm joints"),
        (lambda d: d["joints"][0].update(typo=1), "unknown key 'typo'"),
        (lambda d: d.pop("gripper"), "missing required key 'gripper'"),
    ],
)
def test_bad_models_one_line_error_names_file_and_joint(tmp_path, mutate, match):
    p = _write(tmp_path, _variant(mutate))
    with pytest.raises(ConfigError, match=match) as e:
        load_arm_model(str(p))
    assert "\n" not in str(e.value)
    assert str(p) in str(e.value)


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="not a shipped model .*vx300s"):
        load_arm_model("nope")
    with pytest.raises(ConfigError, match="not found"):
        load_arm_model("/nonexistent/arm.yaml")
