"""State publisher node: the rig's robot description and TF (robot_state_publisher's job, for
environments without it: the ros-jazzy-* wheels have no robot_state_publisher, tf2 or
tf2_msgs).

Publishes   /robot_description        std_msgs/String, latched: the URDF of
                                      duet.hardware.urdf.rig_urdf(rig)
            TF, from the URDF's fixed joints once (static) and from each arm's
            /<arm>/joint_states (the moving joints, stamped with the JointState's stamp):
              with tf2_msgs (a system ROS 2):  /tf_static (latched) and /tf, tf2_msgs/TFMessage
              without it (the wheels):         /duet/tf_static (latched, one edge per message)
                                               and /duet/tf, geometry_msgs/TransformStamped
Subscribes  /<arm>/joint_states       sensor_msgs/JointState, every arm of the rig

Frames: world, <arm> (the arms' JointState frame_id), <arm>_<link>, <camera> and
<camera>_optical_frame (the cameras' image frame_id); duet.hardware.urdf names them.
"""

from __future__ import annotations

from dataclasses import dataclass

from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState as JointStateMsg
from std_msgs.msg import String

from duet.clock import MonotonicClock
from duet.config import field
from duet.errors import ConfigError
from duet.hardware.rig import load_rig
from duet.hardware.urdf import RobotState, arms_without_kinematics, rig_urdf
from duet_ros import convert
from duet_ros.arm_node import STATE_QOS
from duet_ros.params import declare_config
from duet_ros.runtime import LATCHED, latched_qos, run_node

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


@dataclass
class StatePublisherNodeConfig:
    rig: str = field("aloha", help="rig: a shipped rig name or a rig YAML path (its URDF is published)")
    use_mock_hardware: bool = field(False, help="unused: the description is the same for every backend")
    arms: list[str] = field(
        factory=list, help="arms whose joint states move the TF; empty = every arm of the rig"
    )


class StatePublisherNode(Node):
    def __init__(self):
        super().__init__("state_publisher")
        self.cfg = declare_config(self, StatePublisherNodeConfig)
        rig = load_rig(self.cfg.rig)
        arms = self.cfg.arms or [a.name for a in rig.arms]
        for a in arms:
            rig.arm(a)  # one-line error for an unknown arm
        # An arm model without kinematics (a custom arm YAML) leaves that arm's chain out, with
        # a warning, rather than the whole description.
        self.urdf = rig_urdf(rig, strict=False)
        bare = arms_without_kinematics(rig)
        arms = [a for a in arms if a not in bare]
        for a in bare:
            self.get_logger().warning(
                f"arm {a}: its model {rig.arm(a).model!r} has no kinematics (origin_xyz, axis per joint); "
                "TF has its base frame only: add them to the arm YAML (see hardware/configs/arms/vx300s.yaml)"
            )
        self.state = RobotState(self.urdf)
        self.mapper = convert.TimeMapper()
        self.pub_description = self.create_publisher(String, "/robot_description", LATCHED)
        self.pub_description.publish(convert.string_msg(self.urdf))
        static = self.state.static_transforms()
        stamp = self.mapper.to_msg(MonotonicClock().now())
        self.tf2 = convert.TFMessage is not None
        if self.tf2:
            self.pub_static = self.create_publisher(convert.TFMessage, "/tf_static", LATCHED)
            self.pub_tf = self.create_publisher(convert.TFMessage, "/tf", TF_QOS)
            self.pub_static.publish(convert.tf_message(static, stamp))
        else:
            self.pub_static = self.create_publisher(
                TransformStamped, "/duet/tf_static", latched_qos(len(static))
            )
            self.pub_tf = self.create_publisher(TransformStamped, "/duet/tf", TF_QOS)
            for t in static:
                self.pub_static.publish(convert.transform_to_msg(t, stamp))
        self._warned: set[str] = set()
        self.subs = [
            self.create_subscription(
                JointStateMsg, f"/{a}/joint_states", lambda m, a=a: self._on_joint_state(a, m), STATE_QOS
            )
            for a in arms
        ]
        self.get_logger().info(
            f"rig {rig.name}: {len(self.state.frames)} frames, {len(static)} static edges; "
            f"TF on {'/tf' if self.tf2 else '/duet/tf (no tf2_msgs here)'}"
        )

    def _on_joint_state(self, arm: str, msg: JointStateMsg) -> None:
        try:
            edges = self.state.arm_transforms(arm, list(msg.name), list(msg.position))
        except ConfigError as e:
            if arm not in self._warned:  # once per arm: a wrong rig would flood the log
                self._warned.add(arm)
                self.get_logger().warning(str(e))
            return
        if self.tf2:
            self.pub_tf.publish(convert.tf_message(edges, msg.header.stamp))
        else:
            for t in edges:
                self.pub_tf.publish(convert.transform_to_msg(t, msg.header.stamp))

    def close(self) -> None:
        pass


def main() -> int:
    return run_node(StatePublisherNode, "duet_state_publisher_node")


if __name__ == "__main__":
    raise SystemExit(main())
