"""The nodes take their rate from the rig: rate_hz 0 (the default of every node's rate_hz
field and of launch/params/*.yaml) = the rig's control_rate_hz, through RigConfig.resolve_rate.
In-process nodes (own rclpy context) over a rig YAML at 30 Hz with mock hardware; the
checks read the loops' configured periods, never a measured rate."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from duet.hardware.rig import rig_path  # noqa: E402
from duet_ros.arm_node import ArmNode  # noqa: E402
from duet_ros.recorder_node import RecorderNode  # noqa: E402
from duet_ros.teleop_node import TeleopNode  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture
def rig30(tmp_path):
    text = rig_path("aloha").read_text()
    assert "control_rate_hz: 50.0" in text
    path = tmp_path / "aloha30.yaml"
    path.write_text(text.replace("control_rate_hz: 50.0", "control_rate_hz: 30.0"))
    return str(path)


@pytest.fixture
def context(ros_domain):
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        rclpy.shutdown(context=ctx)


def _make(cls, ctx, **params):
    return cls(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("override, hz", [(0.0, 30.0), (25.0, 25.0)])
def test_teleop_arm_and_recorder_nodes_tick_at_the_rigs_rate_unless_overridden(
    rig30, context, tmp_path, override, hz
):
    common = {"rig": rig30, "use_mock_hardware": True}
    nodes = []
    try:
        teleop = _make(TeleopNode, context, **common, **{"teleop.rate_hz": override})
        nodes.append(teleop)
        assert teleop.core.cfg.rate_hz == hz and teleop.rate.target_hz == hz
        assert teleop._loop.pacer.period == pytest.approx(1 / hz)

        arm = _make(ArmNode, context, **common, arm="left_follower", rate_hz=override)
        nodes.append(arm)
        assert arm.rate_hz == hz and arm._loop is not None and arm._loop.pacer.period == pytest.approx(1 / hz)

        recorder = _make(RecorderNode, context, **common, dataset=str(tmp_path / "d.zarr"), rate_hz=override)
        nodes.append(recorder)
        assert recorder.spec.rate_hz == hz and recorder._loop.pacer.period == pytest.approx(1 / hz)
    finally:
        for node in reversed(nodes):
            node.close()
            node.destroy_node()
