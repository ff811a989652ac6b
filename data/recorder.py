"""Recorder core: samples the latest data of every sensor on the control tick and hands
it to a writer worker thread, so the tick never blocks on encoding or disk.

A ROS node (or any loop) only feeds it the latest messages and calls tick(now)::

    rec = Recorder(store, rig=rig_cfg)             # starts the writer thread; store opened for writing
    rec.update_joints("left_follower", joint_state)  # from any thread, whenever data arrives
    rec.update_command("left_follower", q_cmd, stamp)
    rec.update_frame("cam_high", frame)
    rec.start_episode(task="fold towel", operator="ana")
    rec.tick(now)                                  # on every 50 Hz tick: O(1), never blocks
    result = rec.stop_episode()                    # waits for the writer, commits
    print(result.line)                             # the episode's health line
    rec.close()                                    # ends the writer, releases the store's writer lock

The recorder is the store's one writer for its whole life: it needs a store opened for
writing (EpisodeStore.create / open(path, 'a') / open_or_create, which hold the store's
writer lock) and close() releases that lock (the store stays readable).

Each tick records, per sensor, the capture stamp of the sample used and its age
(tick time - stamp). Before an arm's first command the action holds the follower's measured
position and action.age is inf. Images wait in a queue bounded in frames
(RecorderConfig.max_pending_frames): when the writer falls behind, a tick's frame is
replaced by the camera's previous frame (no encode), counted per camera as writer_dropped
and reported; the tick never waits.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from duet.clock import Clock, MonotonicClock, utc_now_iso
from duet.config import field, to_dict
from duet.data.layout import config_hash
from duet.data.store import EpisodeStore, EpisodeWriter, StoreError, encode_jpeg, episode_health, health_line
from duet.errors import ConfigError, DuetError
from duet.hardware.interfaces import Frame, JointState

log = logging.getLogger("duet.data.recorder")


@dataclass
class RecorderConfig:
    max_pending_frames: int = field(
        400, help="images that may wait for the writer (~2 s of 4 cameras at 50 Hz)"
    )
    encoder_threads: int = field(2, help="JPEG encoder threads used by the writer")
    commit_timeout_s: float = field(60.0, help="how long stop_episode waits for the writer to drain")

    def __post_init__(self):
        if self.max_pending_frames < 1 or self.encoder_threads < 1:
            raise ConfigError("recorder: max_pending_frames and encoder_threads must be >= 1")


@dataclass
class EpisodeResult:
    index: int | None  # episode index in the store (None when discarded)
    meta: dict[str, Any]  # the committed per-episode metadata (health included)
    line: str  # one-line health summary


_REPEAT = object()  # marker: write the camera's previous frame again (writer fell behind)


# Messages to the writer thread (one queue, handled in order; the writer matches on the type).
@dataclass(frozen=True)
class _Begin:
    meta: dict[str, Any]  # the episode's metadata at its start


@dataclass(frozen=True)
class _Step:
    row: dict[str, Any]  # one tick's low-dimensional values, by data key
    frames: dict[str, Any]  # per camera: the Frame to write, _REPEAT, or None (no frame yet)


@dataclass
class _EndReply:
    """What the writer hands back to stop_episode: a result or an error, then done is set."""

    done: threading.Event
    result: EpisodeResult | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class _End:
    discard: bool  # discard instead of committing
    dropped: dict[str, int]  # frames repeated per camera because the writer fell behind
    meta: dict[str, Any]  # metadata known only at the end
    reply: _EndReply


@dataclass(frozen=True)
class _Quit:
    pass


_WriterMessage = _Begin | _Step | _End | _Quit


@dataclass
class RecorderStats:
    ticks: int = 0
    frames_queued: int = 0
    frames_written: int = 0
    frames_encoded: int = 0
    writer_dropped: int = 0
    bytes_written: int = 0
    encode_s: float = 0.0  # writer thread time spent encoding + writing images
    write_busy_s: float = 0.0  # writer thread time busy (not waiting for work)


class Recorder:
    """Samples sensors on tick(now); a writer thread encodes and writes."""

    def __init__(
        self,
        store: EpisodeStore,
        clock: Clock | None = None,
        config: RecorderConfig | None = None,
        rig: Any = None,
        calibration_hash: str = "",
    ):
        store._require_writable()  # the writer lock is held from here to close()
        self.store = store
        self.spec = store.spec
        self.clock = clock or MonotonicClock()
        self.config = config or RecorderConfig()
        self.rig = to_dict(rig) if rig is not None else None
        self.calibration_hash = calibration_hash
        self.stats = RecorderStats()
        self._joints: dict[str, JointState | None] = {a.name: None for a in self.spec.arms}
        self._commands: dict[str, tuple[np.ndarray, float] | None] = {f: None for f in self.spec.followers}
        self._frames: dict[str, Frame | None] = {c.name: None for c in self.spec.cameras}
        self._lock = threading.Lock()
        self._q: queue.SimpleQueue[_WriterMessage] = queue.SimpleQueue()
        self._pending = 0  # frames waiting for the writer
        self._pending_lock = threading.Lock()
        self._recording = False
        self._episode_dropped: dict[str, int] = {}
        self._error: BaseException | None = None
        self._pool = ThreadPoolExecutor(self.config.encoder_threads, thread_name_prefix="duet-encode")
        self._thread = threading.Thread(target=self._writer_loop, name="duet-recorder-writer", daemon=True)
        self._closed = False
        self._thread.start()

    # ------------------------------------------------------------------ inputs (any thread)
    def reset_inputs(self) -> None:
        """Forget the latest sample of every arm, command and camera, so a tick before a stream's
        next sample is recorded as missing (NaN / age inf), as at start-up. For a source that is
        replayed episode by episode (bag import); not while an episode is being recorded."""
        if self._recording:
            raise StoreError("recorder: reset_inputs while an episode is being recorded; stop it first")
        self._joints = dict.fromkeys(self._joints)
        self._commands = dict.fromkeys(self._commands)
        self._frames = dict.fromkeys(self._frames)

    def update_joints(self, arm: str, state: JointState) -> None:
        if arm not in self._joints:
            raise ConfigError(f"recorder: unknown arm {arm!r} (store has {', '.join(self._joints)})")
        self._joints[arm] = state

    def update_command(self, follower: str, command: np.ndarray, stamp: float) -> None:
        if follower not in self._commands:
            raise ConfigError(
                f"recorder: {follower!r} is not a recorded follower ({', '.join(self._commands)})"
            )
        self._commands[follower] = (np.asarray(command, dtype=np.float32), float(stamp))

    def update_frame(self, camera: str, frame: Frame | None) -> None:
        if camera not in self._frames:
            raise ConfigError(f"recorder: unknown camera {camera!r} (store has {', '.join(self._frames)})")
        if frame is not None:
            self._frames[camera] = frame

    # ------------------------------------------------------------------ episode control
    @property
    def recording(self) -> bool:
        return self._recording

    @property
    def error(self) -> BaseException | None:
        """The writer's error (e.g. disk full) for the current episode, if any."""
        return self._error

    def start_episode(self, task: str = "", operator: str = "", **meta: Any) -> None:
        if self._recording:
            raise StoreError("recorder: an episode is already being recorded; stop it first")
        if self.store.pending is not None:
            raise StoreError(
                f"{self.store.location}: holds an unrecovered partial episode; run `duet data recover {self.store.location}`"
            )
        m = {"task": task, "operator": operator, "start_time": utc_now_iso(), **meta}
        if self.rig is not None:
            m["rig"] = self.rig
            m["rig_hash"] = config_hash(self.rig)
        if self.calibration_hash:
            m["calibration_hash"] = self.calibration_hash
        self._error = None
        self._episode_dropped = {c: 0 for c in self._frames}
        self._recording = True
        self._q.put(_Begin(m))

    def tick(self, now: float) -> None:
        """Sample the latest value of every sensor at tick time `now`. Never blocks."""
        if not self._recording:
            return
        spec = self.spec
        row: dict[str, Any] = {"t": now}
        for name, js in self._joints.items():
            n = len(spec.arm(name).joints)
            if js is None:
                row[f"{name}.position"] = np.full(n, np.nan, np.float32)
                row[f"{name}.stamp"] = np.nan
                row[f"{name}.age"] = np.inf
                continue
            row[f"{name}.position"] = js.position
            row[f"{name}.velocity"] = js.velocity
            row[f"{name}.effort"] = js.effort
            row[f"{name}.stamp"] = js.stamp
            row[f"{name}.age"] = now - js.stamp
        acts, stamps, ages = [], [], []
        for f in spec.followers:
            cmd = self._commands[f]
            if cmd is None:
                js = self._joints[f]
                acts.append(js.position if js is not None else np.full(len(spec.arm(f).joints), np.nan))
                stamps.append(np.nan)
                ages.append(np.inf)
            else:
                acts.append(cmd[0])
                stamps.append(cmd[1])
                ages.append(now - cmd[1])
        row["action"] = np.concatenate(acts).astype(np.float32)
        row["action.stamp"] = np.asarray(stamps)
        row["action.age"] = np.asarray(ages)
        frames: dict[str, Any] = {}
        n_new = sum(1 for c in self._frames if self._frames[c] is not None)
        with self._pending_lock:
            overloaded = self._pending + n_new > self.config.max_pending_frames
            if not overloaded:
                self._pending += n_new
        for cam, fr in self._frames.items():
            if fr is None:
                row[f"{cam}.stamp"] = np.nan
                row[f"{cam}.age"] = np.inf
                row[f"{cam}.index"] = -1
                frames[cam] = None
                continue
            row[f"{cam}.stamp"] = fr.stamp
            row[f"{cam}.age"] = now - fr.stamp
            row[f"{cam}.index"] = fr.index
            if overloaded:
                frames[cam] = _REPEAT
                self._episode_dropped[cam] += 1
                self.stats.writer_dropped += 1
            else:
                frames[cam] = fr
                self.stats.frames_queued += 1
        self.stats.ticks += 1
        self._q.put(_Step(row, frames))

    def stop_episode(
        self, discard: bool = False, timeout: float | None = None, meta: dict[str, Any] | None = None
    ) -> EpisodeResult:
        """End the episode: wait for the writer to drain, then commit (or discard).
        meta: more metadata known only at the end (an outcome, a seed), merged into the
        episode's (the health summary wins on a clash).
        Raises the writer's error (e.g. DiskFullError) if it failed; the episode is then
        discarded and previous episodes are intact."""
        if not self._recording:
            raise StoreError("recorder: no episode is being recorded")
        self._recording = False
        reply = _EndReply(threading.Event())
        self._q.put(_End(discard, dict(self._episode_dropped), dict(meta or {}), reply))
        if not reply.done.wait(self.config.commit_timeout_s if timeout is None else timeout):
            raise StoreError(
                f"recorder: the writer did not finish within {self.config.commit_timeout_s:.0f} s "
                "(disk too slow?); the episode stays recoverable with `duet data recover`"
            )
        if reply.error is not None:
            raise reply.error
        res = reply.result
        if res is None:  # the writer sets a result or an error before done
            raise StoreError("recorder: the writer finished the episode without a result (a bug in duet)")
        log.info("episode %s: %s", res.index, res.line)
        return res

    def close(self) -> None:
        """Stop the writer thread (discarding an unfinished episode)."""
        if self._closed:
            return
        if self._recording:
            try:
                self.stop_episode(discard=True)
            except DuetError:
                pass
        self._closed = True
        self._q.put(_Quit())
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)
        self.store.close()  # release the writer lock

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pending_frames(self) -> int:
        return self._pending

    # ------------------------------------------------------------------ writer thread
    def _release(self, n: int) -> None:
        if n:
            with self._pending_lock:
                self._pending -= n

    def _fail(self, e: BaseException) -> None:
        if self._error is None:
            self._error = e
            log.error("recorder writer: %s", e)

    def _write_step(
        self,
        ep: EpisodeWriter,
        row: dict[str, Any],
        frames: dict[str, Any],
        last_src: dict[str, Any],
        last_key: dict[str, tuple],
        jobs: list[Future],
    ) -> None:
        """Queue the step's image encodes and writes on the pool; append its row."""
        jpeg = self.spec.image_codec == "jpeg"
        q = self.spec.jpeg_quality
        t = ep.length
        counted = sum(1 for f in frames.values() if f is not None and f is not _REPEAT)
        handed = 0  # pending frames whose release is now owed by a pool job or done here
        try:
            ep.reserve(t + 1)
            t0 = time.perf_counter()
            handed = self._queue_images(ep, t, frames, last_src, last_key, jobs, jpeg, q)
        finally:
            self._release(counted - handed)
        ep.append(row, images_written=True)
        self.stats.encode_s += time.perf_counter() - t0
        if len(jobs) > 4 * len(self.spec.cameras) * 50:
            jobs[:] = [j for j in jobs if not j.done() or j.exception() is not None]

    def _queue_images(
        self,
        ep: EpisodeWriter,
        t: int,
        frames: dict[str, Any],
        last_src: dict[str, Any],
        last_key: dict[str, tuple],
        jobs: list[Future],
        jpeg: bool,
        q: int,
    ) -> int:
        handed = 0
        for c in self.spec.cameras:
            fr = frames[c.name]
            key = f"{c.name}.color"
            new = (
                fr is not None and fr is not _REPEAT and last_key.get(c.name) != (id(fr), fr.index, fr.stamp)
            )
            if new:
                last_key[c.name] = (id(fr), fr.index, fr.stamp)
                if jpeg and fr.jpeg is not None:
                    last_src[key] = fr.jpeg  # stored as delivered, no re-encode
                elif jpeg:
                    last_src[key] = self._pool.submit(self._encode, fr.color, q)
                else:
                    last_src[key] = fr.color
                if c.depth:
                    last_src[f"{c.name}.depth"] = fr.depth
            src = last_src.get(key)
            if src is None:
                src = _black(c, jpeg, q)
            jobs.append(self._pool.submit(self._put, ep, key, t, src, 1 if new else 0))
            handed += 1 if new else 0
            if c.depth:
                d = last_src.get(f"{c.name}.depth")
                if d is None:
                    d = np.zeros((c.height, c.width), np.uint16)
                jobs.append(self._pool.submit(self._put, ep, f"{c.name}.depth", t, d, 0))
        return handed

    def _encode(self, img: np.ndarray, q: int) -> bytes:
        out = encode_jpeg(img, q)
        self.stats.frames_encoded += 1
        return out

    def _put(self, ep: EpisodeWriter, key: str, t: int, src: Any, release: int) -> None:
        try:
            data = src.result() if isinstance(src, Future) else src
            ep.write_image(key, t, data)
            self.stats.frames_written += 1
        finally:
            self._release(release)

    def _writer_loop(self) -> None:
        ep: EpisodeWriter | None = None
        last_src: dict[str, Any] = {}  # per image key: bytes / array, or a Future of them
        last_key: dict[str, tuple] = {}
        jobs: list[Future] = []  # image writes in flight
        while True:
            msg = self._q.get()
            t_busy = time.perf_counter()
            match msg:
                case _Quit():
                    return
                case _Begin():
                    last_src.clear()
                    last_key.clear()
                    jobs.clear()
                    ep = self._open_episode(msg.meta, jobs)
                case _Step():
                    ep = self._write_or_skip_step(ep, msg, last_src, last_key, jobs)
                case _End():
                    try:
                        self._end_episode(ep, msg, jobs)
                    finally:
                        ep = None
                        msg.reply.done.set()
            self.stats.write_busy_s += time.perf_counter() - t_busy

    def _open_episode(self, meta: dict[str, Any], jobs: list[Future]) -> EpisodeWriter | None:
        """Open the store's episode writer; a failure is kept for stop_episode (None returned)."""
        try:
            ep = self.store.episode(meta)
            ep.before_flush = lambda jobs=jobs: _wait_all(jobs, raise_errors=True)
            return ep
        except BaseException as e:  # noqa: BLE001 - reported at stop_episode
            self._fail(e)
            return None

    def _write_or_skip_step(
        self,
        ep: EpisodeWriter | None,
        step: _Step,
        last_src: dict[str, Any],
        last_key: dict[str, tuple],
        jobs: list[Future],
    ) -> EpisodeWriter | None:
        """Write one tick, or only release its frames once the episode has failed. A write
        error discards the episode (None returned) and is kept for stop_episode."""
        if ep is None or self._error is not None:
            self._release(sum(1 for f in step.frames.values() if f is not None and f is not _REPEAT))
            return ep
        try:
            self._write_step(ep, step.row, step.frames, last_src, last_key, jobs)
        except BaseException as e:  # noqa: BLE001 - reported at stop_episode
            self._fail(e)
            _wait_all(jobs)
            ep.discard()
            return None
        return ep

    def _end_episode(self, ep: EpisodeWriter | None, end: _End, jobs: list[Future]) -> None:
        """Drain the image writes, then commit or discard; the outcome goes to end.reply."""
        reply = end.reply
        try:
            if ep is not None and self._error is None:
                try:
                    _wait_all(jobs, raise_errors=True)
                except BaseException as e:  # noqa: BLE001
                    self._fail(e)
            else:
                _wait_all(jobs)
            if self._error is not None:
                if ep is not None:
                    ep.discard()
                reply.error = self._error
            elif ep is None:
                reply.error = StoreError("recorder: the episode was never opened")
            elif end.discard or ep.length == 0:
                ep.discard()
                reply.result = EpisodeResult(None, {"length": ep.length}, f"discarded ({ep.length} steps)")
            else:
                reply.result = self._commit_episode(ep, end)
        except BaseException as e:  # noqa: BLE001
            reply.error = e

    def _commit_episode(self, ep: EpisodeWriter, end: _End) -> EpisodeResult:
        """Commit with the end metadata, the health summary and the writer's figures."""
        dropped = end.dropped
        extra = {
            "writer_dropped": int(sum(dropped.values())),
            "writer_dropped_per_camera": dropped,
            "mb_written": ep.bytes_written / 1e6,
        }
        health = episode_health(self.spec, ep.data())
        if extra["writer_dropped"]:
            health["flags"].append(f"writer fell behind: {extra['writer_dropped']} frames repeated")
            health["flagged"] = True
        ft = np.asarray(ep.flush_times).reshape(-1, 3)
        if len(ft):
            extra["flush_ms"] = {
                "wait_images_max": float(ft[:, 0].max() * 1e3),
                "rows_max": float(ft[:, 1].max() * 1e3),
                "sync_p50": float(np.percentile(ft[:, 2], 50) * 1e3),
                "sync_max": float(ft[:, 2].max() * 1e3),
            }
        idx = ep.commit({**end.meta, **health, **extra})
        self.stats.bytes_written += ep.bytes_written
        return EpisodeResult(idx, ep.committed_meta, health_line(ep.committed_meta))


_BLACK: dict[tuple, Any] = {}


def _black(cam: Any, jpeg: bool, q: int) -> Any:
    key = (cam.height, cam.width, jpeg, q)
    if key not in _BLACK:
        img = np.zeros((cam.height, cam.width, 3), np.uint8)
        _BLACK[key] = encode_jpeg(img, q) if jpeg else img
    return _BLACK[key]


def _wait_all(jobs: list[Future], raise_errors: bool = False) -> None:
    """Wait for every queued image write; optionally raise the first failure."""
    err = None
    for j in jobs:
        e = j.exception()
        if e is not None and err is None:
            err = e
    jobs.clear()
    if err is not None and raise_errors:
        raise err


def process_cpu_s() -> float:
    """CPU seconds used by this process (user + system), for benchmarks."""
    t = os.times()
    return t.user + t.system
