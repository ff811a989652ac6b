"""kill -9 a writer at chosen instants (mid-flush, mid-image-write, mid-commit, random):
the store opens with plain zarr, committed episodes are bit-identical, and the partial
episode can be recovered or discarded."""

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr

from duet.data.store import EpisodeStore, StoreError, encode_jpeg

CHILD = textwrap.dedent(
    r"""
    import os, signal, sys
    import numpy as np
    from duet.data import store as S
    from duet.data.layout import ArmSpec, CameraSpec, DatasetSpec

    path, point = sys.argv[1], sys.argv[2]

    def spec():
        return DatasetSpec(arms=[ArmSpec("left_follower"), ArmSpec("right_follower")],
                           cameras=[CameraSpec("cam_high", 32, 24), CameraSpec("cam_low", 32, 24)])

    def step(e, k):
        rng = np.random.default_rng(1000 * e + k)
        yy, xx = np.mgrid[0:24, 0:32]
        img = np.stack([(xx * 4 + k) % 256, (yy * 5 + e) % 256, np.full_like(xx, k % 256)], -1).astype(np.uint8)
        return {"t": e * 100 + k * 0.02, "left_follower.position": rng.random(7, dtype=np.float32),
                "right_follower.position": rng.random(7, dtype=np.float32), "action": rng.random(14, dtype=np.float32),
                "cam_high.color": img, "cam_low.color": img[::-1].copy()}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if __name__ == "__main__":
        store = S.EpisodeStore.create(path, spec())
        for e, n in enumerate((70, 30)):
            with store.episode({"task": f"e{e}"}) as ep:
                for k in range(n):
                    ep.append(step(e, k))
        state = {"flushes": 0, "puts": 0}
        orig_flush, orig_put, orig_commit = S.EpisodeWriter.flush, S._Raw.put, S.EpisodeStore._commit_episode
        def flush(self, sync=True):
            state["flushes"] += 1
            if point == "mid_flush" and state["flushes"] == 2:
                # die after the first low-dimensional array of this flush is written
                arr = self.store.array("t")
                orig_set = type(arr).__setitem__
                def set_then_die(a, key, value):
                    orig_set(a, key, value)
                    die()
                type(arr).__setitem__ = set_then_die
            orig_flush(self, sync)
            print("flushed", self._flushed, flush=True)
        def put(self, key, data, atomic=True):
            if point == "mid_image" and "/c." in key and key.startswith("data/cam_low") and state["flushes"] >= 1:
                with open(self.root / key, "wb") as f:  # a torn image chunk
                    f.write(data[: len(data) // 2])
                die()
            if point == "commit_ends" and key.startswith("meta/episode_ends/c."):
                orig_put(self, key, data, atomic)
                die()
            orig_put(self, key, data, atomic)
        def commit(self, end, meta):
            if point == "commit_meta":
                real = self._raw.put
                self._raw.put = lambda key, data, atomic=True: die() if key.startswith("meta/episode_ends") else real(key, data, atomic)
            return orig_commit(self, end, meta)
        S.EpisodeWriter.flush, S._Raw.put, S.EpisodeStore._commit_episode = flush, put, commit
        if point == "recorder":  # the recorder core (writer thread + encoder pool), killed from outside
            from duet.clock import FakeClock
            from duet.data.recorder import Recorder, RecorderConfig
            from duet.hardware.interfaces import Frame, JointState

            clk = FakeClock()
            rec = Recorder(store, clock=clk, config=RecorderConfig(max_pending_frames=10**6))
            rec.start_episode(task="partial")
            k = 0
            while True:
                s = step(2, k)
                now = clk.now()
                for arm, lo in (("left_follower", 0), ("right_follower", 7)):
                    q = s[arm + ".position"]
                    rec.update_joints(arm, JointState(now, tuple("abcdefg"), q, q * 0, q * 0))
                    rec.update_command(arm, s["action"][lo : lo + 7], now)
                for cam in ("cam_high", "cam_low"):
                    rec.update_frame(cam, Frame(now, k, s[cam + ".color"]))
                rec.tick(now)
                clk.advance(0.02)
                k += 1
                if k % 50 == 0:
                    import time
                    time.sleep(0.2)  # let the writer keep up a little
        with store.episode({"task": "partial"}) as ep:
            k = 0
            while True:
                ep.append(step(2, k))
                k += 1
                if point.startswith("commit") and k == 120:
                    break
    """
)


@pytest.fixture(scope="module")
def child_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("child") / "crash_child.py"
    p.write_text(CHILD)
    return p


def _child_module(child_file):
    """The child script imported as a module (its step() regenerates what it wrote)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("crash_child", child_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run_child(child_file, path, point, kill_after_flushes=None):
    proc = subprocess.Popen(
        [sys.executable, str(child_file), str(path), point],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill_after_flushes is not None:
        seen = 0
        for line in proc.stdout:
            if line.startswith("flushed"):
                seen += 1
                if seen >= kill_after_flushes:
                    time.sleep(0.013)  # somewhere inside the next second of appends
                    proc.send_signal(signal.SIGKILL)
                    break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]


def _expected(mod, e, n):
    rows = [mod.step(e, k) for k in range(n)]
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


def _check_committed(path, mod):
    g = zarr.open(str(path), mode="r")  # plain zarr opens it
    assert g["meta/episode_ends"][:].tolist() == [70, 100]
    store = EpisodeStore.open(path)
    assert store.n_episodes == 2
    for e, n in enumerate((70, 30)):
        exp = _expected(mod, e, n)
        got = store.read_episode(e, images=False)
        for k in ("t", "left_follower.position", "right_follower.position", "action"):
            np.testing.assert_array_equal(got[k], exp[k].astype(got[k].dtype), err_msg=f"episode {e} {k}")
        start = store.episode_slice(e).start
        for k in (0, n // 2, n - 1):  # image chunks bit-identical to what was written
            assert store.read_raw_chunk("cam_low.color", start + k) == encode_jpeg(
                exp["cam_low.color"][k], 90
            )
    return store


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "point", ["mid_flush", "mid_image", "commit_meta", "commit_ends", "random", "recorder"]
)
def test_kill9_then_open_and_recover(tmp_path, child_file, point):
    mod = _child_module(child_file)
    path = tmp_path / "s.zarr"
    _run_child(child_file, path, point, kill_after_flushes=2 if point in ("random", "recorder") else None)
    _check_committed(path, mod)
    store = EpisodeStore.open(path, "a")
    pend = store.pending
    assert pend is not None and pend["start"] == 100
    flushed = int(pend["flushed"])
    if point == "mid_flush":
        assert flushed == 50  # the first flush completed, the second did not
    res = store.recover(commit=True)
    if flushed:
        assert res["action"] == "committed" and store.n_episodes == 3
        m = store.episode_meta(2)
        assert m["recovered"] and m["flagged"] and m["task"] == "partial" and m["length"] == flushed
        exp = _expected(mod, 2, flushed)
        got = store.read_episode(2)
        np.testing.assert_array_equal(got["action"], exp["action"])
        assert np.abs(got["cam_high.color"].astype(int) - exp["cam_high.color"]).mean() < 4
    else:
        assert res["action"] in ("none", "discarded") and store.n_episodes == 2
    assert store.pending is None
    assert not list(path.rglob("*.partial"))
    # the store keeps working after recovery
    with store.episode({"task": "after"}) as ep:
        for k in range(5):
            ep.append(mod.step(3, k))
    assert zarr.open(str(path), mode="r")["meta/episode_ends"][-1] == store.n_steps


@pytest.mark.timeout(60)
def test_kill9_then_discard(tmp_path, child_file):
    mod = _child_module(child_file)
    path = tmp_path / "s.zarr"
    _run_child(child_file, path, "mid_flush")
    store = EpisodeStore.open(path, "a")
    with pytest.raises(StoreError, match="duet data recover"):
        store.episode()  # refuses to record until the partial episode is dealt with
    res = store.recover(commit=False)
    assert res["action"] == "discarded" and res["steps"] == 50
    assert store.n_episodes == 2 and store.pending is None
    assert zarr.open(str(path), mode="r")["data/action"].shape[0] == 100
    _check_committed(path, mod)
