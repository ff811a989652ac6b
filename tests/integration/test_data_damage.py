"""Damaged stores: missing chunks are errors naming the array and episode (never zeros or
black frames), `duet data info --check` finds every damaged chunk, `duet data recover`
rebuilds damaged metadata from the copies the store keeps (or says which file to restore),
export-lerobot --overwrite touches only its own files, and a corrupt JPEG met by a
DataLoader worker during `duet train` ends in one line."""

import json

import numpy as np
import pytest

from duet.cli import main
from duet.data.layout import ArmSpec, CameraSpec, DatasetSpec
from duet.data.sampler import EpisodeSampler, compute_stats
from duet.data.store import DamagedStoreError, EpisodeStore, StoreError

LENS = (30, 20)


def spec(codec="jpeg"):
    return DatasetSpec(
        arms=[ArmSpec("left_follower"), ArmSpec("right_follower")],
        cameras=[CameraSpec("cam_high", 32, 24)],
        image_codec=codec,
    )


def img(e, k):
    yy, xx = np.mgrid[0:24, 0:32]
    return np.stack([(xx * 4 + k) % 256, (yy * 5 + e * 40) % 256, np.full_like(xx, 60 + k)], -1).astype(
        np.uint8
    )


def make(path, codec="jpeg"):
    with EpisodeStore.create(path, spec(codec)) as s:
        for e, n in enumerate(LENS):
            rng = np.random.default_rng(e)
            with s.episode({"task": f"task{e}"}) as ep:
                for k in range(n):  # velocity / effort left out: all-zero arrays
                    ep.append(
                        {
                            "left_follower.position": rng.random(7) + 1,
                            "right_follower.position": rng.random(7) + 1,
                            "action": rng.random(14) + 1,
                            "cam_high.color": img(e, k),
                        }
                    )
    return path


def test_healthy_store_checks_clean_including_all_zero_arrays(tmp_path, capsys):
    p = make(tmp_path / "s.zarr")
    assert (p / "data" / "left_follower.velocity" / "c.0.0").is_file()  # all zeros, still written
    assert main(["data", "info", str(p), "--check"]) == 0
    assert "check: all" in capsys.readouterr().out
    s = EpisodeStore.open(p)
    assert float(np.abs(s.read_episode(1)["left_follower.velocity"]).max()) == 0.0


@pytest.mark.parametrize("codec", ["jpeg", "lossless"])
def test_missing_chunks_are_errors_naming_array_and_episode(tmp_path, capsys, codec):
    p = make(tmp_path / "s.zarr", codec)
    (p / "data" / "left_follower.position" / "c.0.0").unlink()
    (p / "data" / "cam_high.color" / f"c.{LENS[0] + 3}.0.0.0").unlink()  # episode 1, frame 3
    s = EpisodeStore.open(p)
    with pytest.raises(
        DamagedStoreError, match=r"data/left_follower.position/c\.0\.0: missing .*episode 0-1"
    ) as e:
        s.read_episode(1)
    assert "\n" not in str(e.value) and "--check" in str(e.value)
    with pytest.raises(DamagedStoreError, match="left_follower.position"):
        EpisodeSampler(p, 1, 4)  # what `duet train` reads: never zeros
    with pytest.raises(DamagedStoreError, match="left_follower.position"):
        compute_stats(s, ["observation.state"])
    with pytest.raises(
        DamagedStoreError, match=r"cam_high.color/c\.33\.0\.0\.0: missing .*episode 1, frame 3"
    ):
        s.read_episode(1, keys=["cam_high.color"])  # never a black frame
    with pytest.raises(DamagedStoreError, match="episode 1, frame 3"):
        s.read_frames("cam_high", [LENS[0] + 3])
    assert s.read_episode(0, keys=["cam_high.color"])["cam_high.color"].shape == (30, 24, 32, 3)
    assert main(["data", "info", str(p), "--check"]) == 1
    out = capsys.readouterr().out
    assert "left_follower.position/c.0.0: missing" in out and "cam_high.color/c.33.0.0.0: missing" in out
    assert "check: 2 of" in out


def test_check_finds_undecodable_frames(tmp_path, capsys):
    p = make(tmp_path / "s.zarr")
    (p / "data" / "cam_high.color" / "c.5.0.0.0").write_bytes(b"\xff\xd8\xff garbage")
    assert main(["data", "info", str(p), "--check"]) == 1
    out = capsys.readouterr().out
    assert "cam_high.color/c.5.0.0.0: not a readable JPEG (episode 0, frame 5" in out


@pytest.mark.timeout(120)
def test_corrupt_jpeg_in_dataloader_worker_is_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    p = make(tmp_path / "s.zarr")
    (p / "data" / "cam_high.color" / "c.7.0.0.0").write_bytes(b"\xff\xd8\xff garbage")
    dl = torch.utils.data.DataLoader(EpisodeSampler(p, 1, 4), batch_size=4, num_workers=1, shuffle=False)
    with pytest.raises(DamagedStoreError) as e:
        list(dl)
    msg = str(e.value)
    assert "\n" not in msg and "cam_high.color" in msg and "episode 0, frame 7" in msg and "--check" in msg


@pytest.mark.timeout(240)
def test_corrupt_jpeg_during_duet_train_with_workers_is_one_line(tmp_path, capsys):
    p = make(tmp_path / "s.zarr")
    (p / "data" / "cam_high.color" / "c.7.0.0.0").write_bytes(b"\xff\xd8\xff garbage")
    rc = main(
        [
            "train",
            "--policy",
            "act",
            "--dataset",
            str(p),
            "--out",
            str(tmp_path / "run"),
            "--preset",
            "micro",
            "--steps",
            "4",
            "--device",
            "cpu",
            "--no-progress",
            "--set",
            "train.num_workers=1",
            "--set",
            "policy.batch_size=50",
            "--set",
            "train.val_fraction=0",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "\n" not in err and "episode 0, frame 7" in err and "duet data info" in err


def _corrupt(path, rel, data=b"{garbled"):
    (path / rel).write_bytes(data)


def test_garbled_root_zarr_json_is_rebuilt_by_recover(tmp_path, capsys):
    p = make(tmp_path / "s.zarr")
    _corrupt(p, "zarr.json")
    with pytest.raises(
        DamagedStoreError, match=r"zarr.json: unreadable .*duet data recover .* rebuilds"
    ) as e:
        EpisodeStore.open(p)
    assert "\n" not in str(e.value)
    assert main(["data", "recover", str(p)]) == 0
    assert "rebuilt zarr.json" in capsys.readouterr().out
    s = EpisodeStore.open(p)
    assert (
        s.spec == spec() and s.episode_lengths.tolist() == list(LENS) and s.episode_meta(1)["task"] == "task1"
    )


def test_garbled_root_without_a_copy_says_which_file_to_restore(tmp_path, capsys):
    p = make(tmp_path / "s.zarr")
    meta = json.loads((p / "meta" / "zarr.json").read_text())
    del meta["attributes"]["layout"]  # a store written before the layout copy existed
    (p / "meta" / "zarr.json").write_text(json.dumps(meta))
    _corrupt(p, "zarr.json")
    for args in (["data", "info", str(p)], ["data", "recover", str(p)]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert (
            "\n" not in err
            and f"restore {p}/zarr.json from a copy" in err
            and "run `duet data recover" not in err
        )


def test_garbled_meta_zarr_json_is_rebuilt_by_recover(tmp_path, capsys):
    p = make(tmp_path / "s.zarr")
    _corrupt(p, "meta/zarr.json")
    assert main(["data", "info", str(p)]) == 2
    err = capsys.readouterr().err
    assert "meta/zarr.json: unreadable" in err and "duet data recover" in err and "restore this file" in err
    assert main(["data", "recover", str(p)]) == 0
    assert "rebuilt meta/zarr.json for 2 episodes" in capsys.readouterr().out
    s = EpisodeStore.open(p)
    assert s.episode_lengths.tolist() == list(LENS)
    assert s.episode_meta(0)["flagged"] and "metadata lost" in s.episode_meta(0)["flags"][0]
    assert s.read_episode(1)["action"].shape == (20, 14)


def test_truncated_episode_ends_is_rebuilt_by_recover(tmp_path, capsys):
    p = make(tmp_path / "s.zarr")
    chunk = p / "meta" / "episode_ends" / "c.0"
    chunk.write_bytes(chunk.read_bytes()[:5])
    assert main(["data", "info", str(p)]) == 2
    err = capsys.readouterr().err
    assert "meta/episode_ends" in err and "episode lengths in meta/zarr.json" in err
    assert main(["data", "recover", str(p)]) == 0
    assert "rebuilt meta/episode_ends (2 episodes)" in capsys.readouterr().out
    s = EpisodeStore.open(p)
    assert s.episode_ends.tolist() == [30, 50] and s.episode_meta(1)["task"] == "task1"
    assert main(["data", "info", str(p), "--check"]) == 0


@pytest.mark.timeout(120)
def test_export_lerobot_overwrite_touches_only_its_own_files(tmp_path, capsys):
    p = make(tmp_path / "s.zarr")
    out = tmp_path / "export"
    assert main(["data", "export-lerobot", str(p), str(out)]) == 0
    assert (
        main(["data", "export-lerobot", str(p), str(out), "--overwrite", "--episodes", "1"]) == 0
    )  # redo: fine
    assert json.loads((out / "meta" / "info.json").read_text())["total_episodes"] == 1
    notes = out / "meta" / "my_notes.txt"
    notes.write_text("keep me")
    capsys.readouterr()
    assert main(["data", "export-lerobot", str(p), str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "meta/my_notes.txt" in err and "\n" not in err
    assert notes.read_text() == "keep me" and (out / "meta" / "info.json").is_file()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    assert main(["data", "export-lerobot", str(p), str(other), "--overwrite"]) == 2
    assert "not a previous LeRobot export" in capsys.readouterr().err
    assert (other / "a.jpg").read_bytes() == b"x"


def test_damaged_source_is_not_copied_by_merge(tmp_path):
    p = make(tmp_path / "s.zarr")
    (p / "data" / "cam_high.color" / "c.4.0.0.0").unlink()
    with pytest.raises(StoreError, match="episode 0, frame 4"):
        from duet.data.tools import merge_stores

        merge_stores([str(p)], str(tmp_path / "m.zarr"))
