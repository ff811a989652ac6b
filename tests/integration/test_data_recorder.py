"""Recorder core: tick sampling and ages, camera stall flagged, writer overload counted
(never blocking the tick), disk full -> clear error with previous episodes intact."""

import shutil
import subprocess
import threading

import numpy as np
import pytest

from duet.clock import FakeClock
from duet.data import store as S
from duet.data.layout import ArmSpec, CameraSpec, DatasetSpec
from duet.data.recorder import Recorder, RecorderConfig
from duet.data.store import DiskFullError, EpisodeStore
from duet.hardware.interfaces import Frame, JointState

H, W = 48, 64


def spec(h=H, w=W, codec="jpeg", depth=False):
    return DatasetSpec(
        arms=[ArmSpec("left_follower"), ArmSpec("right_follower"), ArmSpec("left_leader", "leader")],
        followers=["left_follower", "right_follower"],
        cameras=[CameraSpec("cam_high", w, h), CameraSpec("cam_low", w, h, depth=depth)],
        image_codec=codec,
    )


def img(k, h=H, w=W):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx + 3 * k) % 256, (yy + k) % 256, np.full_like(xx, (7 * k) % 256)], -1).astype(
        np.uint8
    )


def drive(rec, clk, n, stall=None, cam_index_jump=True, noise=False, h=H, w=W, rng=None):
    """Feed n ticks at 50 Hz. stall=(a, b): cam_high delivers nothing for ticks a..b-1."""
    spec = rec.spec
    for k in range(n):
        now = clk.now()
        for a in spec.arms:
            q = np.full(7, k * 0.01, np.float32)
            rec.update_joints(a.name, JointState(now - 0.003, tuple(a.joints), q, q * 0, q * 0))
        for f in spec.followers:
            rec.update_command(f, np.full(7, k * 0.01 + 0.5, np.float32), now - 0.001)
        for c in spec.cameras:
            if stall and c.name == "cam_high" and stall[0] <= k < stall[1]:
                continue
            frame = img(k, h, w) if not noise else rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            depth = np.full((h, w), 1000 + k, np.uint16) if c.depth else None
            rec.update_frame(c.name, Frame(now - 0.015, k, frame, depth=depth))
        rec.tick(now)
        clk.advance(0.02)


@pytest.mark.timeout(60)
def test_ticks_record_latest_values_and_ages(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", spec())
    clk = FakeClock(100.0)
    with Recorder(store, clock=clk, rig={"name": "test_rig"}, calibration_hash="abc") as rec:
        rec.start_episode(task="stack", operator="ana")
        drive(rec, clk, 60)
        # Known only at the end (an outcome): merged in, but never over the health summary.
        res = rec.stop_episode(meta={"success": True, "seed": 7, "flagged": True})
    assert res.index == 0 and not res.meta["flagged"], res.line
    m = store.episode_meta(0)
    assert m["task"] == "stack" and m["operator"] == "ana" and m["calibration_hash"] == "abc"
    assert m["success"] is True and m["seed"] == 7 and m["flagged"] is False
    assert m["rig"] == {"name": "test_rig"} and m["rig_hash"]
    assert m["rate_hz"] == pytest.approx(50.0)
    d = store.read_episode(0)
    np.testing.assert_allclose(d["t"], 100.0 + 0.02 * np.arange(60))
    np.testing.assert_allclose(d["action"][:, 0], np.arange(60) * 0.01 + 0.5, atol=1e-6)
    np.testing.assert_allclose(d["left_follower.age"], 0.003, atol=1e-5)
    np.testing.assert_allclose(d["cam_low.age"], 0.015, atol=1e-5)
    np.testing.assert_array_equal(d["cam_low.index"], np.arange(60))
    assert np.abs(d["cam_low.color"][17].astype(int) - img(17)).mean() < 3
    assert "60 steps" in res.line and "dropped frames 0" in res.line


@pytest.mark.timeout(60)
def test_lossless_color_and_depth_through_the_recorder(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", spec(codec="lossless", depth=True))
    clk = FakeClock()
    with Recorder(store, clock=clk) as rec:
        rec.start_episode()
        drive(rec, clk, 20)
        rec.stop_episode()
    d = store.read_episode(0)
    np.testing.assert_array_equal(d["cam_low.color"][7], img(7))
    np.testing.assert_array_equal(d["cam_low.depth"][:, 0, 0], 1000 + np.arange(20))


@pytest.mark.timeout(60)
def test_camera_stall_is_flagged_with_numbers_and_nothing_else_lost(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", spec())
    clk = FakeClock()
    with Recorder(store, clock=clk) as rec:
        rec.start_episode(task="stall")
        drive(rec, clk, 100, stall=(40, 65))  # cam_high silent for 25 ticks = 0.5 s
        res = rec.stop_episode()
    m = res.meta
    assert m["flagged"] and any("cam_high" in f for f in m["flags"])
    hi, lo = m["cameras"]["cam_high"], m["cameras"]["cam_low"]
    assert hi["dropped_frames"] == 25  # device index jumped 39 -> 65
    # age > 100 ms from the 5th silent tick on: ticks 44..64
    assert hi["stale_ticks"] == 21
    assert hi["max_gap_s"] == pytest.approx(0.015 + 0.5, abs=1e-6)
    assert lo["dropped_frames"] == 0 and lo["stale_ticks"] == 0
    d = store.read_episode(0)
    assert len(d["t"]) == 100  # every tick kept
    assert np.all(d["cam_high.index"][40:65] == 39)  # the latest (old) frame, with its age
    np.testing.assert_allclose(d["cam_high.age"][64], 0.015 + 0.5, atol=1e-5)
    assert np.abs(d["cam_high.color"][50].astype(int) - img(39)).mean() < 3
    assert np.all(np.isfinite(d["action"]))


@pytest.mark.timeout(60)
def test_writer_falling_behind_is_counted_never_blocks(tmp_path, monkeypatch):
    store = EpisodeStore.create(tmp_path / "s.zarr", spec())
    gate = threading.Event()
    orig = S.EpisodeWriter.reserve

    def stuck_writer(self, n):
        gate.wait(30)  # the disk "hangs" until the ticks are done
        orig(self, n)

    monkeypatch.setattr(S.EpisodeWriter, "reserve", stuck_writer)
    clk = FakeClock()
    with Recorder(store, clock=clk, config=RecorderConfig(max_pending_frames=4)) as rec:
        rec.start_episode()
        drive(rec, clk, 50)  # returns although the writer is stuck: tick never blocks
        assert rec.stats.ticks == 50
        gate.set()
        res = rec.stop_episode()
    # ticks 0 and 1 fit the 4-frame budget; every later frame was replaced by a repeat
    assert res.meta["writer_dropped"] == 48 * 2
    assert res.meta["flagged"] and "writer" in res.line
    d = store.read_episode(0)
    assert len(d["t"]) == 50
    assert np.abs(d["cam_low.color"][30].astype(int) - img(1)).mean() < 3  # repeated last written frame


@pytest.mark.timeout(60)
def test_disk_full_simulated_gives_clear_error_and_keeps_episodes(tmp_path, monkeypatch):
    store = EpisodeStore.create(tmp_path / "s.zarr", spec())
    clk = FakeClock()
    rec = Recorder(store, clock=clk)
    rec.start_episode(task="ok")
    drive(rec, clk, 20)
    rec.stop_episode()
    before = store.read_episode(0)
    calls = {"n": 0}
    orig = S._Raw.put

    def full(self, key, data, atomic=True):
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError(28, "No space left on device")
        orig(self, key, data, atomic)

    monkeypatch.setattr(S._Raw, "put", full)
    rec.start_episode(task="doomed")
    drive(rec, clk, 30)
    with pytest.raises(DiskFullError, match="disk full") as e:
        rec.stop_episode()
    assert "\n" not in str(e.value) and "intact" in str(e.value)
    rec.close()
    monkeypatch.setattr(S._Raw, "put", orig)
    again = EpisodeStore.open(tmp_path / "s.zarr", "a")
    assert again.n_episodes == 1
    for k, v in before.items():
        np.testing.assert_array_equal(again.read_episode(0)[k], v)
    again.recover(commit=False)
    with again.episode() as ep:  # recording resumes once space is back
        ep.append(
            {
                "left_follower.position": np.zeros(7),
                "right_follower.position": np.zeros(7),
                "left_leader.position": np.zeros(7),
                "action": np.zeros(14),
                "cam_high.color": img(0),
                "cam_low.color": img(0),
            }
        )
    assert again.n_episodes == 2


@pytest.fixture
def small_tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a 2 MB tmpfs here (needs root): {r.stderr.strip()[:100]}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.timeout(90)
def test_real_disk_full_on_small_tmpfs(small_tmpfs):
    path = small_tmpfs / "s.zarr"
    sp = spec(240, 320)
    store = EpisodeStore.create(path, sp)
    clk = FakeClock()
    rng = np.random.default_rng(0)
    with Recorder(store, clock=clk) as rec:
        rec.start_episode(task="first")
        drive(rec, clk, 5, noise=True, h=240, w=320, rng=rng)
        rec.stop_episode()
        before = store.read_episode(0)
        rec.start_episode(task="fills the disk")
        drive(rec, clk, 150, noise=True, h=240, w=320, rng=rng)  # noise JPEGs ~50 KB: > 2 MB
        with pytest.raises(DiskFullError, match="disk full"):
            rec.stop_episode()
    again = EpisodeStore.open(path)
    assert again.n_episodes == 1
    for k, v in before.items():
        np.testing.assert_array_equal(again.read_episode(0)[k], v)
