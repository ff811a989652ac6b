"""Dataset tools behind `duet data ...`: info, plot, video, drop / merge / split,
push to a shared store, ALOHA HDF5 import / export, LeRobotDataset v3 export. (Replay on
arms drives hardware: duet.teleop.replay.)"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from duet.data.keys import ACTION, STATE, image_key
from duet.data.layout import DEFAULT_JOINTS, ArmSpec, CameraSpec, DatasetSpec
from duet.data.lock import describe_holder, pid_alive
from duet.data.store import EpisodeStore, StoreError, health_line

# ---------------------------------------------------------------------------- info


def _mb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def info_lines(store: EpisodeStore, verbose: bool = False) -> list[str]:
    spec = store.spec
    lengths = store.episode_lengths
    lines = [
        f"{store.location}: {store.n_episodes} episodes, {store.n_steps} steps "
        f"({store.n_steps / spec.rate_hz / 60:.1f} min at {spec.rate_hz:g} Hz), disk {_mb(store.disk_bytes())}",
        f"  arms: {', '.join(f'{a.name} ({a.role}, {len(a.joints)} joints)' for a in spec.arms)}; "
        f"action = {' + '.join(spec.followers)} ({spec.action_dim})",
        f"  cameras: {', '.join(f'{c.name} {c.width}x{c.height}' + (' +depth' if c.depth else '') for c in spec.cameras) or 'none'}"
        f"; images {spec.image_codec}" + (f" q{spec.jpeg_quality}" if spec.image_codec == "jpeg" else ""),
    ]
    w = store.writer()
    live = False
    if w is not None:
        ended = w.get("host") == socket.gethostname() and not pid_alive(w.get("pid", -1))
        live = not ended
        lines.append(
            f"  writer: {describe_holder(w)}"
            + (" (ended without releasing the lock; the next writer takes it over)" if ended else "")
        )
    pend = store.pending
    if pend is not None and int(pend.get("start", -1)) == store.n_steps:
        if live:
            lines.append(
                f"  episode being recorded by the writer: {pend.get('flushed', 0)} steps flushed so far"
            )
        else:
            lines.append(
                f"  PARTIAL episode left by a crash: {pend.get('flushed', 0)} steps; "
                f"run `duet data recover {store.location}` (or --discard)"
            )
    flagged = 0
    for i in range(store.n_episodes):
        m = store.episode_meta(i)
        flagged += bool(m.get("flagged"))
        head = (
            f"  [{i:4d}] {lengths[i]:6d} steps {lengths[i] / spec.rate_hz:7.1f} s  task={m.get('task', '')!r}"
        )
        if m.get("operator"):
            head += f" operator={m['operator']!r}"
        lines.append(
            head + "  " + health_line(m) if verbose else head + ("  FLAGGED" if m.get("flagged") else "")
        )
    if flagged and not verbose:
        lines.append(f"  {flagged} flagged episode(s): `duet data info {store.location} -v` shows why")
    return lines


# ---------------------------------------------------------------------------- plot / video


def plot_episode(store: EpisodeStore, i: int, out: str | Path) -> Path:
    """PNG of an episode's joint positions (solid) and commands (dashed) for every arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = store.spec
    keys = ["t", "action"] + [f"{a.name}.position" for a in spec.arms]
    d = store.read_episode(i, keys=keys)
    t = d["t"] - d["t"][0]
    fig, axes = plt.subplots(len(spec.arms), 1, figsize=(12, 3 * len(spec.arms)), sharex=True, squeeze=False)
    off = {}
    o = 0
    for f in spec.followers:
        off[f] = o
        o += len(spec.arm(f).joints)
    for ax, a in zip(axes[:, 0], spec.arms):
        pos = d[f"{a.name}.position"]
        for j, name in enumerate(a.joints):
            (line,) = ax.plot(t, pos[:, j], lw=1, label=name)
            if a.name in off:
                ax.plot(t, d["action"][:, off[a.name] + j], lw=1, ls="--", color=line.get_color())
        ax.set_title(f"{a.name} ({a.role})" + (": position solid, command dashed" if a.name in off else ""))
        ax.set_ylabel("rad / gripper 0..1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=4, loc="upper right")
    axes[-1, 0].set_xlabel("time (s)")
    m = store.episode_meta(i)
    fig.suptitle(f"{store.location} episode {i}: task {m.get('task', '')!r}")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def video_episode(
    store: EpisodeStore,
    i: int,
    out: str | Path,
    cameras: Sequence[str] | None = None,
    height: int = 240,
    progress: bool = False,
) -> Path:
    """MP4 of all cameras side by side (each scaled to `height`), at the recording rate."""
    import av
    import cv2
    from tqdm import tqdm

    spec = store.spec
    cams = list(cameras or spec.camera_names)
    if not cams:
        raise StoreError(f"{store.location}: no cameras to make a video of")
    sl = store.episode_slice(i)
    widths = [round(spec.camera(c).width * height / spec.camera(c).height) for c in cams]
    W = sum(widths) + (sum(widths) % 2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=int(round(spec.rate_hz)))
        stream.width, stream.height, stream.pix_fmt = W, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for t in tqdm(range(sl.start, sl.stop), desc="video", unit="frame", disable=not progress):
            canvas = np.zeros((height, W, 3), np.uint8)
            x = 0
            for c, w in zip(cams, widths):
                img = store.read_frames(c, [t])[0]
                canvas[:, x : x + w] = cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA)
                x += w
            for pkt in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                container.mux(pkt)
        for pkt in stream.encode():
            container.mux(pkt)
    return out


# ---------------------------------------------------------------------------- editing


def drop_episodes(store: EpisodeStore, indices: Sequence[int], progress: bool = False) -> int:
    drop = {store._check_index(i) for i in indices}
    keep = [i for i in range(store.n_episodes) if i not in drop]
    store.rewrite(keep, progress=progress)
    return len(drop)


def split_by_task(store: EpisodeStore, out_dir: str | Path, progress: bool = False) -> dict[str, Path]:
    """One store per task under out_dir (named after the task)."""
    groups: dict[str, list[int]] = {}
    for i in range(store.n_episodes):
        groups.setdefault(str(store.episode_meta(i).get("task", "")), []).append(i)
    out: dict[str, Path] = {}
    for task, idx in groups.items():
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in task) or "no_task"
        p = Path(out_dir) / f"{safe}.zarr"
        with EpisodeStore.open_or_create(p, store.spec) as dst:
            dst.copy_episodes_from(store, idx, progress=progress)
        out[task] = p
    return out


def merge_stores(
    sources: Sequence[str], dst: str, progress: bool = False, storage_options: dict | None = None
) -> int:
    """Append every episode of `sources` to dst (created with the first source's layout).
    dst may be any fsspec URL: this is also `duet data push`."""
    total = 0
    target: EpisodeStore | None = None
    try:
        for s in sources:
            src = EpisodeStore.open(s, "r")
            if target is None:
                target = EpisodeStore.open_or_create(dst, src.spec, storage_options=storage_options)
            total += len(target.copy_episodes_from(src, progress=progress))
    finally:
        if target is not None:
            target.close()  # release the writer lock
    return total


# ---------------------------------------------------------------------------- ALOHA HDF5


def _aloha_images(ds: Any) -> list[Any]:
    """Frames of an ALOHA image dataset: raw (T,H,W,3) or compressed (T, padded JPEG bytes)."""
    import imagecodecs

    arr = ds[()]
    if arr.ndim == 4:
        return list(arr)
    frames = []
    for row in arr:
        buf = bytes(np.asarray(row, np.uint8).tobytes())
        # ALOHA compresses with cv2.imencode on RGB arrays: decoding as RGB swaps channels back.
        frames.append(np.ascontiguousarray(imagecodecs.jpeg8_decode(buf)[..., ::-1]))
    return frames


def import_aloha(
    paths: Sequence[str | Path],
    dst: str | Path,
    task: str = "",
    fps: float = 50.0,
    image_codec: Literal["jpeg", "lossless"] = "jpeg",
    progress: bool = False,
) -> list[int]:
    """Import ALOHA/ACT HDF5 episodes (/observations/qpos, qvel, effort, images/<cam>,
    /action; 14 dims = left 6 joints + gripper, right 6 + gripper) into a store."""
    import h5py
    from tqdm import tqdm

    out = []
    store = None
    try:
        for p in tqdm(list(paths), desc="import", unit="ep", disable=not progress):
            p = Path(p)
            try:
                f = h5py.File(p, "r")
            except OSError as e:
                raise StoreError(f"{p}: not a readable HDF5 file ({e}); check the path") from None
            with f:
                for key in ("/observations/qpos", "/action"):
                    if key not in f:
                        raise StoreError(
                            f"{p}: no {key}; not an ALOHA episode (expected /observations/qpos, /action)"
                        )
                qpos = np.asarray(f["/observations/qpos"], np.float32)
                dim = qpos.shape[1]
                if dim % 2:
                    raise StoreError(f"{p}: qpos has {dim} dims; expected left + right arms (e.g. 14)")
                nj = dim // 2
                joints = (
                    list(DEFAULT_JOINTS) if nj == 7 else [f"joint{j}" for j in range(nj - 1)] + ["gripper"]
                )
                cams = sorted(f["/observations/images"].keys()) if "/observations/images" in f else []
                images = {c: _aloha_images(f[f"/observations/images/{c}"]) for c in cams}
                shapes = {c: np.asarray(images[c][0]).shape for c in cams}
                spec = DatasetSpec(
                    rate_hz=fps,
                    arms=[
                        ArmSpec("left_follower", "follower", joints),
                        ArmSpec("right_follower", "follower", joints),
                    ],
                    followers=["left_follower", "right_follower"],
                    cameras=[CameraSpec(c, shapes[c][1], shapes[c][0]) for c in cams],
                    image_codec=image_codec,
                )
                if store is None:
                    store = EpisodeStore.open_or_create(dst, spec)
                else:
                    store.check_compatible(spec, where=str(p))
                T = len(qpos)
                qvel = (
                    np.asarray(f["/observations/qvel"], np.float32)
                    if "/observations/qvel" in f
                    else np.zeros_like(qpos)
                )
                eff = (
                    np.asarray(f["/observations/effort"], np.float32)
                    if "/observations/effort" in f
                    else np.zeros_like(qpos)
                )
                action = np.asarray(f["/action"], np.float32)
                block: dict[str, Any] = {
                    "t": np.arange(T) / fps,
                    "action": action,
                    "left_follower.position": qpos[:, :nj],
                    "right_follower.position": qpos[:, nj:],
                    "left_follower.velocity": qvel[:, :nj],
                    "right_follower.velocity": qvel[:, nj:],
                    "left_follower.effort": eff[:, :nj],
                    "right_follower.effort": eff[:, nj:],
                }
                for c in cams:
                    block[f"{c}.color"] = images[c]
                meta = {
                    "task": task or p.stem,
                    "operator": "",
                    "source": {"format": "aloha_hdf5", "file": p.name},
                    "sim": bool(f.attrs.get("sim", False)),
                    "timestamps": "synthesized from the step index (ALOHA HDF5 stores none); ages unknown",
                }
                with store.episode(meta) as ep:
                    ep.extend(block)
                out.append(store.n_episodes - 1)
    finally:
        if store is not None:
            store.close()  # release the writer lock
    if store is None:
        raise StoreError("import-aloha: no input files given")
    return out


def export_aloha(store: EpisodeStore, i: int, out: str | Path) -> Path:
    """Write episode i as an ALOHA HDF5 file (raw uint8 images)."""
    import h5py

    spec = store.spec
    if len(spec.followers) != 2:
        raise StoreError(
            f"{store.location}: ALOHA export needs exactly 2 followers (have {len(spec.followers)})"
        )
    d = store.read_episode(i)
    cat = lambda s: np.concatenate([d[f"{f}.{s}"] for f in spec.followers], axis=1)  # noqa: E731
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(out, "w") as h:
        h.attrs["sim"] = bool(store.episode_meta(i).get("sim", False))
        obs = h.create_group("observations")
        obs.create_dataset("qpos", data=cat("position"))
        obs.create_dataset("qvel", data=cat("velocity"))
        obs.create_dataset("effort", data=cat("effort"))
        im = obs.create_group("images")
        for c in spec.camera_names:
            im.create_dataset(c, data=d[f"{c}.color"], chunks=(1, *d[f"{c}.color"].shape[1:]))
        h.create_dataset("action", data=d["action"])
    return out


# ---------------------------------------------------------------------------- LeRobot v3 export

# The files export_lerobot writes (paths relative to the output directory).
_LEROBOT_FILES = re.compile(
    r"(data/chunk-\d+/file-\d+\.parquet|videos/observation\.images\.[^/]+/chunk-\d+/file-\d+\.mp4"
    r"|meta/(info\.json|stats\.json|tasks\.parquet|episodes/chunk-\d+/file-\d+\.parquet))"
)


def _remove_previous_export(out: Path) -> None:
    """--overwrite: delete the files a previous export wrote, and nothing else. Refuses
    when the directory holds anything an export does not write."""
    info = out / "meta" / "info.json"
    try:
        is_export = "codebase_version" in json.loads(info.read_text())
    except (OSError, ValueError, TypeError):
        is_export = False
    if not is_export:
        raise StoreError(
            f"{out}: not empty and not a previous LeRobot export (no readable meta/info.json); "
            "--overwrite replaces only an export: choose another directory or empty it"
        )
    ours = []
    for dirpath, _dirs, files in os.walk(out):
        for f in files:
            rel = Path(dirpath, f).relative_to(out).as_posix()
            if not _LEROBOT_FILES.fullmatch(rel) or Path(dirpath, f).is_symlink():
                raise StoreError(
                    f"{out}: --overwrite replaces only what a previous export wrote, but {rel} is not "
                    "one of its files; move it away or choose another directory"
                )
            ours.append(Path(dirpath, f))
    for path in ours:
        path.unlink()
    for dirpath, _dirs, _files in os.walk(out, topdown=False):
        if Path(dirpath) != out and not any(Path(dirpath).iterdir()):
            Path(dirpath).rmdir()


def export_lerobot(
    store: EpisodeStore,
    out_dir: str | Path,
    episodes: Sequence[int] | None = None,
    robot_type: str = "aloha",
    vcodec: str = "libx264",
    progress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export to the LeRobotDataset v3.0 layout: data/chunk-000/file-000.parquet,
    videos/<key>/chunk-000/file-000.mp4 (all episodes concatenated), meta/info.json,
    meta/episodes/chunk-000/file-000.parquet, meta/tasks.parquet, meta/stats.json.
    LeRobot's feature names are duet's batch keys (observation.state, action, observation.images.<cam>)."""
    from tqdm import tqdm

    out = Path(out_dir)
    _prepare_export_dir(out, overwrite)
    eps = list(range(store.n_episodes)) if episodes is None else [store._check_index(i) for i in episodes]
    if not eps:
        raise StoreError(f"{store.location}: no episodes to export")
    frames = _LeRobotFrames(store.spec)
    videos = _LeRobotVideos(out, store.spec, vcodec)
    try:
        for new_i, i in enumerate(tqdm(eps, desc="export", unit="ep", disable=not progress)):
            frames.add_episode(store, i, new_i, videos)
        videos.flush()
    finally:
        videos.close()
    _write_lerobot_tables(out, frames)
    _write_lerobot_info(out, store.spec, frames, robot_type, vcodec, n_episodes=len(eps))
    _write_lerobot_stats(out, store, eps, n_frames=frames.index)
    return out


def _prepare_export_dir(out: Path, overwrite: bool) -> None:
    """An export goes to an empty directory, or (overwrite) replaces a previous export."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise StoreError(f"{out}: exists and is not empty; choose another directory or pass --overwrite")
        _remove_previous_export(out)


class _LeRobotVideos:
    """One mp4 per camera, all episodes concatenated, encoded as the episodes are read."""

    def __init__(self, out: Path, spec: DatasetSpec, vcodec: str):
        import av

        self._av = av
        self.containers: dict[str, Any] = {}
        self.streams: dict[str, Any] = {}
        for c in spec.camera_names:
            p = out / "videos" / image_key(c) / "chunk-000" / "file-000.mp4"
            p.parent.mkdir(parents=True, exist_ok=True)
            cont = av.open(str(p), "w")
            cam = spec.camera(c)
            st = cont.add_stream(vcodec, rate=int(round(spec.rate_hz)))
            if not isinstance(st, av.VideoStream):
                cont.close()
                raise StoreError(
                    f"{vcodec!r} is not a video codec: export with a video codec such as libx264"
                )
            st.width, st.height, st.pix_fmt = cam.width, cam.height, "yuv420p"
            st.options = {"preset": "veryfast", "crf": "18", "g": "2"} if vcodec == "libx264" else {}
            self.containers[c], self.streams[c] = cont, st

    def encode(self, store: EpisodeStore, camera: str, steps: slice) -> None:
        """Append the camera's frames of these store steps."""
        for t in range(steps.start, steps.stop):
            frame = self._av.VideoFrame.from_ndarray(store.read_frames(camera, [t])[0], format="rgb24")
            for pkt in self.streams[camera].encode(frame):
                self.containers[camera].mux(pkt)

    def flush(self) -> None:
        """Write out the frames the encoders still hold."""
        for c in self.containers:
            for pkt in self.streams[c].encode():
                self.containers[c].mux(pkt)

    def close(self) -> None:
        for cont in self.containers.values():
            cont.close()


class _LeRobotFrames:
    """The frame table's columns, the per-episode rows and the task list, filled episode by episode."""

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.cols: dict[str, list] = {
            k: [] for k in (STATE, ACTION, "timestamp", "frame_index", "episode_index", "index", "task_index")
        }
        self.episode_rows: list[dict[str, Any]] = []
        self.tasks: dict[str, int] = {}  # task -> task_index, in order of first appearance
        self.index = 0  # frames so far (the next frame's global index)

    def add_episode(self, store: EpisodeStore, i: int, new_i: int, videos: _LeRobotVideos) -> None:
        """Store episode i becomes export episode new_i: its frames, its row, its videos."""
        spec = self.spec
        fps = spec.rate_hz
        task = str(store.episode_meta(i).get("task", ""))
        ti = self.tasks.setdefault(task, len(self.tasks))
        sl = store.episode_slice(i)
        L = sl.stop - sl.start
        index = self.index
        state_keys = [f"{f}.position" for f in spec.followers]
        d = store.read_episode(i, keys=[*state_keys, "action"])
        state = np.concatenate([d[k] for k in state_keys], axis=1).astype(np.float32)
        cols = self.cols
        cols[STATE].extend(state.tolist())
        cols[ACTION].extend(d["action"].astype(np.float32).tolist())
        cols["timestamp"].extend((np.arange(L) / fps).astype(np.float32).tolist())
        cols["frame_index"].extend(range(L))
        cols["episode_index"].extend([new_i] * L)
        cols["index"].extend(range(index, index + L))
        cols["task_index"].extend([ti] * L)
        row: dict[str, Any] = {
            "episode_index": new_i,
            "tasks": [task],
            "length": L,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": index,
            "dataset_to_index": index + L,
        }
        for c in spec.camera_names:
            vk = image_key(c)
            row[f"videos/{vk}/chunk_index"] = 0
            row[f"videos/{vk}/file_index"] = 0
            row[f"videos/{vk}/from_timestamp"] = index / fps
            row[f"videos/{vk}/to_timestamp"] = (index + L) / fps
            videos.encode(store, c, sl)
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        self.episode_rows.append(row)
        self.index += L


def _write_lerobot_tables(out: Path, frames: _LeRobotFrames) -> None:
    """data/chunk-000/file-000.parquet, meta/episodes/chunk-000/file-000.parquet, meta/tasks.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec, cols = frames.spec, frames.cols
    table = pa.table(
        {
            STATE: pa.array(cols[STATE], type=pa.list_(pa.float32(), spec.state_dim)),
            ACTION: pa.array(cols[ACTION], type=pa.list_(pa.float32(), spec.action_dim)),
            "timestamp": pa.array(cols["timestamp"], pa.float32()),
            "frame_index": pa.array(cols["frame_index"], pa.int64()),
            "episode_index": pa.array(cols["episode_index"], pa.int64()),
            "index": pa.array(cols["index"], pa.int64()),
            "task_index": pa.array(cols["task_index"], pa.int64()),
        }
    )
    (out / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "data" / "chunk-000" / "file-000.parquet")
    (out / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pylist(frames.episode_rows),
        out / "meta" / "episodes" / "chunk-000" / "file-000.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "task_index": pa.array(list(frames.tasks.values()), pa.int64()),
                "task": pa.array(list(frames.tasks.keys()), pa.string()),
            }
        ),
        out / "meta" / "tasks.parquet",
    )


def _write_lerobot_info(
    out: Path, spec: DatasetSpec, frames: _LeRobotFrames, robot_type: str, vcodec: str, n_episodes: int
) -> None:
    """meta/info.json: the features (state, action, videos, per-frame scalars) and the file layout."""
    fps = spec.rate_hz
    names = [f"{f}.{j}" for f in spec.followers for j in spec.arm(f).joints]
    features: dict[str, Any] = {
        STATE: {"dtype": "float32", "shape": [spec.state_dim], "names": names},
        ACTION: {"dtype": "float32", "shape": [spec.action_dim], "names": names},
    }
    for c in spec.camera_names:
        cam = spec.camera(c)
        features[image_key(c)] = {
            "dtype": "video",
            "shape": [cam.height, cam.width, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": cam.height,
                "video.width": cam.width,
                "video.codec": "h264" if vcodec == "libx264" else vcodec,
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            },
        }
    for k, dt in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        features[k] = {"dtype": dt, "shape": [1], "names": None}
    info = {
        "codebase_version": "v3.0",
        "robot_type": robot_type,
        "total_episodes": n_episodes,
        "total_frames": frames.index,
        "total_tasks": len(frames.tasks),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{n_episodes}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": features,
    }
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))


def _write_lerobot_stats(out: Path, store: EpisodeStore, eps: Sequence[int], n_frames: int) -> None:
    """meta/stats.json: mean / std / min / max (and count) of state, action and each camera."""
    from duet.data.sampler import compute_stats

    keys = [STATE, ACTION] + [image_key(c) for c in store.spec.camera_names]
    stats = compute_stats(store, keys, episodes=eps)
    stats_json = {k: {s: np.asarray(v).tolist() for s, v in st.items()} for k, st in stats.items()}
    for k in stats_json:
        stats_json[k]["count"] = [n_frames]
    (out / "meta" / "stats.json").write_text(json.dumps(stats_json, indent=2))


def store_path_exists(p: str) -> bool:
    return "://" in p or os.path.exists(os.path.expanduser(p))
