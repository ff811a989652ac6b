"""rosbag2 in and out (`duet data import-bag` / `export-bag`): zarr -> bag -> zarr keeps
joints exactly and JPEG frames byte for byte; a bag written by the rosbags Writer itself
(jittered JointState / CompressedImage stamps) is resampled at the rig rate and split by a
gap or a marker topic; bad bags fail in one line naming the bag and topic, store untouched."""

import hashlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from duet.cli import main
from duet.clock import utc_now_iso
from duet.data.layout import DatasetSpec
from duet.data.store import EpisodeStore
from duet.hardware.rig import load_rig

H, W = 24, 32
RATE = 50.0
JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
TS = get_typestore(Stores.ROS2_JAZZY)
T = TS.types

RIG_YAML = f"""
name: bagrig
control_rate_hz: {RATE}
arms:
  - {{name: left_leader, role: leader, model: wx250s}}
  - {{name: left_follower, role: follower, model: vx300s}}
cameras:
  - {{name: cam_high, width: {W}, height: {H}, fps: 30}}
pairs:
  - [left_leader, left_follower]
"""


@pytest.fixture
def rig(tmp_path):
    p = tmp_path / "bagrig.yaml"
    p.write_text(RIG_YAML)
    return p


def jpeg(k):
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([(xx * 7 + k * 13) % 256, (yy * 9 + k) % 256, np.full_like(xx, 40 + 5 * k)], -1)
    return bytes(imagecodecs.jpeg8_encode(img.astype(np.uint8), level=90))


def snapshot(path):
    """Every file of a store with its content hash (the writer lock's holder info excluded)."""
    out = {}
    for f in sorted(Path(path).rglob("*")):
        if f.is_file() and f.name != ".duet-writer.lock":
            out[str(f.relative_to(path))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


# ----------------------------------------------------------------------------- round trip


def make_store(path, rig, lengths=(30, 12)):
    """A store like a recording: arms sampled every tick 1..5 ms before it, commands issued
    at the tick, a 25 Hz camera (one frame every 2 ticks, 10 ms old)."""
    spec = DatasetSpec.from_rig(load_rig(str(rig)))
    rng = np.random.default_rng(0)
    k = 0
    with EpisodeStore.create(path, layout=spec) as store:
        for e, n in enumerate(lengths):
            with store.episode({"task": f"task{e}", "operator": "ana"}) as ep:
                t0 = 1000.0 + 100 * e
                for i in range(n):
                    t = t0 + i / RATE + rng.uniform(0, 2e-3)
                    row = {"t": t}
                    for a in ("left_leader", "left_follower"):
                        row[f"{a}.position"] = rng.normal(size=7).astype(np.float32)
                        row[f"{a}.velocity"] = rng.normal(size=7).astype(np.float32)
                        row[f"{a}.effort"] = rng.normal(size=7).astype(np.float32)
                        row[f"{a}.stamp"] = t - rng.uniform(1e-3, 5e-3)
                        row[f"{a}.age"] = t - row[f"{a}.stamp"]
                    row["action"] = rng.normal(size=7).astype(np.float32)
                    row["action.stamp"] = np.array([t - 1e-4])
                    row["action.age"] = np.array([1e-4])
                    if i % 2 == 0:
                        k += 1
                        frame, fstamp = jpeg(k), t - 0.01
                    row["cam_high.color"] = frame
                    row["cam_high.stamp"] = fstamp
                    row["cam_high.age"] = t - fstamp
                    row["cam_high.index"] = k
                    ep.append(row)
    return EpisodeStore.open(path)


def test_round_trip_zarr_bag_zarr(tmp_path, rig, capsys):
    src = make_store(tmp_path / "src.zarr", rig)
    bag = tmp_path / "ep0.mcap"
    assert main(["data", "export-bag", str(src.location), "0", "--out", str(bag)]) == 0
    assert (
        main(
            [
                "data",
                "export-bag",
                str(src.location),
                "1",
                "--out",
                str(tmp_path / "ep1"),
                "--storage",
                "sqlite3",
            ]
        )
        == 0
    )
    assert (tmp_path / "ep1" / "metadata.yaml").is_file()

    # The bag holds duet's topics with standard types, readable by rosbags.
    with AnyReader([bag]) as r:
        types = {c.topic: c.msgtype for c in r.connections}
        counts = {c.topic: c.msgcount for c in r.connections}
    assert types == {
        "/left_leader/joint_states": "sensor_msgs/msg/JointState",
        "/left_follower/joint_states": "sensor_msgs/msg/JointState",
        "/left_follower/command": "sensor_msgs/msg/JointState",
        "/cam_high/image/compressed": "sensor_msgs/msg/CompressedImage",
        "/duet/tick": "std_msgs/msg/Header",
        "/duet/episode": "std_msgs/msg/String",
    }
    assert counts["/left_follower/joint_states"] == 30 and counts["/cam_high/image/compressed"] == 15

    dst = tmp_path / "dst.zarr"
    capsys.readouterr()
    assert (
        main(
            [
                "data",
                "import-bag",
                str(bag),
                str(tmp_path / "ep1"),
                "--out",
                str(dst),
                "--rig",
                str(rig),
                "--marker",
                "/duet/episode",
            ]
        )
        == 0
    )
    assert "imported 2 episode(s)" in capsys.readouterr().out

    # a std_msgs/Bool marker: true starts an episode, false ends it; what lies between is skipped
    bag2 = tmp_path / "bool"
    write_foreign_bag(bag2, [(50.0, 0.6), (52.2, 0.5)], markers=[(50.1, True), (50.4, False), (52.2, True)])
    by_bool = tmp_path / "bool.zarr"
    assert (
        main(
            [
                "data",
                "import-bag",
                str(bag2),
                "--out",
                str(by_bool),
                "--rig",
                str(rig),
                "--marker",
                "/episode",
                "--task",
                "b",
            ]
        )
        == 0
    )
    s = EpisodeStore.open(by_bool)
    d0, d1 = s.read_episode(0, images=False), s.read_episode(1, images=False)
    assert s.n_episodes == 2 and s.episode_meta(1)["task"] == "b"
    assert abs(d0["t"][0] - 50.1) < 1e-9 and d0["t"][-1] < 50.4 and len(d0["t"]) == 15
    assert abs(d1["t"][0] - 52.2) < 1e-9
    out = EpisodeStore.open(dst)
    assert out.n_episodes == 2
    for e in range(2):
        a, b = src.read_episode(e, images=False), out.read_episode(e, images=False)
        assert out.episode_meta(e)["task"] == f"task{e}"
        for key in ("position", "velocity", "effort"):
            for arm in ("left_leader", "left_follower"):
                np.testing.assert_array_equal(b[f"{arm}.{key}"], a[f"{arm}.{key}"])
        np.testing.assert_array_equal(b["action"], a["action"])
        for key in ("t", "left_leader.stamp", "left_follower.stamp", "action.stamp", "cam_high.stamp"):
            np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-9)
        np.testing.assert_allclose(b["cam_high.age"], a["cam_high.age"], atol=1e-6)
        s0, s1 = src.episode_slice(e), out.episode_slice(e)
        for i in range(s0.stop - s0.start):
            assert out.read_raw_chunk("cam_high.color", s1.start + i) == src.read_raw_chunk(
                "cam_high.color", s0.start + i
            )
        assert "rate_hz" in out.episode_meta(e) and out.episode_meta(e)["source"]["bag"]


# ----------------------------------------------------------------------------- foreign bag


def stamp(ns):
    return T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)


def header(ns):
    return T["std_msgs/msg/Header"](stamp=stamp(ns), frame_id="")


def write_foreign_bag(
    path, segments, markers=(), joint_order=None, backwards_at=None, cam_type=None, skip_topic=None
):
    """A bag as another recorder would write it: joints ~100 Hz and a camera ~30 Hz with
    jittered stamps, per segment (start s, duration s); markers (time s, text)."""
    rng = np.random.default_rng(1)
    msgs = []
    truth = {"joints": {}, "images": []}
    names = joint_order or JOINTS
    for arm in ("left_leader", "left_follower"):
        st = []
        for t0, dur in segments:
            st += list(t0 + np.arange(0, dur, 0.01) + rng.uniform(-2e-3, 2e-3, int(np.ceil(dur / 0.01))))
        ns = np.round(np.asarray(st) * 1e9).astype(np.int64)
        hs = ns.copy()  # header stamps; the bag (receive) time stays in order
        if backwards_at is not None and arm == "left_follower":
            hs[backwards_at] = hs[backwards_at - 2]
        pos = rng.normal(size=(len(ns), 7))
        truth["joints"][arm] = (ns, pos)
        if skip_topic == f"/{arm}/joint_states":
            continue
        perm = [JOINTS.index(j) for j in names]
        for n, h, q in zip(ns, hs, pos, strict=True):
            m = T["sensor_msgs/msg/JointState"](
                header=header(int(h)),
                name=list(names),
                position=q[perm],
                velocity=np.zeros(7),
                effort=np.zeros(7),
            )
            msgs.append((int(n) + 300_000, f"/{arm}/joint_states", m))
    k = 0
    for t0, dur in segments:
        for t in t0 + np.arange(0, dur, 1 / 30) + rng.uniform(-3e-3, 3e-3, int(np.ceil(dur * 30))):
            n = int(round(t * 1e9))
            k += 1
            data = jpeg(k)
            truth["images"].append((n, data))
            if cam_type == "std_msgs/msg/String":
                m = T["std_msgs/msg/String"](data="not an image")
            else:
                m = T["sensor_msgs/msg/CompressedImage"](
                    header=header(n), format="jpeg", data=np.frombuffer(data, np.uint8)
                )
            msgs.append((n + 5_000_000, "/cam_high/image/compressed", m))
    for t, text in markers:
        m = (
            T["std_msgs/msg/Bool"](data=text)
            if isinstance(text, bool)
            else T["std_msgs/msg/String"](data=text)
        )
        msgs.append((int(t * 1e9), "/episode", m))
    msgs.sort(key=lambda x: x[0])
    with Writer(path, version=8, storage_plugin=StoragePlugin.SQLITE3) as w:
        conns = {}
        for n, topic, m in msgs:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, m.__msgtype__, typestore=TS)
            w.write(conns[topic], n, TS.serialize_cdr(m, m.__msgtype__))
    return truth


def check_resampled(store, e, truth):
    d = store.read_episode(e, images=False)
    t = d["t"]
    np.testing.assert_allclose(np.diff(t), 1 / RATE, atol=1e-9)  # the rig rate, on header stamps
    for arm, (ns, pos) in truth["joints"].items():
        j = np.searchsorted(ns, np.round(t * 1e9).astype(np.int64), side="right") - 1
        assert (j >= 0).all()
        np.testing.assert_allclose(d[f"{arm}.stamp"], ns[j] * 1e-9, atol=1e-9)
        np.testing.assert_array_equal(d[f"{arm}.position"], pos[j].astype(np.float32))
        np.testing.assert_allclose(d[f"{arm}.age"], t - ns[j] * 1e-9, atol=1e-6)
        assert (d[f"{arm}.age"] >= 0).all() and (d[f"{arm}.age"] < 0.0145).all()  # 100 Hz, +-2 ms jitter
    # no command topic: the action is the follower's measured position (as live, age inf)
    np.testing.assert_array_equal(d["action"], d["left_follower.position"])
    assert np.isinf(d["action.age"]).all()
    img_ns = np.asarray([n for n, _ in truth["images"]])
    j = np.searchsorted(img_ns, np.round(t * 1e9).astype(np.int64), side="right") - 1
    np.testing.assert_allclose(d["cam_high.stamp"], img_ns[j] * 1e-9, atol=1e-9)
    sl = store.episode_slice(e)
    for i in (0, len(t) // 2, len(t) - 1):
        assert store.read_raw_chunk("cam_high.color", sl.start + i) == truth["images"][j[i]][1]
    return d


def test_import_foreign_bag_split_by_gap_and_marker(tmp_path, rig, capsys):
    bag = tmp_path / "foreign"
    # two takes with 1.5 s of silence between them; joint names in another order
    order = JOINTS[::-1]
    truth = write_foreign_bag(
        bag, [(50.0, 0.6), (52.2, 0.5)], markers=[(50.0, "pick"), (52.1, "place")], joint_order=order
    )

    by_gap = tmp_path / "gap.zarr"
    assert (
        main(
            [
                "data",
                "import-bag",
                str(bag),
                "--out",
                str(by_gap),
                "--rig",
                str(rig),
                "--gap",
                "0.5",
                "--task",
                "t",
            ]
        )
        == 0
    )
    s = EpisodeStore.open(by_gap)
    assert s.n_episodes == 2
    d0 = check_resampled(s, 0, truth)
    d1 = check_resampled(s, 1, truth)
    assert d0["t"][-1] < 50.7 and d1["t"][0] > 52.1
    assert 25 <= len(d0["t"]) <= 31 and 20 <= len(d1["t"]) <= 26
    m = s.episode_meta(0)
    assert m["task"] == "t" and abs(m["rate_hz"] - RATE) < 0.1 and "cam_high" in m["cameras"]
    # the episode started when the bag says (its header stamps), not when it was imported
    assert m["start_time"] == utc_now_iso(m["source"]["first_tick_stamp_s"])
    assert m["start_time"].startswith("1970-01-01T00:00:5")

    by_marker = tmp_path / "marker.zarr"
    assert (
        main(
            [
                "data",
                "import-bag",
                str(bag),
                "--out",
                str(by_marker),
                "--rig",
                str(rig),
                "--marker",
                "/episode",
            ]
        )
        == 0
    )
    s = EpisodeStore.open(by_marker)
    assert [s.episode_meta(i)["task"] for i in range(s.n_episodes)] == ["pick", "place"]
    d = s.read_episode(1, images=False)
    assert abs(d["t"][0] - 52.1) < 1e-9  # the episode starts at its marker
    assert "imported 2 episode(s)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad bags


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "topic /left_leader/joint_states (joint states of left_leader) is missing"),
        ("backwards", "topic /left_follower/joint_states: header stamps go backwards"),
        ("type", "topic /cam_high/image/compressed has message type std_msgs/msg/String"),
    ],
)
def test_bad_bag_is_one_line_and_store_unchanged(tmp_path, rig, capsys, case, expect):
    good = tmp_path / "good"
    write_foreign_bag(good, [(10.0, 0.3)])
    store = tmp_path / "s.zarr"
    assert main(["data", "import-bag", str(good), "--out", str(store), "--rig", str(rig)]) == 0
    before = snapshot(store)
    bad = tmp_path / "bad"
    if case == "missing":
        write_foreign_bag(bad, [(20.0, 0.3)], skip_topic="/left_leader/joint_states")
        args = []
    elif case == "backwards":
        write_foreign_bag(bad, [(20.0, 0.3)], backwards_at=10)
        args = []
    else:
        write_foreign_bag(bad, [(20.0, 0.3)], cam_type="std_msgs/msg/String")
        args = []
    capsys.readouterr()
    # the good bag first: nothing of it is written either, as every bag is checked first
    assert (
        main(["data", "import-bag", str(good), str(bad), "--out", str(store), "--rig", str(rig), *args]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and expect in err, err
    assert snapshot(store) == before
    assert EpisodeStore.open(store).n_episodes == 1


def test_lossless_store_exports_raw_images_and_imports_them(tmp_path, rig):
    """A lossless store exports sensor_msgs/Image rgb8 on /<camera>/image; the import falls
    back to that raw topic and the recorder encodes the frames for a JPEG store."""
    spec = DatasetSpec.from_rig(load_rig(str(rig)), image_codec="lossless")
    rng = np.random.default_rng(2)
    imgs = [np.asarray(imagecodecs.jpeg8_decode(jpeg(k))) for k in range(8)]
    with EpisodeStore.create(tmp_path / "raw.zarr", layout=spec) as store:
        with store.episode({"task": "raw"}) as ep:
            for i in range(8):
                t = 5.0 + i / RATE
                ep.append(
                    {
                        "t": t,
                        "left_leader.position": rng.normal(size=7).astype(np.float32),
                        "left_follower.position": rng.normal(size=7).astype(np.float32),
                        "left_leader.stamp": t - 1e-3,
                        "left_follower.stamp": t - 1e-3,
                        "action": rng.normal(size=7).astype(np.float32),
                        "action.stamp": np.array([t]),
                        "cam_high.color": imgs[i],
                        "cam_high.stamp": t - 2e-3,
                        "cam_high.index": i,
                    }
                )
    bag = tmp_path / "raw_bag"
    assert main(["data", "export-bag", str(tmp_path / "raw.zarr"), "0", "--out", str(bag)]) == 0
    with AnyReader([bag]) as r:
        assert {c.topic: c.msgtype for c in r.connections}["/cam_high/image"] == "sensor_msgs/msg/Image"
    dst = tmp_path / "jpeg.zarr"
    assert main(["data", "import-bag", str(bag), "--out", str(dst), "--rig", str(rig)]) == 0
    s = EpisodeStore.open(dst)
    got = s.read_frames("cam_high", np.arange(8))
    assert np.abs(got.astype(int) - np.stack(imgs).astype(int)).mean() < 3  # JPEG q90 of the same frames
    src = EpisodeStore.open(tmp_path / "raw.zarr").read_episode(0, images=False)
    np.testing.assert_array_equal(s.read_episode(0, images=False)["action"], src["action"])
