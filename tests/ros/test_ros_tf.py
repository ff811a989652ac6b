"""The state publisher in a real graph (`duet up bringup --mock`, one start): /robot_description
arrives (latched) and is the rig's URDF, and every frame_id seen in the arms' JointState and the
cameras' CompressedImage headers is a frame of the published TF tree, connected to world.

TF travels as tf2_msgs/TFMessage on /tf and /tf_static where tf2_msgs is installed (a system
ROS 2), else as geometry_msgs/TransformStamped on /duet/tf and /duet/tf_static (the wheels).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import TransformStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from sensor_msgs.msg import JointState as JointStateMsg  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from duet.hardware.rig import load_rig  # noqa: E402
from duet.hardware.urdf import WORLD, optical_frame, parse_urdf, rig_urdf  # noqa: E402
from duet_ros import convert  # noqa: E402
from duet_ros.runtime import LATCHED, latched_qos  # noqa: E402

ARMS = ["left_leader", "right_leader", "left_follower", "right_follower"]
CAMERAS = ["cam_high", "cam_left_wrist"]  # one on the world, one riding an arm
SKIP = "cam_low,cam_right_wrist"


class TfProbe:
    def __init__(self):
        if not rclpy.ok():
            rclpy.init()
        self.node = Node(f"duet_tf_probe_{os.getpid()}")
        self.lock = threading.Lock()
        self.description = ""
        self.edges: dict[str, str] = {}  # child -> parent
        self.frame_ids: dict[str, str] = {}  # device -> header frame_id
        rel = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(String, "/robot_description", self._description, LATCHED)
        if convert.TFMessage is not None:
            sub = [(convert.TFMessage, "/tf_static", LATCHED), (convert.TFMessage, "/tf", rel)]
        else:
            sub = [
                (TransformStamped, "/duet/tf_static", latched_qos(200)),
                (TransformStamped, "/duet/tf", rel),
            ]
        for typ, topic, qos in sub:
            self.node.create_subscription(typ, topic, self._tf, qos)
        for a in ARMS:
            self.node.create_subscription(
                JointStateMsg, f"/{a}/joint_states", lambda m, a=a: self._seen(a, m), rel
            )
        for c in CAMERAS:
            self.node.create_subscription(
                CompressedImage,
                f"/{c}/image/compressed",
                lambda m, c=c: self._seen(c, m),
                qos_profile_sensor_data,
            )
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while not self._stop and rclpy.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.node.destroy_node()

    def _description(self, msg):
        self.description = msg.data

    def _tf(self, msg):
        with self.lock:
            for t in getattr(msg, "transforms", [msg]):
                self.edges[t.child_frame_id] = t.header.frame_id

    def _seen(self, device, msg):
        with self.lock:
            self.frame_ids[device] = msg.header.frame_id

    def rooted(self, frame: str) -> bool:
        """The frame reaches world through published edges."""
        with self.lock:
            seen = set()
            while frame != WORLD:
                if frame in seen or frame not in self.edges:
                    return False
                seen.add(frame)
                frame = self.edges[frame]
            return True

    def wait_for(self, predicate, timeout: float, what: str):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def test_description_and_tf_cover_every_header_frame(tmp_path, ros_domain, ros_tools):
    graph = ros_tools.DuetUp("bringup", "--skip", SKIP, log_dir=tmp_path / "logs")
    probe = TfProbe()
    try:
        probe.wait_for(lambda: probe.description, 60, "/robot_description")
        assert probe.description == rig_urdf(load_rig("aloha"))
        probe.wait_for(
            lambda: len(probe.frame_ids) == len(ARMS) + len(CAMERAS), 60, "joint states and images"
        )
        # arms: the base frame named after the arm; cameras: the optical frame (REP 103)
        assert probe.frame_ids == {**{a: a for a in ARMS}, **{c: optical_frame(c) for c in CAMERAS}}
        # every link of the description, moving ones included (once each arm's state arrived)
        links = {j.child for j in parse_urdf(probe.description)}
        probe.wait_for(lambda: all(probe.rooted(f) for f in links), 30, "TF for every link")
        for device, frame in probe.frame_ids.items():
            assert probe.rooted(frame), f"{device}: frame_id {frame!r} is not in the TF tree"
    except AssertionError as e:
        raise AssertionError(f"{e}\n{graph.logs()}") from None
    finally:
        probe.close()
        graph.stop()
