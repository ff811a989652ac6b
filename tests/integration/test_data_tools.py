"""`duet data` tools: ALOHA HDF5 import/export round trip, LeRobot v3 export checked with
pyarrow and av, plot, video, drop / merge / split / push, recover, replay on mock arms."""

import json

import h5py
import imagecodecs
import numpy as np
import pytest

from duet.cli import main
from duet.data.store import EpisodeStore
from duet.data.tools import export_aloha, export_lerobot, import_aloha
from duet.teleop.replay import replay_actions

H, W = 48, 64


def frame(k, cam):
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([(xx * 2 + k * 5) % 256, (yy * 3 + cam * 40) % 256, np.full_like(xx, 60 + k)], -1).astype(
        np.uint8
    )


def write_aloha(path, T, seed, compress=False):
    rng = np.random.default_rng(seed)
    data = {
        "qpos": rng.normal(size=(T, 14)).astype(np.float32),
        "qvel": rng.normal(size=(T, 14)).astype(np.float32),
        "effort": rng.normal(size=(T, 14)).astype(np.float32),
        "action": rng.normal(size=(T, 14)).astype(np.float32),
    }
    images = {
        c: np.stack([frame(k, i) for k in range(T)]) for i, c in enumerate(("cam_high", "cam_left_wrist"))
    }
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = True
        obs = f.create_group("observations")
        for k in ("qpos", "qvel", "effort"):
            obs.create_dataset(k, data=data[k])
        im = obs.create_group("images")
        for c, v in images.items():
            if compress:  # ALOHA's compressed variant: padded JPEG bytes, encoded by cv2 (BGR order)
                enc = [imagecodecs.jpeg8_encode(np.ascontiguousarray(x[..., ::-1]), level=95) for x in v]
                pad = max(len(e) for e in enc)
                arr = np.zeros((T, pad), np.uint8)
                for k, e in enumerate(enc):
                    arr[k, : len(e)] = np.frombuffer(e, np.uint8)
                im.create_dataset(c, data=arr)
            else:
                im.create_dataset(c, data=v)
        f.create_dataset("action", data=data["action"])
    return data, images


@pytest.fixture
def imported(tmp_path):
    files, truth = [], []
    for i, T in enumerate((12, 7)):
        p = tmp_path / f"episode_{i}.hdf5"
        truth.append(write_aloha(p, T, seed=i, compress=(i == 1)))
        files.append(p)
    dst = tmp_path / "imported.zarr"
    assert import_aloha(files, dst, task="transfer_cube") == [0, 1]
    return EpisodeStore.open(dst), truth, tmp_path


def test_aloha_import_export_roundtrip(imported):
    store, truth, tmp = imported
    assert store.spec.followers == ["left_follower", "right_follower"]
    assert store.episode_lengths.tolist() == [12, 7]
    assert store.episode_meta(1)["task"] == "transfer_cube" and store.episode_meta(1)["sim"] is True
    for i, (data, images) in enumerate(truth):
        out = export_aloha(store, i, tmp / f"out_{i}.hdf5")
        with h5py.File(out, "r") as f:
            for k in ("qpos", "qvel", "effort"):
                np.testing.assert_array_equal(f[f"observations/{k}"][()], data[k])
            np.testing.assert_array_equal(f["action"][()], data["action"])
            for c, v in images.items():
                got = f[f"observations/images/{c}"][()]
                assert got.shape == v.shape
                assert np.abs(got.astype(int) - v).mean() < 3, c  # JPEG q90 (and q95 for compressed input)


def test_lossless_import_is_exact(tmp_path):
    data, images = write_aloha(tmp_path / "e.hdf5", 5, seed=3)
    import_aloha([tmp_path / "e.hdf5"], tmp_path / "l.zarr", image_codec="lossless")
    d = EpisodeStore.open(tmp_path / "l.zarr").read_episode(0)
    np.testing.assert_array_equal(d["cam_high.color"], images["cam_high"])
    np.testing.assert_array_equal(
        np.concatenate([d["left_follower.position"], d["right_follower.position"]], 1), data["qpos"]
    )


@pytest.mark.timeout(120)
def test_lerobot_v3_export_frame_by_frame(imported):
    import av
    import pyarrow.parquet as pq

    store, truth, tmp = imported
    out = export_lerobot(store, tmp / "lerobot")
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2 and info["total_frames"] == 19
    assert info["fps"] == 50 and info["features"]["action"]["shape"] == [14]
    assert info["features"]["observation.images.cam_high"]["dtype"] == "video"
    t = pq.read_table(out / "data/chunk-000/file-000.parquet").to_pydict()
    assert t["episode_index"] == [0] * 12 + [1] * 7 and t["index"] == list(range(19))
    assert t["frame_index"][12:] == list(range(7))
    np.testing.assert_array_equal(np.array(t["action"][12:], np.float32), truth[1][0]["action"])
    np.testing.assert_array_equal(np.array(t["observation.state"][:12], np.float32), truth[0][0]["qpos"])
    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in eps] == [12, 7] and eps[1]["dataset_from_index"] == 12
    assert eps[1]["videos/observation.images.cam_high/from_timestamp"] == pytest.approx(12 / 50)
    assert eps[0]["tasks"] == ["transfer_cube"]
    tasks = pq.read_table(out / "meta/tasks.parquet").to_pydict()
    assert tasks == {"task_index": [0], "task": ["transfer_cube"]}
    stats = json.loads((out / "meta/stats.json").read_text())
    assert len(stats["action"]["mean"]) == 14
    for cam in ("cam_high", "cam_left_wrist"):
        expected = [img for _, images in truth for img in images[cam]]
        with av.open(str(out / f"videos/observation.images.{cam}/chunk-000/file-000.mp4")) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 19
        for k, (got, exp) in enumerate(zip(frames, expected)):
            assert got.shape == exp.shape
            assert np.abs(got.astype(int) - exp).mean() < 6, (cam, k)


def test_cli_info_plot_video_drop_merge_split_push(imported, capsys):
    store, _, tmp = imported
    loc = store.location
    assert main(["data", "info", loc, "-v"]) == 0
    out = capsys.readouterr().out
    assert "2 episodes, 19 steps" in out and "transfer_cube" in out and "12 steps" in out
    assert main(["data", "ls", loc]) == 0
    assert main(["data", "plot", loc, "0", "-o", str(tmp / "p.png")]) == 0
    assert (tmp / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["data", "video", loc, "1", "-o", str(tmp / "v.mp4")]) == 0
    import av

    with av.open(str(tmp / "v.mp4")) as c:
        frames = [f for f in c.decode(video=0)]
    assert len(frames) == 7 and frames[0].width >= 2 * 320 - 2
    # merge into a copy, drop one, split by task, push to fsspec URLs
    m = str(tmp / "merged.zarr")
    assert main(["data", "merge", m, loc, loc]) == 0
    assert EpisodeStore.open(m).episode_lengths.tolist() == [12, 7, 12, 7]
    assert main(["data", "drop", m, "1-2"]) == 0
    s = EpisodeStore.open(m)
    assert s.episode_lengths.tolist() == [12, 7]
    np.testing.assert_array_equal(s.read_episode(1)["action"], store.read_episode(1)["action"])
    assert main(["data", "split", loc, str(tmp / "split")]) == 0
    assert EpisodeStore.open(tmp / "split" / "transfer_cube.zarr").n_episodes == 2
    assert main(["data", "push", loc, "memory://fleet/shared.zarr"]) == 0
    assert main(["data", "push", loc, f"file://{tmp}/shared.zarr"]) == 0
    assert main(["data", "push", loc, f"file://{tmp}/shared.zarr"]) == 0
    shared = EpisodeStore.open(f"file://{tmp}/shared.zarr")
    assert shared.n_episodes == 4 and shared.episode_meta(3)["copied_from"]["episode"] == 1
    assert store.read_raw_chunk("cam_high.color", 3) == shared.read_raw_chunk(
        "cam_high.color", 22
    )  # bytes copied
    assert EpisodeStore.open("memory://fleet/shared.zarr").n_episodes == 2
    assert main(["data", "recover", loc]) == 0
    assert "nothing to recover" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    import zarr

    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    assert main(["data", "info", str(tmp_path / "foreign.zarr")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a duet episode store" in err and "foreign.zarr" in err and "\n" not in err
    assert main(["data", "info", str(tmp_path / "nothing.zarr")]) == 2
    assert "no such store" in capsys.readouterr().err
    (tmp_path / "bad.hdf5").write_bytes(b"not hdf5")
    assert main(["data", "import-aloha", str(tmp_path / "x.zarr"), str(tmp_path / "bad.hdf5")]) == 2
    assert "bad.hdf5" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_replay_on_mock_followers(imported):
    from duet.clock import FakeClock
    from duet.hardware.factory import make_arm
    from duet.hardware.rig import load_rig

    rig = load_rig("aloha")
    arms = {f: make_arm(rig, f, True) for f in ("left_follower", "right_follower")}
    for a in arms.values():
        a.connect()
    try:
        start = np.concatenate([arms[f].read().position for f in arms])
        T = 15
        actions = np.repeat(start[None], T, 0) + np.linspace(0, 0.2, T)[:, None]
        actions[:, 6] = 0.5
        actions[:, 13] = 0.5
        actions[-1, 0] = 99.0  # out of limits: must be clamped, not sent
        sent = []
        orig = arms["left_follower"].write

        def spy(q):
            sent.append(np.array(q))
            return orig(q)

        arms["left_follower"].write = spy
        res = replay_actions(
            actions, arms, {"left_follower": 7, "right_follower": 7}, 50.0, clock=FakeClock()
        )
    finally:
        for a in arms.values():
            a.disconnect()
    assert res["ticks"] == T and res["clamped_commands"] >= 1
    played = np.stack(sent[-T:])
    np.testing.assert_allclose(played[:-1], actions[:-1, :7], atol=1e-9)
    assert played[-1, 0] <= arms["left_follower"].features.upper[0] + 1e-9
