"""The recorder node's parts and the record graph description, plus one in-process
RecorderNode (own rclpy context) fed synthetic messages: teleop-following, max_episode_s,
refusals and message checks, without starting the mock hardware processes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from sensor_msgs.msg import JointState as JointStateMsg  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from duet.config import flatten, from_dict, unflatten  # noqa: E402
from duet.errors import ConfigError  # noqa: E402
from duet.hardware.interfaces import JointState  # noqa: E402
from duet.hardware.rig import load_rig  # noqa: E402
from duet_ros import convert  # noqa: E402
from duet_ros.graph import expand, load_graph  # noqa: E402
from duet_ros.params import declared_parameters, help_for  # noqa: E402
from duet_ros.recorder_node import FrameCounter, RecorderNode, RecorderNodeConfig, dataset_spec, in_order  # noqa: E402

pytestmark = pytest.mark.ros

JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")


# ---------------------------------------------------------------------------- pure parts


def test_frame_counter_turns_stamp_gaps_into_index_gaps():
    fc = FrameCounter(30.0)
    p = 1 / 30
    stamps = [10.0, 10.0 + p + 0.004, 10.0 + 2 * p - 0.003, 10.0 + 4 * p, 10.0 + 7 * p + 0.002]
    assert [fc.next(s) for s in stamps] == [0, 1, 2, 4, 7]  # jitter ignored, 1 + 2 frames missing
    assert fc.next(10.0 + 7 * p + 0.002) is None  # the same frame again
    assert fc.next(10.0) is None  # older
    assert fc.next(10.0 + 7 * p + 0.01) == 8  # a late frame still advances by one

    slow = FrameCounter(30.0)  # the camera node runs at 15 fps, not the rig's 30
    idx = [slow.next(20.0 + k / 15) for k in range(40)]
    assert idx[-1] - idx[10] == 29  # no phantom drops once the period is measured
    assert slow.next(20.0 + 41 / 15) == idx[-1] + 2  # a real drop still shows


def test_in_order_reorders_permuted_joints_and_rejects_others():
    names = ("a", "b", "c")
    js = JointState(
        1.0, ("c", "a", "b"), np.array([3.0, 1.0, 2.0]), np.array([30.0, 10.0, 20.0]), np.zeros(3)
    )
    out = in_order(js, names)
    assert (
        out.names == names
        and out.position.tolist() == [1.0, 2.0, 3.0]
        and out.velocity.tolist() == [10, 20, 30]
    )
    assert in_order(out, names) is out
    with pytest.raises(ValueError, match="do not match"):
        in_order(JointState(1.0, ("a", "b", "x"), np.zeros(3), np.zeros(3), np.zeros(3)), names)
    with pytest.raises(ValueError, match="positions"):
        in_order(JointState(1.0, names, np.zeros(2), np.zeros(2), np.zeros(2)), names)


def test_dataset_spec_follows_the_rig_and_the_selection():
    rig = load_rig("aloha")
    joints = {a.name: list(JOINTS) for a in rig.arms}
    cfg = RecorderNodeConfig(dataset="x.zarr", cameras=["cam_low", "cam_high"], jpeg_quality=80)
    spec = dataset_spec(cfg, rig, joints)
    assert [a.name for a in spec.arms] == ["left_leader", "right_leader", "left_follower", "right_follower"]
    assert spec.followers == ["left_follower", "right_follower"] and spec.action_dim == 14
    assert spec.camera_names == ["cam_high", "cam_low"]  # rig order
    assert all(not c.depth and (c.height, c.width) == (480, 640) for c in spec.cameras)
    assert spec.rate_hz == 50.0 and spec.jpeg_quality == 80 and spec.image_codec == "jpeg"
    with pytest.raises(ConfigError, match="cam_nope"):
        dataset_spec(RecorderNodeConfig(dataset="x", cameras=["cam_nope"]), rig, joints)
    with pytest.raises(ConfigError, match="no follower"):
        dataset_spec(RecorderNodeConfig(dataset="x", arms=["left_leader"]), rig, joints)
    with pytest.raises(ConfigError, match="'dataset' is required"):
        RecorderNodeConfig()


def test_compressed_image_to_frame_keeps_the_jpeg_and_the_capture_time():
    mapper = convert.TimeMapper()
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32, 0] = 200
    img[10:20, :, 1] = 120
    from duet.hardware.interfaces import Frame

    msg = convert.frame_to_compressed(Frame(stamp=123.456, index=7, color=img), mapper, "cam", quality=95)
    fr = convert.compressed_to_frame(msg, mapper, index=3, decode=False)
    assert fr.jpeg == bytes(msg.data) and fr.color.size == 0 and fr.index == 3
    assert fr.stamp == pytest.approx(123.456, abs=1e-6)
    full = convert.compressed_to_frame(msg, mapper, index=3)
    assert full.jpeg == fr.jpeg and full.color.shape == img.shape
    assert np.abs(full.color.astype(int) - img).mean() < 3  # RGB order preserved through JPEG
    import cv2

    msg.format = "png"
    msg.data = cv2.imencode(".png", img[..., ::-1])[1].tobytes()
    png = convert.compressed_to_frame(msg, mapper, index=4, decode=False)
    assert png.jpeg is None and np.array_equal(png.color, img)  # other formats are decoded


# ---------------------------------------------------------------------------- graph description


def test_record_graph_arguments_reach_the_recorder_and_dataset_is_required(capsys, tmp_path):
    from duet.cli import main

    desc = load_graph()
    args = desc.arguments("record")
    assert args["dataset"].required and (args["task"].node, args["task"].param) == ("recorder", "task")
    assert desc.arguments("teleop") == {}
    with pytest.raises(ConfigError, match="not an argument of graph 'teleop'"):
        desc.argument_parameters("teleop", {"dataset": "x"})
    assert desc.argument_parameters("record", {"task": "t"}, nodes=["teleop"]) == {"recorder": {"task": "t"}}

    assert main(["up", "record", "--mock", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--dataset" in err
    assert (
        main(
            [
                "up",
                "record",
                "--mock",
                "--dry-run",
                "--dataset",
                str(tmp_path / "d.zarr"),
                "--task",
                "fold",
                "--set",
                "recorder:operator=ana",
                "--operator",
                "bob",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    rec = out[out.index("duet_recorder_node") :]
    assert f"dataset: {tmp_path / 'd.zarr'}" in rec and "task: fold" in rec
    assert "operator: ana" in rec  # an explicit --set wins over the graph argument
    assert "dataset:" not in out[: out.index("duet_recorder_node")]  # only the recorder gets it
    assert main(["up", "teleop", "--mock", "--dry-run", "--dataset", "x"]) == 2
    assert "not an argument of graph 'teleop'" in capsys.readouterr().err


def test_record_parameter_files_build_a_valid_recorder_config():
    import yaml

    desc = load_graph()
    spec = next(s for s in expand("record", "aloha", True, desc) if s.kind == "recorder")
    assert spec.executable == "duet_recorder_node" and spec.name == "recorder"
    cls = desc.kinds["recorder"].config_class()
    assert cls is RecorderNodeConfig
    declared = declared_parameters(cls)
    assert all(help_for(cls, k) for k in declared)
    values = dict(declared)
    for f in spec.param_files:
        for node, body in yaml.safe_load(f.read_text()).items():
            params = flatten(body["ros__parameters"])
            if node == "recorder":
                unknown = sorted(set(params) - set(declared))
                assert not unknown, f"{f.name}: {unknown[0]!r} is not a recorder parameter"
            if node in ("/**", "recorder"):
                values.update({k: v for k, v in params.items() if k in values})
    values.update(spec.parameters, dataset="d.zarr")
    cfg = from_dict(cls, unflatten(values, cls))
    assert cfg.follow_teleop and cfg.image_codec == "jpeg" and cfg.recover_partial == "refuse"


# ---------------------------------------------------------------------------- in-process node


class Feeder:
    """Publishes joint states of every arm (50 Hz) and JPEG frames of one camera (25 Hz),
    stamped with their capture times, in the recorder's rclpy context."""

    def __init__(self, ctx, cameras=("cam_high",)):
        from rclpy.node import Node

        self.node = Node("record_parts_feeder", context=ctx)
        self.mapper = convert.TimeMapper()
        self.arms = ["left_leader", "right_leader", "left_follower", "right_follower"]
        self.joints = {
            a: self.node.create_publisher(JointStateMsg, f"/{a}/joint_states", 10) for a in self.arms
        }
        self.cams = {
            c: self.node.create_publisher(CompressedImage, f"/{c}/image/compressed", qos_profile_sensor_data)
            for c in cameras
        }
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.teleop = self.node.create_publisher(String, "/teleop/state", latched)
        img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        self.jpeg = convert.encode_jpeg(img, 80)
        self.names = JOINTS
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        k = 0
        while not self._stop.is_set():
            now = time.monotonic()
            for a, pub in self.joints.items():
                q = np.full(7, 0.1 * np.sin(now))
                pub.publish(
                    convert.joint_state_to_msg(
                        JointState(now, self.names, q, np.zeros(7), np.zeros(7)), self.mapper, a
                    )
                )
            if k % 2 == 0:
                for pub in self.cams.values():
                    msg = CompressedImage(format=convert.JPEG_FORMAT, data=self.jpeg)
                    msg.header.stamp = self.mapper.to_msg(now)
                    pub.publish(msg)
            k += 1
            time.sleep(0.02)

    def close(self):
        self._stop.set()
        self._thread.join(2)


@pytest.fixture
def recorder(tmp_path, ros_domain):
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    params = {
        "dataset": str(tmp_path / "d.zarr"),
        "task": "parts",
        "cameras": ["cam_high"],
        "max_episode_s": 1.0,
        "use_mock_hardware": True,
    }
    node = RecorderNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    feeder = Feeder(ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(feeder.node)
    health: list[str] = []
    latched10 = QoSProfile(
        depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    feeder.node.create_subscription(String, "/recorder/health", lambda m: health.append(m.data), latched10)
    stop = threading.Event()
    spin = threading.Thread(
        target=lambda: [ex.spin_once(timeout_sec=0.05) for _ in iter(stop.is_set, True)], daemon=True
    )
    spin.start()
    try:
        yield node, feeder, health
    finally:
        feeder.close()
        stop.set()
        spin.join(2)
        node.close()
        node.destroy_node()
        feeder.node.destroy_node()
        rclpy.shutdown(context=ctx)


def _wait(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.mark.timeout(90)
def test_in_process_recorder_follows_teleop_limits_length_and_refuses_without_data(recorder):
    from duet.data.store import EpisodeStore

    node, feeder, health = recorder
    ok, msg = node._submit("start", "service").result(10)
    assert not ok and "no data yet from" in msg and "cam_high" in msg
    feeder.start()
    _wait(lambda: {"left_leader", "right_follower", "cam_high"} <= set(node._last_seen), 20, "samples")

    # teleop: idle -> mirroring starts an episode; max_episode_s (1 s) commits it by itself
    feeder.teleop.publish(String(data="idle"))
    _wait(lambda: node._teleop_state == "idle", 10, "the teleop state")
    assert not node._active  # the latched state found at start triggers nothing
    feeder.teleop.publish(String(data="ramping"))
    feeder.teleop.publish(String(data="mirroring"))
    _wait(lambda: node._active, 10, "an episode started by teleop")
    _wait(lambda: len(health) == 1, 20, "the episode committed at max_episode_s")
    assert health[0].startswith("episode 0: 50 steps")
    assert not node._active
    feeder.teleop.publish(String(data="idle"))  # leaving mirroring now: nothing to stop
    _wait(lambda: node._teleop_state == "idle", 10, "the teleop state")

    # an episode started by service is not ended by teleop
    ok, msg = node._submit("start", "service").result(10)
    assert ok, msg
    feeder.teleop.publish(String(data="mirroring"))
    feeder.teleop.publish(String(data="paused"))
    _wait(lambda: node._teleop_state == "paused", 10, "the teleop state")
    ok, msg = node._submit("stop", "teleop").result(10)
    assert not ok and "started by service" in msg and node._active
    _wait(lambda: len(health) == 2, 20, "the service episode committed at max_episode_s")

    # joint states with other joints are rejected, not recorded
    bad = convert.joint_state_to_msg(
        JointState(time.monotonic(), ("x",) * 7, np.zeros(7), np.zeros(7), np.zeros(7)), feeder.mapper
    )
    rejected = node._counters["rejected"]
    feeder.joints["left_leader"].publish(bad)
    _wait(lambda: node._counters["rejected"] > rejected, 10, "the bad message rejected")

    store = EpisodeStore.open(node.store.location)
    assert store.n_episodes == 2
    metas = store.episodes_meta()
    assert [m["started_by"] for m in metas] == ["teleop", "service"] and metas[0]["task"] == "parts"
    ep = store.read_episode(0)
    assert ep["cam_high.color"].shape == (50, 480, 640, 3)
    assert store.read_raw_chunk("cam_high.color", 0) == feeder.jpeg  # stored as received, not re-encoded
    idx = ep["cam_high.index"]
    assert np.all(np.diff(idx) >= 0) and idx[-1] - idx[0] >= 15  # ~25 frames/s over 1 s
