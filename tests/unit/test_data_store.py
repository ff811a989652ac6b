"""EpisodeStore: layout, commit/discard, readers, codecs, errors."""

import json

import numpy as np
import pytest
import zarr

from duet.data.layout import ArmSpec, CameraSpec, DatasetSpec, jpeg_size
from duet.data.store import EpisodeStore, StoreError, encode_jpeg
from duet.errors import ConfigError


def spec(codec="jpeg", depth=False):
    return DatasetSpec(
        rate_hz=50.0,
        arms=[ArmSpec("left_follower"), ArmSpec("right_follower"), ArmSpec("left_leader", "leader")],
        followers=["left_follower", "right_follower"],
        cameras=[CameraSpec("cam_high", 32, 24, depth=depth), CameraSpec("cam_low", 32, 24)],
        image_codec=codec,
    )


def image(k, seed=0, h=24, w=32):
    """A smooth, frame-dependent RGB image (JPEG-friendly, channels distinguishable)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack(
        [(xx * 4 + k * 3 + seed) % 256, (yy * 6 + k) % 256, np.full_like(xx, 40 + 10 * seed)], -1
    ).astype(np.uint8)


def steps(n, seed=0, depth=False):
    rng = np.random.default_rng(seed)
    for k in range(n):
        s = {
            "t": 10.0 + k * 0.02,
            "left_follower.position": rng.random(7, dtype=np.float32),
            "right_follower.position": rng.random(7, dtype=np.float32),
            "left_leader.position": rng.random(7, dtype=np.float32),
            "action": rng.random(14, dtype=np.float32),
            "cam_high.color": image(k, seed),
            "cam_low.color": image(k, seed + 1),
        }
        if depth:
            s["cam_high.depth"] = rng.integers(0, 4000, (24, 32), dtype=np.uint16)
        yield s


def test_write_read_roundtrip_and_plain_zarr(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", spec())
    written = []
    for e, n in enumerate((5, 8, 3)):
        rows = list(steps(n, seed=e))
        with store.episode({"task": f"task{e % 2}", "operator": "ana"}) as ep:
            for r in rows:
                ep.append(r)
        written.append(rows)
    assert store.n_episodes == 3
    assert store.episode_ends.tolist() == [5, 13, 16]
    assert store.episode_meta(1)["task"] == "task1"
    assert store.episode_meta(1)["length"] == 8
    d = store.read_episode(1)
    np.testing.assert_array_equal(d["action"], np.stack([r["action"] for r in written[1]]))
    np.testing.assert_array_equal(d["t"], [r["t"] for r in written[1]])
    # optional keys got their documented defaults
    np.testing.assert_array_equal(d["left_follower.stamp"], d["t"])
    np.testing.assert_array_equal(d["cam_low.index"], np.arange(8))
    # images: JPEG, lossy but close
    err = np.abs(d["cam_high.color"].astype(int) - np.stack([r["cam_high.color"] for r in written[1]])).mean()
    assert err < 4
    # plain zarr reads the same (ReplayBuffer convention: meta/episode_ends, data/<key>)
    g = zarr.open(str(tmp_path / "s.zarr"), mode="r")
    assert g["meta/episode_ends"][:].tolist() == [5, 13, 16]
    np.testing.assert_array_equal(g["data/action"][5:13], d["action"])
    np.testing.assert_array_equal(g["data/cam_high.color"][5:13], d["cam_high.color"])


def test_jpeg_frames_are_stored_without_reencoding(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", spec())
    rows = list(steps(3))
    jpegs = [encode_jpeg(r["cam_high.color"], 75) for r in rows]
    with store.episode() as ep:
        for r, j in zip(rows, jpegs):
            ep.append({**r, "cam_high.color": j})
    for k, j in enumerate(jpegs):
        assert store.read_raw_chunk("cam_high.color", k) == j
    assert jpeg_size(jpegs[0]) == (24, 32, 3)


def test_lossless_and_depth_are_exact(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", spec("lossless", depth=True))
    rows = list(steps(4, depth=True))
    with store.episode() as ep:
        for r in rows:
            ep.append(r)
    d = store.read_episode(0)
    np.testing.assert_array_equal(d["cam_high.color"], np.stack([r["cam_high.color"] for r in rows]))
    np.testing.assert_array_equal(d["cam_high.depth"], np.stack([r["cam_high.depth"] for r in rows]))


def test_exception_discards_episode_and_store_stays_usable(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", spec())
    with store.episode() as ep:
        for r in steps(4):
            ep.append(r)
    with pytest.raises(RuntimeError), store.episode() as ep:
        for r in steps(60):  # more than a flush worth
            ep.append(r)
        raise RuntimeError("operator aborted")
    assert store.n_episodes == 1 and store.pending is None
    assert zarr.open(str(tmp_path / "s.zarr"), mode="r")["data/action"].shape[0] == 4
    with store.episode() as ep:
        for r in steps(2):
            ep.append(r)
    assert store.episode_ends.tolist() == [4, 6]


def test_reader_sees_only_committed_episodes(tmp_path):
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path, spec())
    with store.episode() as ep:
        for r in steps(5):
            ep.append(r)
    reader = EpisodeStore.open(path, "r")
    ep = store.episode()
    for r in steps(120, seed=3):
        ep.append(r)  # flushed more than once: rows exist beyond episode_ends
    reader.refresh()
    assert reader.n_episodes == 1 and reader.n_steps == 5
    assert zarr.open(str(path), mode="r")["data/action"].shape[0] > 5  # data ahead of episode_ends
    ep.commit()
    reader.refresh()
    assert reader.episode_ends.tolist() == [5, 125]
    assert reader.read_episode(1, keys=["action"])["action"].shape == (120, 14)


def test_bad_steps_raise_clear_errors(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", spec())
    r = next(steps(1))
    with store.episode() as ep:
        with pytest.raises(StoreError, match="unknown key 'bogus'"):
            ep.append({**r, "bogus": 1})
        with pytest.raises(StoreError, match="missing 'action'"):
            ep.append({k: v for k, v in r.items() if k != "action"})
        with pytest.raises(StoreError, match="cam_high.color"):
            ep.append({**r, "cam_high.color": np.zeros((10, 10, 3), np.uint8)})
        ep.append(r)
    assert store.n_episodes == 1


def test_foreign_and_corrupt_stores_get_one_line_errors(tmp_path):
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a duet episode store") as e:
        EpisodeStore.open(tmp_path / "foreign.zarr")
    assert "\n" not in str(e.value)
    with pytest.raises(StoreError, match="no such store"):
        EpisodeStore.open(tmp_path / "missing.zarr")
    EpisodeStore.create(tmp_path / "c.zarr", spec())
    (tmp_path / "c.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"c\.zarr"):
        EpisodeStore.open(tmp_path / "c.zarr")
    with pytest.raises(StoreError, match="already exists"):
        EpisodeStore.create(tmp_path / "foreign.zarr", spec())


def test_spec_validation():
    with pytest.raises(ConfigError, match="used twice"):
        DatasetSpec(arms=[ArmSpec("a"), ArmSpec("a")])
    with pytest.raises(ConfigError, match="follower 'x'"):
        DatasetSpec(arms=[ArmSpec("a")], followers=["x"])
    s = spec()
    assert DatasetSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.action_dim == 14


def test_jpeg_size_rejects_garbage():
    with pytest.raises(ValueError):
        jpeg_size(b"\x89PNG....")


def test_fsspec_memory_store_roundtrip():
    url = "memory://duet-test/s.zarr"
    store = EpisodeStore.create(url, spec(), overwrite=True)
    with store.episode({"task": "remote"}) as ep:
        for r in steps(3):
            ep.append(r)
    again = EpisodeStore.open(url)
    assert again.n_episodes == 1 and again.episode_meta(0)["task"] == "remote"
    assert again.read_episode(0)["cam_low.color"].shape == (3, 24, 32, 3)


def test_damaged_array_metadata_and_chunks_name_the_file(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", spec())
    with store.episode() as ep:
        for r in steps(3):
            ep.append(r)
    (tmp_path / "s.zarr" / "data" / "action" / "zarr.json").write_text("garbage")
    with pytest.raises(StoreError, match=r"data/action/zarr.json: unreadable"):
        EpisodeStore.open(tmp_path / "s.zarr").read_episode(0)
    (tmp_path / "s.zarr" / "data" / "cam_low.color" / "c.1.0.0.0").write_bytes(b"\xff\xd8 torn")
    with pytest.raises(StoreError, match=r"data/cam_low.color: episode 0 has an unreadable chunk"):
        EpisodeStore.open(tmp_path / "s.zarr").read_episode(0, keys=["cam_low.color"])


def test_copied_episodes_keep_their_health_and_rewrite_keeps_the_store_usable(tmp_path):
    src = EpisodeStore.create(tmp_path / "src.zarr", spec())
    for e in range(3):
        ep = src.episode({"task": f"t{e}"})
        for r in steps(4, seed=e):
            ep.append(r)
        # a flag only the recorder knows (not derivable from the data)
        ep.commit({"flags": ["writer fell behind: 2 frames repeated"], "flagged": True})
    dst = EpisodeStore.create(tmp_path / "dst.zarr", spec())
    assert dst.copy_episodes_from(src, [2, 0]) == [0, 1]
    m = dst.episode_meta(0)
    assert m["task"] == "t2" and m["copied_from"] == {"store": src.location, "episode": 2}
    assert m["flags"] == ["writer fell behind: 2 frames repeated"] and m["flagged"]  # not recomputed
    src.rewrite([1])  # drop: the store is re-opened in place, still holding the writer lock
    assert src.n_episodes == 1 and src.episode_meta(0)["task"] == "t1"
    with pytest.raises(StoreError, match="another writer|already holds"):
        EpisodeStore.open(tmp_path / "src.zarr", "a")
    ep = src.episode({"task": "more"})
    for r in steps(2):
        ep.append(r)
    assert ep.commit() == 1
