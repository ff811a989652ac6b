"""The rig URDF (duet.hardware.urdf): it parses into one tree rooted at world, its joints carry
the arm models' limits and the JointState names the arms publish, and its forward kinematics
matches the MuJoCo sim's follower bodies and cameras (bench/bench_urdf_fk.py prints the figures)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from duet.config import from_dict
from duet.errors import ConfigError
from duet.hardware.arm_model import ARMS, load_arm_model
from duet.hardware.rig import RigConfig, load_rig
from duet.hardware.urdf import (
    WORLD,
    RobotState,
    arms_without_kinematics,
    compare_with_sim,
    joint_name,
    optical_frame,
    parse_urdf,
    rig_urdf,
)
from duet.resources import shipped_dir

RIGS = ("aloha", "aloha_sim")
# The URDF copies the MuJoCo model's numbers, so FK agrees to rounding; the camera pitch is
# stored rounded to 1e-4 rad (0.0057 deg).
POSITION_TOL_M = 1e-6
ROTATION_TOL_DEG = 1e-3
CAMERA_AXIS_TOL_DEG = 0.01


@pytest.mark.parametrize("rig_name", RIGS)
def test_urdf_parses_into_one_tree(rig_name):
    rig = load_rig(rig_name)
    text = rig_urdf(rig)
    root = ET.fromstring(text)
    assert root.tag == "robot" and root.get("name") == rig.name
    links = [el.get("name") for el in root.findall("link")]
    assert len(links) == len(set(links))
    joints = parse_urdf(text)
    children = [j.child for j in joints]
    assert len(children) == len(set(children)), "a link with two parents"
    assert set(children) | {WORLD} == set(links)
    assert all(j.parent in links for j in joints)
    poses = RobotState(text).forward_kinematics({})  # raises when a frame hangs off the tree
    assert set(poses) == set(links)
    for arm in rig.arms:
        assert arm.name in links  # the JointState frame_id
    for cam in rig.cameras:
        assert cam.name in links and optical_frame(cam.name) in links


@pytest.mark.parametrize("rig_name", RIGS)
def test_joints_carry_the_arm_models_limits_and_the_jointstate_names(rig_name):
    from duet.hardware.factory import make_arm

    rig = load_rig(rig_name)
    by_name = {j.name: j for j in parse_urdf(rig_urdf(rig))}
    for slot in rig.arms:
        model = load_arm_model(slot.model)
        names = make_arm(rig, slot.name, use_mock=True).features.joint_names  # what the arm node publishes
        assert names == model.joint_names
        for joint in model.joints:
            j = by_name[joint_name(slot.name, joint.name)]
            assert j.type == "revolute"
            assert (j.lower, j.upper) == pytest.approx((joint.lower, joint.upper), abs=1e-9)
        mimics = [
            j for j in by_name.values() if j.mimic and j.mimic.joint == joint_name(slot.name, "gripper")
        ]
        assert len(mimics) == 2  # the fingers follow the gripper
    arm_joints = {joint_name(a.name, n) for a in rig.arms for n in load_arm_model(a.model).joint_names}
    moving = {j.name for j in by_name.values() if j.type != "fixed" and j.mimic is None}
    assert moving == arm_joints  # every moving joint is driven by some arm's JointState


def test_fk_matches_the_mujoco_sim():
    r = compare_with_sim(load_rig("aloha_sim"), configurations=200, seed=1)
    assert r.bodies == 18 and r.cameras == 3
    assert r.max_position_error_m < POSITION_TOL_M
    assert r.max_rotation_error_deg < ROTATION_TOL_DEG
    assert r.max_camera_axis_error_deg < CAMERA_AXIS_TOL_DEG


def test_moving_transforms_follow_the_joint_positions():
    rig = load_rig("aloha_sim")
    state = RobotState(rig_urdf(rig))
    wrist = joint_name("left_follower", "wrist_rotate")
    (edge,) = [
        t for t in state.moving_transforms({wrist: np.pi / 2}, {wrist}) if t.child.endswith("gripper_link")
    ]
    assert edge.quat_xyzw == pytest.approx((np.sqrt(0.5), 0.0, 0.0, np.sqrt(0.5)))
    grip = joint_name("left_follower", "gripper")
    fingers = {t.child: t.xyz[1] for t in state.moving_transforms({grip: 1.0}, {grip}) if "finger" in t.child}
    assert fingers == pytest.approx(
        {"left_follower_left_finger_link": 0.058, "left_follower_right_finger_link": -0.058}
    )


def test_missing_kinematics_and_bad_mounts_are_one_line_errors(tmp_path):
    bare = tmp_path / "bare.yaml"
    text = (shipped_dir(ARMS) / "wx250s.yaml").read_text()
    bare.write_text(text.replace("    origin_xyz: [0, 0, 0.072]\n", ""))
    arm = {"name": "left_leader", "role": "leader", "model": str(bare)}
    rig = from_dict(RigConfig, {"name": "r", "arms": [arm]})
    with pytest.raises(ConfigError, match="waist.*origin_xyz") as e:
        rig_urdf(rig)
    assert "\n" not in str(e.value)
    cams = [{"name": "cam_left_wrist", "mount": "left_leader"}, {"name": "cam_high"}]
    rig = from_dict(RigConfig, {"name": "r", "arms": [arm], "cameras": cams})
    assert arms_without_kinematics(rig) == ["left_leader"]
    joints = parse_urdf(rig_urdf(rig, strict=False))  # the node's choice: the base frame only
    assert {j.child for j in joints} == {"left_leader", "cam_high", optical_frame("cam_high")}
    with pytest.raises(ConfigError, match="camera 'cam_x' rides arm 'nope', which the rig lacks"):
        rig_urdf(from_dict(RigConfig, {"name": "r", "cameras": [{"name": "cam_x", "mount": "nope"}]}))
    with pytest.raises(ConfigError, match="base_xyz needs 3"):
        from_dict(RigConfig, {"name": "r", "arms": [{**arm, "model": "wx250s", "base_xyz": [1]}]})
