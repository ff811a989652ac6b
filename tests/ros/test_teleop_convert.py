"""duet_ros.convert (all message conversion) and parameter declaration from dataclasses,
in-process (message types and one rclpy node; no other processes)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from duet.errors import ConfigError
from duet.hardware.interfaces import Frame, JointState
from duet_ros import convert

pytestmark = pytest.mark.ros

NAMES = ("waist", "shoulder", "gripper")


def test_time_mapping_round_trip_and_wall_clock():
    m = convert.TimeMapper()
    mono = time.monotonic()
    stamp = m.to_msg(mono)
    assert abs((stamp.sec + stamp.nanosec * 1e-9) - time.time()) < 0.01  # header stamps are wall-clock
    assert m.from_msg(stamp) == pytest.approx(mono, abs=2e-9)
    other = convert.TimeMapper()  # another process's mapper agrees to within microseconds
    assert other.from_msg(stamp) == pytest.approx(mono, abs=1e-4)


def test_joint_state_and_command_conversion():
    m = convert.TimeMapper()
    s = JointState(
        100.25, NAMES, np.array([0.1, -0.2, 0.7]), np.array([1.0, 2.0, 3.0]), np.array([5.0, 6.0, 7.0])
    )
    msg = convert.joint_state_to_msg(s, m, "left_leader")
    back = convert.msg_to_joint_state(msg, m)
    assert back.names == NAMES and back.stamp == pytest.approx(100.25, abs=1e-6)
    np.testing.assert_allclose(back.position, s.position)
    np.testing.assert_allclose(back.effort, s.effort)

    cmd = convert.command_to_msg(NAMES, np.array([0.3, 0.2, 0.1]), 50.5, m)
    pos, stamp = convert.msg_to_command(cmd, m, NAMES)
    np.testing.assert_allclose(pos, [0.3, 0.2, 0.1])
    assert stamp == pytest.approx(50.5, abs=1e-6)
    cmd.name = ["gripper", "waist", "shoulder"]  # reordered names: mapped by name
    cmd.position = [0.9, 0.1, 0.2]
    pos, _ = convert.msg_to_command(cmd, m, NAMES)
    np.testing.assert_allclose(pos, [0.1, 0.2, 0.9])
    cmd.name = ["a", "b", "c"]
    with pytest.raises(ValueError, match="do not match"):
        convert.msg_to_command(cmd, m, NAMES)


def test_images_jpeg_and_raw():
    m = convert.TimeMapper()
    rng = np.random.default_rng(0)
    color = np.zeros((480, 640, 3), np.uint8)
    color[:, :320, 0] = 200  # red left half (RGB), blue right half
    color[:, 320:, 2] = 200
    color += rng.integers(0, 5, color.shape, dtype=np.uint8)
    frame = Frame(stamp=12.5, index=3, color=color)
    msg = convert.frame_to_compressed(frame, m, "cam_high", quality=90)
    assert msg.format.startswith("rgb8; jpeg") and msg.header.frame_id == "cam_high"
    assert len(msg.data) < color.nbytes / 10
    img = convert.compressed_to_array(msg)
    assert np.abs(img.astype(int) - color.astype(int)).mean() < 4  # colours kept (RGB, not BGR)
    assert m.from_msg(msg.header.stamp) == pytest.approx(12.5, abs=1e-6)  # capture time, not publish time
    passthrough = convert.frame_to_compressed(Frame(1.0, 1, color, jpeg=b"\xff\xd8abc"), m, "c")
    assert bytes(passthrough.data) == b"\xff\xd8abc"
    raw = convert.frame_to_image(frame, m, "cam_high")
    np.testing.assert_array_equal(convert.image_to_array(raw), color)


def test_diagnostics_flattening():
    st = convert.diagnostic_status(
        "duet/arm/x",
        "port",
        convert.WARN,
        "holding",
        {"rate_hz": 49.98765, "bus": {"retries": 3}, "temps": [30.5, 31.0], "ok": True},
    )
    values = convert.diagnostic_values(st)
    assert values == {"rate_hz": "49.9877", "bus.retries": "3", "temps": "30.5, 31", "ok": "True"}
    arr = convert.diagnostic_array([st], 1.0, convert.TimeMapper())
    assert arr.status[0].level == convert.WARN


@pytest.fixture
def node_factory():
    import rclpy
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    if not rclpy.ok():
        rclpy.init()
    nodes = []

    def make(**overrides):
        n = Node(
            f"param_test_{len(nodes)}",
            parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
        )
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.destroy_node()


def test_parameters_declared_from_the_dataclasses(node_factory):
    from duet_ros.configs import ArmNodeConfig, TeleopNodeConfig
    from duet_ros.params import declare_config

    n = node_factory(arm="left_follower", command_max_age_s=0.2)
    cfg = declare_config(n, ArmNodeConfig)
    assert cfg.arm == "left_follower" and cfg.command_max_age_s == 0.2 and cfg.rig == "aloha"
    desc = n.describe_parameter("command_max_age_s")
    assert "never applied" in desc.description  # the dataclass help string

    n = node_factory(
        **{
            "teleop.gesture.hold_s": 1.5,
            "inputs": ["keyboard"],
            "teleop.pairs": '[{"leader": "left_leader", "follower": "left_follower", "gripper_scale": 0.5}]',
        }
    )
    cfg = declare_config(n, TeleopNodeConfig)
    assert cfg.teleop.gesture.hold_s == 1.5 and cfg.inputs == ["keyboard"]
    assert cfg.teleop.pairs[0].gripper_scale == 0.5
    assert n.has_parameter("teleop.ramp_speed")

    from rclpy.parameter import Parameter

    result = n.set_parameters([Parameter("teleop.ramp_speed", value=2.0)])[0]
    assert not result.successful and "restart" in result.reason
    with pytest.raises(ConfigError, match="'arm' is required"):
        declare_config(node_factory(), ArmNodeConfig)
    with pytest.raises(ConfigError, match="command_max_age_s"):
        declare_config(node_factory(arm="x", command_max_age_s="soon"), ArmNodeConfig)
