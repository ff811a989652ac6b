"""One store, one writer: a second writer (another process) is refused in one line naming
the holder; recover refuses a live store; a lock left by a killed writer is taken over;
two writers creating a new store; the recorder holds the lock for its life; readers never
take it; remote (fsspec) stores use a lease.

The holder runs in a separate process and says it is ready through a file; the test
tells it to go on through another file (no timing assumptions)."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from duet.cli import main
from duet.data.layout import ArmSpec, CameraSpec, DatasetSpec
from duet.data.lock import LOCK_NAME
from duet.data.store import EpisodeStore, StoreError, StoreLockedError, encode_jpeg

CHILD = textwrap.dedent(
    r"""
    import os, sys, time
    from pathlib import Path
    import numpy as np
    from duet.data import store as S
    from duet.data.layout import ArmSpec, CameraSpec, DatasetSpec

    def spec():
        return DatasetSpec(arms=[ArmSpec("left_follower"), ArmSpec("right_follower")],
                           cameras=[CameraSpec("cam_high", 32, 24)])

    def step(e, k):
        rng = np.random.default_rng(1000 * e + k)
        yy, xx = np.mgrid[0:24, 0:32]
        img = np.stack([(xx * 4 + k) % 256, (yy * 5 + e * 40) % 256, np.full_like(xx, k % 256)], -1).astype(np.uint8)
        return {"t": e * 100 + k * 0.02, "left_follower.position": rng.random(7, dtype=np.float32),
                "right_follower.position": rng.random(7, dtype=np.float32), "action": rng.random(14, dtype=np.float32),
                "cam_high.color": img}

    def wait_for(p):
        deadline = time.monotonic() + 60  # only a guard against a hung test, never a condition
        while not p.exists():
            if time.monotonic() > deadline:
                sys.exit(f"timed out waiting for {p}")
            time.sleep(0.005)

    if __name__ == "__main__":
        path, mode, ready, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
        if mode == "create":
            # Stop inside store creation (after any existence check), until told to go on.
            real = S.zarr.open_group
            fired = []
            def open_group(*a, **kw):
                if kw.get("mode") in ("a", "w") and not fired:
                    fired.append(1)
                    ready.write_text(str(os.getpid()))
                    wait_for(go)
                return real(*a, **kw)
            S.zarr.open_group = open_group
            S.EpisodeStore.open_or_create(path, spec()).close()
            sys.exit(0)
        store = S.EpisodeStore.open_or_create(path, spec())
        with store.episode({"task": "first"}) as ep:
            for k in range(30):
                ep.append(step(0, k))
        if mode == "record":  # the recorder core (ROS recorder node, duet sim collect)
            from duet.clock import FakeClock
            from duet.data.recorder import Recorder
            from duet.hardware.interfaces import Frame, JointState

            clk = FakeClock()
            rec = Recorder(store, clock=clk)
            rec.start_episode(task="live")
            def tick(k):
                s, now = step(1, k), clk.now()
                for arm, lo in (("left_follower", 0), ("right_follower", 7)):
                    q = s[arm + ".position"]
                    rec.update_joints(arm, JointState(now, tuple("abcdefg"), q, q * 0, q * 0))
                    rec.update_command(arm, s["action"][lo : lo + 7], now)
                rec.update_frame("cam_high", Frame(now, k, s["cam_high.color"]))
                rec.tick(now)
                clk.advance(0.02)
            for k in range(60):
                tick(k)
            while int((store.pending or {}).get("flushed", 0)) < 50:  # a flush is on disk
                time.sleep(0.005)
            ready.write_text(str(os.getpid()))
            wait_for(go)
            for k in range(60, 80):
                tick(k)
            rec.stop_episode()
            rec.close()
            sys.exit(0)
        ep = store.episode({"task": "live"})
        for k in range(60):  # one flush (50 steps) is on disk: a recover would commit it
            ep.append(step(1, k))
        ready.write_text(str(os.getpid()))
        wait_for(go)
        for k in range(60, 80):
            ep.append(step(1, k))
        ep.commit()
        store.close()
    """
)


def spec():
    return DatasetSpec(
        arms=[ArmSpec("left_follower"), ArmSpec("right_follower")], cameras=[CameraSpec("cam_high", 32, 24)]
    )


@pytest.fixture(scope="module")
def child_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("lock_child") / "lock_child.py"
    p.write_text(CHILD)
    return p


def _mod(child_file):
    import importlib.util

    s = importlib.util.spec_from_file_location("lock_child", child_file)
    m = importlib.util.module_from_spec(s)
    s.loader.exec_module(m)
    return m


class Holder:
    """The child process: started, then waited for until it says it is ready."""

    def __init__(self, child_file, path, mode, tmp_path):
        self.ready, self.go = tmp_path / f"{mode}.ready", tmp_path / f"{mode}.go"
        self.proc = subprocess.Popen(
            [sys.executable, str(child_file), str(path), mode, str(self.ready), str(self.go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60  # a guard against a hung child only
        while not self.ready.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"holder ended early: {self.proc.stderr.read()[-2000:]}")
            assert time.monotonic() < deadline, "holder never became ready"
            time.sleep(0.005)
        self.pid = self.proc.pid

    def finish(self):
        self.go.write_text("go")
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["hold", "record"])
def test_second_writer_is_refused_in_one_line_and_readers_need_no_lock(tmp_path, child_file, capsys, mode):
    """hold: an EpisodeWriter mid-episode; record: the Recorder mid-episode."""
    path = tmp_path / "s.zarr"
    h = Holder(child_file, path, mode, tmp_path)
    try:
        for attempt in (
            lambda: EpisodeStore.open(path, "a"),
            lambda: EpisodeStore.open_or_create(path, spec()),
            lambda: EpisodeStore.create(path, spec()),
        ):
            with pytest.raises(StoreLockedError) as e:
                attempt()
            msg = str(e.value)
            assert (
                "\n" not in msg and f"pid {h.pid} on " in msg and "since 20" in msg and "lock_child.py" in msg
            )
        # `duet data recover` on the live store: refused, nothing committed twice
        assert main(["data", "recover", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"pid {h.pid}" in err and str(path) in err
        # readers take no lock: info, the sampler, read_episode work while the writer lives
        assert main(["data", "info", str(path)]) == 0
        out = capsys.readouterr().out
        assert f"writer: pid {h.pid} on " in out
        assert "PARTIAL" not in out and "recover" not in out  # a live episode is not a crash's leftover
        from duet.data.sampler import EpisodeSampler

        assert len(EpisodeSampler(path, 1, 4)) == 30
        assert EpisodeStore.open(path).read_episode(0)["action"].shape == (30, 14)
        assert json.loads((path / LOCK_NAME).read_text())["pid"] == h.pid
    finally:
        rc, err = h.finish()
    assert rc == 0, err[-2000:]
    mod = _mod(child_file)
    s = EpisodeStore.open(path)
    assert s.episode_lengths.tolist() == [30, 80] and s.pending is None
    assert [s.episode_meta(i)["task"] for i in range(2)] == ["first", "live"]
    start = s.episode_slice(1).start
    for k in range(80):  # every frame of the live episode is the one its writer wrote
        assert s.read_raw_chunk("cam_high.color", start + k) == encode_jpeg(
            mod.step(1, k)["cam_high.color"], 90
        )
    np.testing.assert_array_equal(
        s.read_episode(1)["action"], np.stack([mod.step(1, k)["action"] for k in range(80)])
    )
    assert not s.episode_meta(1).get("recovered")
    assert (path / LOCK_NAME).read_bytes() == b"" and s.writer() is None  # released cleanly


@pytest.mark.timeout(120)
def test_lock_of_a_killed_writer_is_taken_over_and_recover_works(tmp_path, child_file, capsys):
    path = tmp_path / "s.zarr"
    h = Holder(child_file, path, "hold", tmp_path)
    h.kill()
    assert main(["data", "recover", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"pid {h.pid}" in out and "50 steps committed as episode 1" in out
    s = EpisodeStore.open(path, "a")
    assert s.lock.took_over is None  # recover released the lock cleanly
    assert s.episode_lengths.tolist() == [30, 50] and s.pending is None
    s.close()


@pytest.mark.timeout(120)
def test_lock_left_by_dead_writer_names_it(tmp_path, child_file, capsys):
    path = tmp_path / "s.zarr"
    h = Holder(child_file, path, "hold", tmp_path)
    h.kill()
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"writer: pid {h.pid} on " in out and "ended without releasing" in out and "PARTIAL episode" in out
    s = EpisodeStore.open(path, "a")
    assert s.lock.took_over["pid"] == h.pid
    assert int(s.pending["flushed"]) == 50  # the partial episode stays recoverable
    with pytest.raises(StoreError, match="duet data recover"):
        s.episode()
    s.close()


@pytest.mark.timeout(120)
def test_two_writers_creating_a_new_store(tmp_path, child_file):
    path = tmp_path / "new.zarr"
    h = Holder(child_file, path, "create", tmp_path)  # inside creation, holding the lock
    try:
        with pytest.raises(StoreLockedError) as e:
            EpisodeStore.open_or_create(path, spec())
        assert "\n" not in str(e.value) and f"pid {h.pid}" in str(e.value)
    finally:
        rc, err = h.finish()
    assert rc == 0, err[-2000:]  # the first creator finishes (no ContainsArrayError)
    s = EpisodeStore.open_or_create(path, spec())
    assert s.n_episodes == 0
    s.close()


@pytest.mark.timeout(60)
def test_recorder_holds_the_lock_for_its_life(tmp_path):
    from duet.clock import FakeClock
    from duet.data.recorder import Recorder
    from duet.hardware.interfaces import Frame, JointState

    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path, spec())
    with pytest.raises(StoreLockedError, match="this process"):
        EpisodeStore.open(path, "a")
    clk = FakeClock()
    rec = Recorder(store, clock=clk)
    rec.start_episode(task="x")
    for k in range(5):
        now = clk.now()
        for a in ("left_follower", "right_follower"):
            rec.update_joints(a, JointState(now, tuple("abcdefg"), np.zeros(7), np.zeros(7), np.zeros(7)))
        rec.update_frame("cam_high", Frame(now, k, np.zeros((24, 32, 3), np.uint8)))
        rec.tick(now)
        clk.advance(0.02)
    rec.stop_episode()
    with pytest.raises(StoreLockedError):
        EpisodeStore.open(path, "a")
    rec.close()  # releases the store's lock; the store stays readable
    assert store.read_episode(0)["t"].shape == (5,)
    with pytest.raises(StoreError, match="closed"):
        store.episode()
    again = EpisodeStore.open(path, "a")
    again.close()
    with pytest.raises(StoreError, match="read-only"):
        Recorder(EpisodeStore.open(path), clock=clk)


def test_remote_store_lease(tmp_path):
    url = "memory://duet-lock-test/s.zarr"
    a = EpisodeStore.create(url, spec(), overwrite=True)
    with pytest.raises(StoreLockedError, match="this process"):
        EpisodeStore.open(url, "a")
    EpisodeStore.open(url).close()  # readers need no lease
    a.close()
    b = EpisodeStore.open(url, "a")
    assert b.lock.took_over is None
    b.close()
    # an expired lease (its writer vanished) is taken over
    from duet.data.store import _open_zarr_store, _Raw

    raw = _Raw(_open_zarr_store(url, "a", None)[0])
    raw.put(
        LOCK_NAME,
        json.dumps(
            {
                "host": "elsewhere",
                "pid": 1,
                "since": "2026-01-01T00:00:00+00:00",
                "token": "x",
                "lease_until": 0,
            }
        ).encode(),
    )
    c = EpisodeStore.open(url, "a")
    assert c.lock.took_over["host"] == "elsewhere"
    c.close()
    assert raw.get(LOCK_NAME) is None
