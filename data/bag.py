"""rosbag2 in and out, without ROS: `duet data import-bag` / `export-bag`.

Bags are read and written with the pure-Python `rosbags` library (rosbag2 sqlite3 and
MCAP), so neither needs a ROS install.

Import: sensor_msgs/JointState and (Compressed)Image topics are mapped to the arms and
cameras of a DatasetSpec (a rig) by the topic names the duet nodes use

    /<arm>/joint_states         sensor_msgs/msg/JointState       (required, every arm)
    /<follower>/command         sensor_msgs/msg/JointState       (optional: the action)
    /<camera>/image/compressed  sensor_msgs/msg/CompressedImage  (required, every camera;
    /<camera>/image             sensor_msgs/msg/Image             the raw topic if no compressed one)

or by a topic map {duet topic: bag topic}. Samples are resampled on their header stamps
at the spec's rate by the Recorder itself (each tick takes the latest sample whose stamp
is <= the tick), so every row carries the same stamp / age / health fields as a live
recording. A bag written by export_bag carries its recorded ticks on /duet/tick
(std_msgs/Header), which the import uses instead of a regular grid, so a store survives
zarr -> bag -> zarr with identical joints and byte-identical JPEG frames.

Episodes: one per bag (default), split where no sample came for more than `gap_s`, or
split by a marker topic: std_msgs/String (each message starts an episode whose task is its
text; an empty text ends the episode) or std_msgs/Bool (True starts, False ends). Markers
are placed at their bag (receive) time.

Every bag is read and checked before the store is opened: a bad bag (missing topic, header
stamps going backwards, a message type that cannot be mapped) is one BagError line naming
the bag and the topic, and the store is not touched.

Export: one episode as /<arm>/joint_states, /<follower>/command and
/<camera>/image/compressed (JPEG frames byte for byte; lossless stores: sensor_msgs/Image
rgb8 on /<camera>/image), plus /duet/tick and /duet/episode (std_msgs/String, the task).
Header and bag timestamps are the recorded stamps (the recorder's clock), one message per
distinct sample.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from duet.clock import utc_now_iso
from duet.data.layout import DatasetSpec, jpeg_size
from duet.data.recorder import Recorder, RecorderConfig
from duet.data.store import EpisodeStore
from duet.errors import DuetError
from duet.hardware.interfaces import Frame, JointState

JOINT_STATE = "sensor_msgs/msg/JointState"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
IMAGE = "sensor_msgs/msg/Image"
STRING = "std_msgs/msg/String"
BOOL = "std_msgs/msg/Bool"
HEADER = "std_msgs/msg/Header"
TICK_TOPIC = "/duet/tick"
EPISODE_TOPIC = "/duet/episode"
JPEG_FORMAT = "rgb8; jpeg compressed bgr8"  # image_transport's compressed format string (as convert.py)


class BagError(DuetError):
    """A bag that cannot be imported or exported (one line naming the bag and the topic)."""


def _typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def duet_topics(spec: DatasetSpec) -> dict[str, tuple[str, str]]:
    """The duet topic names of a spec: topic -> (kind, arm/camera name)."""
    out: dict[str, tuple[str, str]] = {}
    for a in spec.arms:
        out[f"/{a.name}/joint_states"] = ("joints", a.name)
    for f in spec.followers:
        out[f"/{f}/command"] = ("command", f)
    for c in spec.cameras:
        out[f"/{c.name}/image/compressed"] = ("image", c.name)
    return out


def parse_topic_map(items: Sequence[str]) -> dict[str, str]:
    """['DUET_TOPIC=BAG_TOPIC', ...] -> dict (the CLI's --topic)."""
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k.startswith("/") or not v.startswith("/"):
            raise BagError(
                f"--topic {it!r}: use DUET_TOPIC=BAG_TOPIC, e.g. /left_follower/joint_states=/puppet_left/joint_states"
            )
        out[k] = v
    return out


# ---------------------------------------------------------------------------- reading


@dataclass
class _Stream:
    kind: str  # joints | command | image
    name: str  # arm / camera
    topic: str  # the bag's topic
    required: bool
    stamps: list[int] = field(default_factory=list)  # header stamps, ns


@dataclass
class _Bag:
    path: str
    streams: list[_Stream]
    markers: list[tuple[int, Any]]  # (bag time ns, value)
    ticks: list[int]  # /duet/tick stamps, ns (empty: regular grid)


def _stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _resolve(spec: DatasetSpec, topic_map: dict[str, str], available: dict[str, str]) -> list[_Stream]:
    streams = []
    for duet_topic, (kind, name) in duet_topics(spec).items():
        topic = topic_map.get(duet_topic, duet_topic)
        if kind == "image" and topic not in available and duet_topic not in topic_map:
            raw = f"/{name}/image"
            topic = topic_map.get(raw, raw) if topic_map.get(raw, raw) in available else topic
        streams.append(_Stream(kind, name, topic, required=kind != "command"))
    return streams


_TYPES = {"joints": (JOINT_STATE,), "command": (JOINT_STATE,), "image": (COMPRESSED_IMAGE, IMAGE)}


def _joint_values(path: str, topic: str, msg: Any, names: list[str]) -> tuple[np.ndarray, ...]:
    n = len(names)
    pos = np.asarray(msg.position, np.float64)
    got = list(msg.name)
    if got and got != names and sorted(got) == sorted(names) and len(pos) == n:
        order = [got.index(j) for j in names]
    elif len(pos) == n:
        order = list(range(n))
    else:
        raise BagError(
            f"{path}: topic {topic}: {len(pos)} positions ({', '.join(got) or 'no names'}) for the "
            f"{n} joints {', '.join(names)}; map another topic with --topic or use a matching rig"
        )
    vel = np.asarray(msg.velocity, np.float64)
    eff = np.asarray(msg.effort, np.float64)
    vel = vel[order] if len(vel) == len(pos) else np.zeros(n)
    eff = eff[order] if len(eff) == len(pos) else np.zeros(n)
    return pos[order], vel, eff


def _image_value(path: str, topic: str, msg: Any, cam: Any, jpeg_store: bool, keep: bool) -> Any:
    """JPEG bytes (kept as they are) or an RGB array; None when not kept (checking pass)."""
    where = f"{path}: topic {topic}"
    if msg.__msgtype__ == COMPRESSED_IMAGE:
        data = bytes(msg.data)
        if data[:2] == b"\xff\xd8":
            try:
                h, w, _ = jpeg_size(data)
            except Exception as e:  # noqa: BLE001 - any parse failure is a bad frame
                raise BagError(f"{where}: a frame is not a readable JPEG ({e})") from None
            if (w, h) != (cam.width, cam.height):
                raise BagError(
                    f"{where}: frames are {w}x{h}, camera {cam.name} is {cam.width}x{cam.height}; use a matching rig"
                )
            if jpeg_store:
                return data if keep else None
        if not keep:
            return None
        import imagecodecs

        try:
            img = np.asarray(imagecodecs.imread(data))
        except Exception as e:  # noqa: BLE001
            raise BagError(f"{where}: cannot decode a {msg.format or 'compressed'} frame ({e})") from None
        return _rgb(where, img, "rgb8" if img.ndim == 3 else "mono8", cam)
    enc = msg.encoding.lower()
    if enc not in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8"):
        raise BagError(
            f"{where}: image encoding {msg.encoding!r} is not supported (rgb8, bgr8, rgba8, bgra8, mono8)"
        )
    if (msg.width, msg.height) != (cam.width, cam.height):
        raise BagError(
            f"{where}: frames are {msg.width}x{msg.height}, camera {cam.name} is {cam.width}x{cam.height}; use a matching rig"
        )
    if not keep:
        return None
    ch = 1 if enc == "mono8" else len(enc) - 1
    buf = np.frombuffer(bytes(msg.data), np.uint8)
    img = np.lib.stride_tricks.as_strided(
        buf, (msg.height, msg.width, ch), (msg.step, ch, 1), writeable=False
    ).copy()
    return _rgb(where, img, enc, cam)


def _rgb(where: str, img: np.ndarray, enc: str, cam: Any) -> np.ndarray:
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[..., :3]
    if enc.startswith("bgr"):
        img = img[..., ::-1]
    if img.shape[:2] != (cam.height, cam.width):
        raise BagError(
            f"{where}: frames are {img.shape[1]}x{img.shape[0]}, camera {cam.name} is {cam.width}x{cam.height}"
        )
    return np.ascontiguousarray(img, np.uint8)


def _open_reader(p: str) -> Any:
    from rosbags.highlevel import AnyReader

    if not Path(p).exists():
        raise BagError(f"{p}: no such bag (a rosbag2 directory or .mcap / .db3 file)")
    try:
        reader = AnyReader([Path(p)], default_typestore=_typestore())
        reader.open()
    except Exception as e:  # noqa: BLE001 - rosbags raises several types for unreadable bags
        raise BagError(
            f"{p}: not a readable rosbag2 bag ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    return reader


def _deserialize(p: str, reader: Any, conn: Any, raw: bytes) -> Any:
    try:
        return reader.deserialize(raw, conn.msgtype)
    except Exception as e:  # noqa: BLE001
        raise BagError(f"{p}: topic {conn.topic}: cannot decode a {conn.msgtype} message ({e})") from None


def _value(p: str, spec: DatasetSpec, s: _Stream, topic: str, msg: Any, keep: bool) -> Any:
    if s.kind == "image":
        return _image_value(p, topic, msg, spec.camera(s.name), spec.image_codec == "jpeg", keep)
    v = _joint_values(p, topic, msg, list(spec.arm(s.name).joints))
    return v if keep else None


def check_bag(
    path: str | Path,
    spec: DatasetSpec,
    topic_map: dict[str, str] | None = None,
    marker: str | None = None,
) -> _Bag:
    """Read and check one bag: every mapped topic present with a mappable type and frame
    size, header stamps never going backwards. Keeps the stamps, markers and ticks (the
    values are read again, as the ticks need them, by _Values)."""
    p = str(path)
    reader = _open_reader(p)
    try:
        available = {c.topic: c.msgtype for c in reader.connections}
        streams = _resolve(spec, topic_map or {}, available)
        by_topic: dict[str, _Stream] = {}
        for s in streams:
            if s.topic not in available:
                if s.required:
                    what = "joint states of " if s.kind == "joints" else "images of "
                    have = ", ".join(sorted(available)) or "no topics"
                    raise BagError(
                        f"{p}: topic {s.topic} ({what}{s.name}) is missing (the bag has {have}); "
                        f"map it with --topic {s.topic}=BAG_TOPIC"
                    )
                continue
            if available[s.topic] not in _TYPES[s.kind]:
                raise BagError(
                    f"{p}: topic {s.topic} has message type {available[s.topic]}, expected "
                    f"{' or '.join(_TYPES[s.kind])}; map another topic with --topic"
                )
            by_topic[s.topic] = s
        if marker is not None:
            if marker not in available:
                raise BagError(
                    f"{p}: marker topic {marker} is missing (the bag has {', '.join(sorted(available))})"
                )
            if available[marker] not in (STRING, BOOL):
                raise BagError(
                    f"{p}: marker topic {marker} has message type {available[marker]}, expected {STRING} or {BOOL}"
                )
        use_ticks = available.get(TICK_TOPIC) == HEADER
        wanted = set(by_topic) | ({marker} if marker else set()) | ({TICK_TOPIC} if use_ticks else set())
        bag = _Bag(p, [s for s in streams if s.topic in by_topic], [], [])
        conns = [c for c in reader.connections if c.topic in wanted]
        for conn, t_ns, raw in reader.messages(connections=conns):
            msg = _deserialize(p, reader, conn, raw)
            if conn.topic == marker:
                bag.markers.append((int(t_ns), msg.data))
                continue
            if conn.topic == TICK_TOPIC and use_ticks:
                bag.ticks.append(_stamp_ns(msg))
                continue
            s = by_topic[conn.topic]
            st = _stamp_ns(msg.header)
            if s.stamps and st < s.stamps[-1]:
                raise BagError(
                    f"{p}: topic {conn.topic}: header stamps go backwards at message {len(s.stamps)} "
                    f"({(s.stamps[-1] - st) * 1e-9:.6f} s earlier than the one before); re-stamp or drop the topic"
                )
            _value(p, spec, s, conn.topic, msg, keep=False)  # checks joint count and frame size
            s.stamps.append(st)
    finally:
        reader.close()
    for s in bag.streams:
        if s.required and not s.stamps:
            raise BagError(
                f"{p}: topic {s.topic} has no messages; record it or map another topic with --topic"
            )
    bag.ticks.sort()
    return bag


class _Values:
    """A checked bag's sample values, read in bag order as the ticks ask for them: only the
    samples read ahead of the tick being recorded (transport latency) are held in memory."""

    def __init__(self, bag: _Bag, spec: DatasetSpec):
        self._bag, self._spec = bag, spec
        self._reader = _open_reader(bag.path)
        index = {s.topic: i for i, s in enumerate(bag.streams)}
        conns = [c for c in self._reader.connections if c.topic in index]
        self._it = ((index[c.topic], c, raw) for c, _, raw in self._reader.messages(connections=conns))
        self._buf: list[dict[int, Any]] = [{} for _ in bag.streams]
        self._read = [0] * len(bag.streams)  # messages read per stream
        self._low = [0] * len(bag.streams)  # below this, values are dropped

    def get(self, i: int, j: int) -> Any:
        """The value of message j of stream i (j never decreases per stream)."""
        while self._read[i] <= j:
            k, conn, raw = next(self._it)
            s = self._bag.streams[k]
            msg = _deserialize(self._bag.path, self._reader, conn, raw)
            self._buf[k][self._read[k]] = _value(self._bag.path, self._spec, s, conn.topic, msg, keep=True)
            self._read[k] += 1
        buf = self._buf[i]
        for old in range(self._low[i], j):
            buf.pop(old, None)
        self._low[i] = j
        return buf[j]

    def close(self) -> None:
        self._reader.close()


# ---------------------------------------------------------------------------- episodes


def _windows(bag: _Bag, gap_s: float | None, marker: str | None, task: str) -> list[tuple[int, int, str]]:
    """Episode windows (start ns, end ns inclusive, task)."""
    required = [s for s in bag.streams if s.required]
    every = np.sort(np.concatenate([np.asarray(s.stamps, np.int64) for s in bag.streams]))
    first, last = int(every[0]), int(every[-1])
    if bag.ticks:
        first, last = min(first, bag.ticks[0]), max(last, bag.ticks[-1])
    if marker is not None:
        out: list[tuple[int, int, str]] = []
        open_: tuple[int, str] | None = None
        for t_ns, v in bag.markers:
            if open_ is not None:
                out.append((open_[0], t_ns - 1, open_[1]))
                open_ = None
            if isinstance(v, str) and v:
                open_ = (t_ns, v)
            elif isinstance(v, bool) and v:
                open_ = (t_ns, task)
        if open_ is not None:
            out.append((open_[0], last, open_[1]))
        return out
    if gap_s is None:
        return [(first, last, task)]
    req = np.sort(np.concatenate([np.asarray(s.stamps, np.int64) for s in required]))
    cut = np.flatnonzero(np.diff(req) > int(gap_s * 1e9))
    starts = [int(req[0])] + [int(req[i + 1]) for i in cut]
    ends = [int(req[i]) for i in cut] + [int(req[-1])]
    return [(a, b, task) for a, b in zip(starts, ends, strict=True)]


def _ticks(bag: _Bag, start: int, end: int, period_ns: int, grid: bool) -> np.ndarray:
    if bag.ticks:
        t = np.asarray(bag.ticks, np.int64)
        return t[(t >= start) & (t <= end)]
    t0 = start
    if grid:  # start where every required stream has a sample
        for s in bag.streams:
            if s.required:
                st = np.asarray(s.stamps, np.int64)
                inside = st[(st >= start) & (st <= end)]
                if len(inside) == 0:
                    return np.zeros(0, np.int64)
                t0 = max(t0, int(inside[0]))
    if end < t0:
        return np.zeros(0, np.int64)
    return t0 + period_ns * np.arange((end - t0) // period_ns + 1, dtype=np.int64)


@dataclass
class ImportedEpisode:
    bag: str
    index: int | None  # episode index in the store
    length: int
    line: str  # the recorder's health line


def import_bags(
    bags: Sequence[str | Path],
    out: str | Path,
    spec: DatasetSpec,
    *,
    rig: Any = None,
    topic_map: dict[str, str] | None = None,
    gap_s: float | None = None,
    marker: str | None = None,
    task: str = "",
    operator: str = "",
    storage_options: dict | None = None,
    on_episode: Callable[[ImportedEpisode], None] | None = None,
) -> list[ImportedEpisode]:
    """Import bags into the store at `out` (created with `spec` if absent; its layout must
    match otherwise). Every bag is checked first: a bad bag raises BagError and the store
    is not opened. Returns the episodes written, in order."""
    if gap_s is not None and marker is not None:
        raise BagError("import-bag: split by --gap or by --marker, not both")
    if gap_s is not None and gap_s <= 0:
        raise BagError(f"import-bag: --gap must be > 0 s, got {gap_s}")
    if not bags:
        raise BagError("import-bag: no bags given")
    checked = [check_bag(b, spec, topic_map, marker) for b in bags]  # the store is not touched yet
    period_ns = int(round(1e9 / spec.rate_hz))
    results: list[ImportedEpisode] = []
    store = EpisodeStore.open_or_create(out, spec, storage_options=storage_options)
    rec = Recorder(store, config=RecorderConfig(max_pending_frames=400), rig=rig)
    try:
        for bag in checked:
            values = _Values(bag, spec)
            try:
                for start, end, ep_task in _windows(bag, gap_s, marker, task):
                    ticks = _ticks(bag, start, end, period_ns, grid=marker is None)
                    if len(ticks) == 0:
                        continue
                    res = _record(rec, bag, values, ticks, ep_task, operator, spec)
                    n = int(res.meta.get("length", len(ticks)))
                    ep = ImportedEpisode(bag.path, res.index, n, res.line)
                    results.append(ep)
                    if on_episode is not None:
                        on_episode(ep)
            finally:
                values.close()
    finally:
        rec.close()  # releases the writer lock
    return results


def _record(
    rec: Recorder, bag: _Bag, values: _Values, ticks: np.ndarray, task: str, operator: str, spec: DatasetSpec
) -> Any:
    # The recorder keeps the latest sample of each sensor: forget the previous bag's, so a
    # tick before a stream's first sample is recorded as missing (NaN / age inf), as live.
    rec.reset_inputs()
    first = int(ticks[0]) * 1e-9  # the bag's header stamps: wall-clock time where it was recorded
    rec.start_episode(
        task=task,
        operator=operator,
        start_time=utc_now_iso(first),
        source={"bag": bag.path, "first_tick_stamp_s": first},
    )
    cursors = []
    for s in bag.streams:
        st = np.asarray(s.stamps, np.int64)
        cursors.append((s, np.searchsorted(st, ticks, side="right") - 1))
    last = [-1] * len(cursors)
    empty = np.empty((0, 0, 3), np.uint8)
    cap = rec.config.max_pending_frames // 2
    for k, tick in enumerate(ticks):
        for i, (s, idx) in enumerate(cursors):
            j = int(idx[k])
            if j < 0 or j == last[i]:
                continue
            last[i] = j
            stamp = s.stamps[j] * 1e-9
            v = values.get(i, j)
            if s.kind == "joints":
                names = tuple(spec.arm(s.name).joints)
                rec.update_joints(s.name, JointState(stamp, names, v[0], v[1], v[2]))
            elif s.kind == "command":
                rec.update_command(s.name, v[0], stamp)
            elif isinstance(v, bytes):
                rec.update_frame(s.name, Frame(stamp, j, empty, jpeg=v))
            else:
                rec.update_frame(s.name, Frame(stamp, j, v))
        rec.tick(int(tick) * 1e-9)
        while rec.pending_frames > cap and rec.error is None:  # the import waits for the writer
            time.sleep(0.001)
    return rec.stop_episode()


# ---------------------------------------------------------------------------- export


def _distinct(stamps: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
    """Rows holding a new sample: a finite stamp that differs from the previous row's."""
    s = np.asarray(stamps, np.float64)
    new = np.isfinite(s)
    change = np.ones(len(s), bool)
    change[1:] = s[1:] != s[:-1]
    if extra is not None:
        change[1:] |= extra[1:] != extra[:-1]
    return np.flatnonzero(new & change)


def _ns(sec: float) -> int:
    return int(round(float(sec) * 1e9))


def export_bag(
    store: EpisodeStore, episode: int, out: str | Path, storage: str = "mcap", overwrite: bool = False
) -> Path:
    """Write one episode as a rosbag2 bag. `out` ending in .mcap: a single MCAP file (what
    `ros2 bag info/play FILE.mcap` reads); otherwise a rosbag2 directory with
    metadata.yaml in `storage` (mcap or sqlite3)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    out = Path(out)
    single = out.suffix == ".mcap"
    if storage not in ("mcap", "sqlite3"):
        raise BagError(f"export-bag: storage {storage!r}: use mcap or sqlite3")
    if out.exists():
        if not overwrite:
            raise BagError(f"{out}: already exists; choose another --out or pass --overwrite")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    spec = store.spec
    sl = store.episode_slice(episode)
    meta = store.episode_meta(episode)
    ts = _typestore()
    T = ts.types
    msgs: list[tuple[int, str, Any]] = []  # (time ns, topic, message or a function making it)

    def header(ns: int, frame_id: str = "") -> Any:
        return T[HEADER](
            stamp=T["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000),
            frame_id=frame_id,
        )

    t = store.read("t", sl)
    for a in spec.arms:
        stamp = store.read(f"{a.name}.stamp", sl)
        pos, vel, eff = (store.read(f"{a.name}.{k}", sl) for k in ("position", "velocity", "effort"))
        for r in _distinct(stamp):
            ns = _ns(stamp[r])
            m = T[JOINT_STATE](
                header=header(ns, a.name),
                name=list(a.joints),
                position=pos[r].astype(np.float64),
                velocity=vel[r].astype(np.float64),
                effort=eff[r].astype(np.float64),
            )
            msgs.append((ns, f"/{a.name}/joint_states", m))
    act, act_stamp = store.read("action", sl), store.read("action.stamp", sl)
    col = 0
    for fi, f in enumerate(spec.followers):
        joints = list(spec.arm(f).joints)
        for r in _distinct(act_stamp[:, fi]):
            ns = _ns(act_stamp[r, fi])
            m = T[JOINT_STATE](
                header=header(ns),
                name=joints,
                position=act[r, col : col + len(joints)].astype(np.float64),
                velocity=np.zeros(0),
                effort=np.zeros(0),
            )
            msgs.append((ns, f"/{f}/command", m))
        col += len(joints)
    jpeg = spec.image_codec == "jpeg"

    def image(cam: Any, row: int, ns: int) -> Any:
        """One frame's message, read from the store when it is written (images are not held)."""
        step = sl.start + row
        if jpeg:
            data = store.read_raw_chunk(f"{cam.name}.color", step)
            if data is None:
                raise BagError(
                    f"{store.location}: episode {episode}: frame {row} of {cam.name} is missing; "
                    f"run `duet data info {store.location} --check`"
                )
            return T[COMPRESSED_IMAGE](
                header=header(ns, cam.name), format=JPEG_FORMAT, data=np.frombuffer(data, np.uint8)
            )
        img = store.read_frames(cam.name, [step])[0]
        return T[IMAGE](
            header=header(ns, cam.name),
            height=cam.height,
            width=cam.width,
            encoding="rgb8",
            is_bigendian=0,
            step=3 * cam.width,
            data=np.ascontiguousarray(img).reshape(-1),
        )

    for c in spec.cameras:
        stamp, index = store.read(f"{c.name}.stamp", sl), store.read(f"{c.name}.index", sl)
        topic = f"/{c.name}/image/compressed" if jpeg else f"/{c.name}/image"
        for r in _distinct(stamp, index):
            ns = _ns(stamp[r])
            msgs.append((ns, topic, lambda c=c, r=int(r), ns=ns: image(c, r, ns)))
    for ti in t:
        ns = _ns(ti)
        msgs.append((ns, TICK_TOPIC, header(ns)))
    if len(t):
        msgs.append((_ns(t[0]), EPISODE_TOPIC, T[STRING](data=str(meta.get("task", "")) or "episode")))
    msgs.sort(key=lambda x: x[0])  # stable: per topic, the rows' order

    plugin = StoragePlugin.MCAP if (single or storage == "mcap") else StoragePlugin.SQLITE3
    target = Path(tempfile.mkdtemp(prefix=".duet-bag-", dir=out.parent)) / "bag" if single else out
    try:
        with Writer(target, version=8, storage_plugin=plugin) as w:
            conns: dict[str, Any] = {}
            for ns, topic, m in msgs:
                m = m() if callable(m) else m
                if topic not in conns:
                    conns[topic] = w.add_connection(topic, m.__msgtype__, typestore=ts)
                w.write(conns[topic], ns, ts.serialize_cdr(m, m.__msgtype__))
        if single:
            (file,) = target.glob("*.mcap")
            file.replace(out)
    finally:
        if single:
            shutil.rmtree(target.parent, ignore_errors=True)
    return out
