"""EpisodeStore: the zarr episode store (layout in data/layout.py and data/README.md).

Write path (one writer per store: a writable open takes the store's writer lock, see
data/lock.py, held until close() or the end of the process)::

    store = EpisodeStore.create(path, layout=DatasetSpec(...))
    with store.episode({"task": "fold"}) as ep:     # commit on exit, discard on exception
        ep.append({"left_follower.position": q, "action": a, "cam_high.color": img, ...})

Durability: image chunks are written as they come, low-dimensional rows at least once per
second (flush); every file write is atomic (temp file + rename), and an episode becomes
visible only when meta/episode_ends grows, which is written last. A crash leaves at most
one partial episode, described by the meta/recording marker: `recover()` commits or
discards it. Readers (any number, any process) trust only meta/episode_ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.codecs
from zarr.buffer import default_buffer_prototype

from duet.clock import utc_now_iso
from duet.data.layout import (
    EPISODE_ENDS_CHUNK,
    LAYOUT_NAME,
    LAYOUT_VERSION,
    LOWDIM_CHUNK,
    DatasetSpec,
    JpegCodec,
    config_hash,
    jpeg_size,
    register_codecs,
)
from duet.data.lock import (
    LOCK_NAME,
    FileLock,
    LeaseLock,
    LockHeld,
    LockUnsupported,
    WriterLock,
    describe_holder,
    parse_holder,
    pid_alive,
)
from duet.errors import DuetError
from duet.jsonio import jsonable

# Arrays grow in steps of this many time steps while an episode is recorded (fewer
# metadata rewrites); they are trimmed to the exact length at commit.
GROW_STEPS = 512
# Chunk files are named c.<i>.<j>... in the array's directory (flat; no directory per frame).
CHUNK_KEYS: dict[str, Any] = {"name": "default", "separator": "."}
FLUSH_PERIOD_S = 1.0


class StoreError(DuetError):
    """A store is missing, foreign, corrupt or incompatible."""


class StoreLockedError(StoreError):
    """Another writer holds the store (the message names it: host, pid, since, command)."""


class DamagedStoreError(StoreError):
    """Committed data is missing or unreadable (the message names the file and the fix)."""


class DiskFullError(StoreError):
    """No space left while writing an episode."""


# ---------------------------------------------------------------------------- raw key access


def _run(coro: Any) -> Any:
    """Run a coroutine of a zarr store's async API (get / set / delete / list) to completion.

    zarr has no public synchronous byte-level API, and an fsspec store's coroutines must run
    on zarr's own event-loop thread, so this is the one place duet uses a zarr internal
    (zarr.core.sync.sync; check it when upgrading zarr)."""
    from zarr.core.sync import sync

    return sync(coro)


class _Raw:
    """Byte-level access to store keys: atomic local writes with fsync support, or any
    zarr store (fsspec) through its async API."""

    def __init__(self, zstore: Any):
        self.zstore = zstore
        self.root: Path | None = Path(zstore.root) if isinstance(zstore, zarr.storage.LocalStore) else None
        self._dirs: set[Path] = set()

    def put(self, key: str, data: bytes, atomic: bool = True) -> None:
        """Write key. atomic: through a temp file and rename (readers and crashes see the
        old or the new content, never a torn one)."""
        if self.root is not None:
            p = self.root / key
            parent = p.parent
            if parent not in self._dirs:
                parent.mkdir(parents=True, exist_ok=True)
                self._dirs.add(parent)
            if not atomic:
                with open(p, "wb") as f:
                    f.write(data)
                return
            tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.partial")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
        else:
            buf = default_buffer_prototype().buffer.from_bytes(bytes(data))
            _run(self.zstore.set(key, buf))

    def get(self, key: str) -> bytes | None:
        if self.root is not None:
            try:
                return (self.root / key).read_bytes()
            except FileNotFoundError:
                return None
        buf = _run(self.zstore.get(key, prototype=default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def delete(self, key: str) -> None:
        if self.root is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.root / key).unlink()
            return
        _run(self.zstore.delete(key))

    def list_dir(self, prefix: str) -> set[str]:
        """Names directly under prefix (e.g. the chunk files of an array)."""
        if self.root is not None:
            try:
                return set(os.listdir(self.root / prefix))
            except FileNotFoundError:
                return set()

        async def names() -> set[str]:
            return {n async for n in self.zstore.list_dir(prefix)}

        return _run(names())

    def clear(self, keep: str) -> None:
        """Delete everything in the store except the key `keep` (the writer lock)."""
        if self.root is not None:
            import shutil

            for e in os.scandir(self.root) if self.root.exists() else ():
                if e.name == keep:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path)
                else:
                    os.unlink(e.path)
            self._dirs.clear()
            return

        async def keys() -> list[str]:
            return [k async for k in self.zstore.list()]

        for k in _run(keys()):
            if k != keep:
                _run(self.zstore.delete(k))

    def sync(self) -> None:
        """Make everything written so far durable (syncfs on the store's filesystem)."""
        if self.root is None:
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            libc = _libc()
            if libc is None or libc.syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def size_bytes(self) -> int | None:
        if self.root is None:
            return None
        total = 0
        for dirpath, _, files in os.walk(self.root):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(dirpath, f)).st_size
        return total

    def clean_partials(self) -> int:
        """Remove temp files left by a killed writer (ours and zarr's)."""
        if self.root is None:
            return 0
        n = 0
        for dirpath, _, files in os.walk(self.root):
            for f in files:
                if f.endswith(".partial"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(dirpath, f))
                        n += 1
        return n


_LIBC: Any = False


def _libc():
    global _LIBC
    if _LIBC is False:
        try:
            _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:
            _LIBC = None
    return _LIBC


def _open_zarr_store(path_or_url: str | os.PathLike, mode: str, storage_options: dict | None):
    s = os.fspath(path_or_url)
    read_only = mode == "r"
    if s.startswith("file://"):
        s = s[len("file://") :]
    if "://" in s:
        try:
            return zarr.storage.FsspecStore.from_url(
                s, storage_options=storage_options, read_only=read_only
            ), s
        except (ImportError, ValueError, TypeError) as e:
            raise StoreError(
                f"{s}: cannot open this URL with fsspec ({e}); check the protocol and credentials"
            ) from None
    p = Path(s).expanduser()
    if read_only and not p.exists():
        raise StoreError(f"{p}: no such store (check the path, or create one by recording an episode)")
    return zarr.storage.LocalStore(p, read_only=read_only), str(p)


def _is_enospc(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


# ---------------------------------------------------------------------------- the store


def _json_or_none(data: bytes | None) -> Any:
    """Parsed JSON, or None when the bytes are missing or not JSON."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _group_json(attrs: dict[str, Any]) -> bytes:
    return json.dumps({"attributes": attrs, "zarr_format": 3, "node_type": "group"}, indent=2).encode()


def _held_message(loc: str, h: dict[str, Any]) -> str:
    """The one-line refusal a second writer gets."""
    if h.get("host") == socket.gethostname() and h.get("pid") == os.getpid():
        return (
            f"{loc}: this process already holds the store open for writing (an EpisodeStore created or "
            "opened with mode 'a' and not closed); close() it first"
        )
    who = describe_holder(h)
    if h.get("host") == socket.gethostname() and not pid_alive(h.get("pid", -1)):
        return (
            f"{loc}: the writer lock is held by a process started by {who}, which has ended: "
            "a child process it forked keeps the lock; end that process"
        )
    return f"{loc}: another writer holds this store: {who}; stop it or wait for it to finish (readers need no lock)"


def _take_lock(zstore: Any, loc: str) -> WriterLock:
    """The store's writer lock (data/lock.py), or a one-line error naming the holder."""
    try:
        if isinstance(zstore, zarr.storage.LocalStore):
            return FileLock(Path(zstore.root))
        raw = _Raw(zstore)
        return LeaseLock(raw.get, lambda k, d: raw.put(k, d), raw.delete)
    except LockHeld as e:
        raise StoreLockedError(_held_message(loc, e.holder)) from None
    except LockUnsupported as e:
        raise StoreError(f"{loc}: {e}; record to a local disk") from None
    except OSError as e:
        raise StoreError(
            f"{loc}: cannot create the writer lock {LOCK_NAME} ({e.strerror}); check the "
            "directory's permissions"
        ) from None


def _root_fix(raw: _Raw, loc: str) -> str:
    """What to do about an unreadable root zarr.json."""
    meta = _json_or_none(raw.get("meta/zarr.json"))
    if isinstance(meta, dict) and isinstance(meta.get("attributes", {}).get("layout"), dict):
        return f"run `duet data recover {loc}`: it rebuilds this file from the layout copy in meta/zarr.json"
    return (
        f"restore {loc}/zarr.json from a copy of the store (e.g. the one `duet data push` made): it holds the "
        "layout and this store keeps no second copy; the data arrays are intact"
    )


class EpisodeStore:
    """A duet episode store (local directory or any fsspec URL).

    A store opened for writing (create, open(mode='a'), open_or_create) holds the store's
    writer lock until close() (a context manager closes on exit) or the end of the process;
    a second writer gets StoreLockedError naming the holder. Readers take no lock."""

    def __init__(self, zstore: Any, location: str, mode: str, lock: WriterLock | None = None):
        register_codecs()
        self.location = location
        self.mode = mode
        self._bind(zstore, lock)

    def _bind(self, zstore: Any, lock: WriterLock | None) -> None:
        """Attach to the zarr store (holding `lock`, if any): read the layout and what is
        committed. Also used by rewrite() after it swapped the store's directory."""
        location = self.location
        self.lock = lock
        self._closed = False
        self._zstore = zstore
        self._raw = _Raw(zstore)
        self._arrays: dict[str, zarr.Array] = {}
        self._chunks: dict[str, set[str]] = {}  # per array: chunk file names last listed
        self._writer: EpisodeWriter | None = None
        self.repairs: list[str] = []  # what open_for_recovery rebuilt
        try:
            self.root = zarr.open_group(store=zstore, mode="r" if self.mode == "r" else "r+", zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as e:
            raise StoreError(f"{location}: not a zarr group ({type(e).__name__}); check the path") from None
        except (json.JSONDecodeError, ValueError, KeyError) as e:
            raise DamagedStoreError(
                f"{location}/zarr.json: unreadable ({e}); {_root_fix(self._raw, location)}"
            ) from None
        info = self.root.attrs.get("duet")
        if not isinstance(info, dict) or info.get("layout") != LAYOUT_NAME:
            raise StoreError(
                f"{location}: not a duet episode store (zarr.json has no duet layout attribute); "
                "import foreign data with `duet data import-aloha`"
            )
        if int(info.get("version", 0)) > LAYOUT_VERSION:
            raise StoreError(
                f"{location}: layout version {info.get('version')} is newer than this duet ({LAYOUT_VERSION}); upgrade duet"
            )
        self.spec = DatasetSpec.from_dict(info["spec"])
        # Stores created by this duet write every chunk, all-fill ones included, so a
        # missing chunk is always damage (older stores skipped chunks of zeros).
        self.complete_chunks = bool(info.get("complete_chunks", False))
        self.refresh()

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        layout: DatasetSpec,
        overwrite: bool = False,
        storage_options: dict | None = None,
    ) -> EpisodeStore:
        """Create an empty store with the given layout (DatasetSpec), holding its writer lock."""
        zstore, loc = _open_zarr_store(path, "w", storage_options)
        lock = _take_lock(zstore, loc)
        try:
            return cls._create(zstore, loc, layout, overwrite, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _create(
        cls, zstore: Any, loc: str, layout: DatasetSpec, overwrite: bool, lock: WriterLock
    ) -> EpisodeStore:
        raw = _Raw(zstore)
        if overwrite:
            raw.clear(keep=LOCK_NAME)
        elif raw.get("zarr.json") is not None:
            raise StoreError(f"{loc}: a store already exists here; open it (mode='a') or pass overwrite=True")
        register_codecs()
        duet: dict[str, Any] = {
            "layout": LAYOUT_NAME,
            "version": LAYOUT_VERSION,
            "spec": layout.to_dict(),
            "complete_chunks": True,
        }
        root = zarr.open_group(store=zstore, mode="a", zarr_format=3)
        root.attrs.put({"duet": duet})
        data = root.create_group("data")
        meta = root.create_group("meta")
        # A copy of the layout: `duet data recover` rebuilds a damaged zarr.json from it.
        meta.attrs.put({"episodes": [], "rigs": {}, "layout": duet})
        meta.create_array(
            "episode_ends",
            shape=(0,),
            chunks=(EPISODE_ENDS_CHUNK,),
            dtype="int64",
            compressors=None,
            fill_value=0,
            chunk_key_encoding=CHUNK_KEYS,
        )
        for key, (shape, dtype) in layout.lowdim_arrays().items():
            # Uncompressed: tiny next to the images, and 5x cheaper to rewrite at every flush.
            data.create_array(
                key,
                shape=(0, *shape),
                chunks=(LOWDIM_CHUNK, *shape),
                dtype=dtype,
                fill_value=0,
                chunk_key_encoding=CHUNK_KEYS,
                compressors=None,
            )
        for key, (shape, dtype) in layout.image_arrays().items():
            if key.endswith(".color") and layout.image_codec == "jpeg":
                data.create_array(
                    key,
                    shape=(0, *shape),
                    chunks=(1, *shape),
                    dtype=dtype,
                    serializer=JpegCodec(level=layout.jpeg_quality),
                    compressors=None,
                    fill_value=0,
                    chunk_key_encoding=CHUNK_KEYS,
                )
            else:
                data.create_array(
                    key,
                    shape=(0, *shape),
                    chunks=(1, *shape),
                    dtype=dtype,
                    compressors=zarr.codecs.ZstdCodec(level=3),
                    fill_value=0,
                    chunk_key_encoding=CHUNK_KEYS,
                )
        return cls(zstore, loc, "a", lock)

    @classmethod
    def open(
        cls, path: str | os.PathLike, mode: str = "r", storage_options: dict | None = None
    ) -> EpisodeStore:
        """Open a store: mode 'r' (read; no lock) or 'a' (read and append; takes the writer lock)."""
        if mode not in ("r", "a"):
            raise StoreError(f"mode {mode!r}: use 'r' or 'a'")
        zstore, loc = _open_zarr_store(path, mode, storage_options)
        if mode == "r":
            return cls(zstore, loc, mode)
        return cls._open_locked(zstore, loc)

    @classmethod
    def _open_locked(cls, zstore: Any, loc: str, repair: bool = False) -> EpisodeStore:
        if isinstance(zstore, zarr.storage.LocalStore) and not Path(zstore.root).is_dir():
            raise StoreError(f"{loc}: no such store (check the path, or create one by recording an episode)")
        lock = _take_lock(zstore, loc)
        try:
            notes = _repair_metadata(_Raw(zstore), loc) if repair else []
            store = cls(zstore, loc, "a", lock)
            store.repairs = notes
            return store
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open_for_recovery(cls, path: str | os.PathLike, storage_options: dict | None = None) -> EpisodeStore:
        """Open for writing (`duet data recover`), first rebuilding damaged metadata files
        from their copies: zarr.json from meta's layout copy, meta/zarr.json from
        episode_ends, episode_ends from the episode lengths. store.repairs says what was
        rebuilt (one line each)."""
        zstore, loc = _open_zarr_store(path, "a", storage_options)
        return cls._open_locked(zstore, loc, repair=True)

    @classmethod
    def open_or_create(
        cls, path: str | os.PathLike, layout: DatasetSpec, storage_options: dict | None = None
    ) -> EpisodeStore:
        """Open for appending, creating the store if nothing is there; layouts must match.
        The writer lock is taken first, so two writers starting together cannot both create."""
        zstore, loc = _open_zarr_store(path, "a", storage_options)
        lock = _take_lock(zstore, loc)
        try:
            if _Raw(zstore).get("zarr.json") is None:
                return cls._create(zstore, loc, layout, False, lock)
            store = cls(zstore, loc, "a", lock)
            store.check_compatible(layout)
            return store
        except BaseException:
            lock.release()
            raise

    def close(self) -> None:
        """Release the writer lock (an episode still being written is discarded). The
        store stays open for reading."""
        if self._writer is not None:
            self._writer.discard()
        if self.lock is not None:
            self.lock.release()
        if self.mode != "r":
            self._closed = True
            self.mode = "r"

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def check_compatible(self, other: DatasetSpec, where: str = "") -> None:
        a, b = self.spec, other
        problems = []
        if [(x.name, list(x.joints)) for x in a.arms] != [(x.name, list(x.joints)) for x in b.arms]:
            problems.append("arms/joints differ")
        if a.followers != b.followers:
            problems.append("follower order differs")
        if [(c.name, c.width, c.height, c.depth) for c in a.cameras] != [
            (c.name, c.width, c.height, c.depth) for c in b.cameras
        ]:
            problems.append("cameras differ")
        if a.image_codec != b.image_codec:
            problems.append(f"image codec {a.image_codec} vs {b.image_codec}")
        if problems:
            raise StoreError(
                f"{self.location}: layout does not match {where or 'the data'} ({'; '.join(problems)}); "
                "use a separate store"
            )

    # ------------------------------------------------------------------ reading
    def refresh(self) -> None:
        """Re-read what is committed (another process may be appending)."""
        loc = self.location
        try:
            meta = zarr.open_group(store=self._zstore, path="meta", mode="r")
            self._meta_attrs: dict[str, Any] = dict(meta.attrs)
        except (json.JSONDecodeError, ValueError, KeyError, TypeError) as e:
            raise DamagedStoreError(
                f"{loc}/meta/zarr.json: unreadable ({e}); restore this file from a copy of the store to keep the "
                f"episodes' metadata, or run `duet data recover {loc}`: it rebuilds it from meta/episode_ends "
                "(tasks and health are lost, the episodes are flagged)"
            ) from None
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
            raise DamagedStoreError(
                f"{loc}/meta/zarr.json: missing; run `duet data recover {loc}`: it rebuilds it "
                "from meta/episode_ends (tasks and health are lost)"
            ) from None
        eps = self._meta_attrs.get("episodes", [])
        fix = (
            f"run `duet data recover {loc}`: it rebuilds it from the episode lengths in meta/zarr.json"
            if _lengths(eps) is not None
            else f"restore {loc}/meta from a copy of the store"
        )
        try:
            ends_arr = zarr.open_array(store=self._zstore, path="meta/episode_ends", mode="r")
            ends = np.asarray(ends_arr[:], dtype=np.int64)
        except (json.JSONDecodeError, ValueError, TypeError, RuntimeError, OSError) as e:
            raise DamagedStoreError(
                f"{loc}/meta/episode_ends: unreadable ({type(e).__name__}: {e}); {fix}"
            ) from None
        except (
            FileNotFoundError,
            KeyError,
            zarr.errors.ArrayNotFoundError,
            zarr.errors.NodeTypeValidationError,
        ):
            raise DamagedStoreError(f"{loc}/meta/episode_ends: missing; {fix}") from None
        if len(eps) < len(ends):
            raise DamagedStoreError(
                f"{loc}/meta/zarr.json: {len(eps)} episode records for {len(ends)} episodes; restore meta/zarr.json "
                "from a copy of the store"
            )
        if len(ends) and (np.any(np.diff(ends) <= 0) or ends[0] <= 0):
            raise DamagedStoreError(f"{loc}/meta/episode_ends: not increasing (a damaged chunk file); {fix}")
        self._ends = ends

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    @property
    def n_steps(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self._ends])).astype(np.int64)

    def _check_index(self, i: int) -> int:
        n = self.n_episodes
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise StoreError(f"{self.location}: no episode {i} (the store has {n}: 0..{n - 1})")
        return j

    def episode_slice(self, i: int) -> slice:
        i = self._check_index(i)
        start = int(self._ends[i - 1]) if i > 0 else 0
        return slice(start, int(self._ends[i]))

    def episode_meta(self, i: int) -> dict[str, Any]:
        i = self._check_index(i)
        m = dict(self._meta_attrs["episodes"][i])
        rig_hash = m.get("rig_hash")
        if rig_hash and "rig" not in m:
            m["rig"] = self._meta_attrs.get("rigs", {}).get(rig_hash)
        return m

    def episodes_meta(self) -> list[dict[str, Any]]:
        return [self.episode_meta(i) for i in range(self.n_episodes)]

    def array(self, key: str) -> zarr.Array:
        """The zarr array data/<key> (re-opened when it is shorter than the committed data)."""
        a = self._arrays.get(key)
        if a is None or a.shape[0] < self.n_steps:
            try:
                a = zarr.open_array(
                    store=self._zstore, path=f"data/{key}", mode="r" if self.mode == "r" else "r+"
                )
            except (FileNotFoundError, KeyError, zarr.errors.ArrayNotFoundError):
                have = ", ".join(self.data_keys)
                raise StoreError(f"{self.location}: no array data/{key} (have {have})") from None
            except (ValueError, TypeError) as e:  # includes json.JSONDecodeError
                raise StoreError(
                    f"{self.location}/data/{key}/zarr.json: unreadable ({type(e).__name__}); the store is damaged: "
                    "restore it from a copy (`duet data push` keeps one)"
                ) from None
            if self.mode != "r":
                a = a.with_config({"write_empty_chunks": True})  # a missing chunk is always damage
            self._arrays[key] = a
        return a

    @property
    def data_keys(self) -> list[str]:
        return list(self.spec.lowdim_arrays()) + list(self.spec.image_arrays())

    @property
    def image_keys(self) -> list[str]:
        return list(self.spec.image_arrays())

    def read_episode(
        self, i: int, keys: Iterable[str] | None = None, images: bool = True
    ) -> dict[str, np.ndarray]:
        """All arrays of episode i (or only `keys`) as numpy arrays, time-major."""
        sl = self.episode_slice(i)
        if keys is None:
            keys = [k for k in self.data_keys if images or k not in self.spec.image_arrays()]
        return {k: self.read(k, sl) for k in keys}

    def read(self, key: str, sl: slice) -> np.ndarray:
        """Committed rows sl of data/<key>. A missing chunk (zarr would fill it with zeros)
        or an unreadable one raises DamagedStoreError naming the file and the episode."""
        arr = self.array(key)
        self._check_chunks(key, sl.start, sl.stop)
        try:
            return np.asarray(arr[sl])
        except (ValueError, RuntimeError, OSError, TypeError) as e:
            raise DamagedStoreError(
                f"{self.location}/data/{key}: episode {self._episodes_text(sl.start, sl.stop)} has an unreadable chunk "
                f"({type(e).__name__}: {e}); the store is damaged: {self._damage_fix(sl.start, sl.stop)}"
            ) from None

    def _chunk_rows(self, key: str) -> tuple[int, int]:
        """(rows per chunk, dimensions) of data/<key>."""
        if key in self.spec.image_arrays():
            return 1, 1 + len(self.spec.image_arrays()[key][0])
        return LOWDIM_CHUNK, 1 + len(self.spec.lowdim_arrays()[key][0])

    def _check_chunks(self, key: str, a: int, b: int, strict: bool | None = None) -> None:
        """Raise DamagedStoreError if a chunk file covering committed rows [a, b) is
        missing. The chunk names are listed once per array, and again on a miss."""
        b = min(b, self.n_steps)
        if b <= a:
            return
        raw_jpeg = self.spec.image_codec == "jpeg" and key.endswith(".color")
        if strict is None:
            strict = self.complete_chunks or raw_jpeg
        if not strict:
            return
        per, nd = self._chunk_rows(key)
        need = [f"c.{i}" + ".0" * (nd - 1) for i in range(a // per, (b - 1) // per + 1)]
        names = self._chunks.get(key)
        if names is None or any(n not in names for n in need):
            names = self._chunks[key] = self._raw.list_dir(f"data/{key}")
        missing = [n for n in need if n not in names]
        if missing:
            i = int(missing[0].split(".")[1])
            r0, r1 = i * per, min((i + 1) * per, self.n_steps)
            if per == 1:
                e = self._episode_of(r0)
                what = f"episode {e}, frame {r0 - self.episode_slice(e).start}"
            else:
                what = f"steps {r0}..{r1 - 1}: episode {self._episodes_text(r0, r1)}"
            more = f"; {len(missing) - 1} more chunk(s) of this array missing" if len(missing) > 1 else ""
            old = (
                ""
                if self.complete_chunks or raw_jpeg
                else " (or all zeros: this store predates chunk tracking)"
            )
            raise DamagedStoreError(
                f"{self.location}/data/{key}/{missing[0]}: missing{old} ({what}{more}); the store is damaged: "
                f"{self._damage_fix(r0, r1)}"
            )

    def _episode_of(self, step: int) -> int:
        return int(np.searchsorted(self._ends, step, side="right"))

    def _episodes_text(self, a: int, b: int) -> str:
        e0, e1 = self._episode_of(a), self._episode_of(max(a, b - 1))
        return f"{e0}" if e0 == e1 else f"{e0}-{e1}"

    def _damage_fix(self, a: int, b: int) -> str:
        eps = self._episodes_text(a, b)
        return (
            f"restore the file from a copy of the store, or drop episode {eps} (`duet data drop {self.location} "
            f"{eps}`); `duet data info {self.location} --check` lists every damaged chunk"
        )

    def check(self, progress: bool = False) -> tuple[int, list[str]]:
        """Verify that every chunk of committed data exists and decodes (`duet data info
        --check`). Returns (chunks checked, one line per problem)."""
        from tqdm import tqdm

        n, problems, checked = self.n_steps, [], 0
        for key in tqdm(self.data_keys, desc="check", unit="array", disable=not progress):
            try:
                self.array(key)
            except StoreError as e:
                problems.append(str(e))
                continue
            per, _ = self._chunk_rows(key)
            self._chunks[key] = self._raw.list_dir(f"data/{key}")
            jpeg = self.spec.image_codec == "jpeg" and key.endswith(".color")
            for a in range(0, n, per):
                b = min(a + per, n)
                checked += 1
                try:
                    self._check_chunks(key, a, b, strict=True)
                    if jpeg:
                        self.read_frames(key[: -len(".color")], [a])
                    else:
                        self.read(key, slice(a, b))
                except DamagedStoreError as e:
                    problems.append(str(e))
        return checked, problems

    def read_raw_chunk(self, key: str, step: int) -> bytes | None:
        """The stored bytes of one image chunk (a JPEG file for JPEG color arrays)."""
        nd = len(self.spec.image_arrays()[key][0])
        return self._raw.get(f"data/{key}/c.{step}" + ".0" * nd)

    def read_frames(self, camera: str, steps: Sequence[int] | np.ndarray) -> np.ndarray:
        """Color frames of a camera at absolute steps, (n, H, W, 3) uint8. JPEG chunks are
        read as bytes and decoded directly (faster than the generic zarr path). A missing
        or undecodable frame raises DamagedStoreError naming the episode and frame."""
        key = f"{camera}.color"
        steps = [int(t) for t in steps]
        if self.spec.image_codec != "jpeg":
            return np.stack([self.read(key, slice(t, t + 1))[0] for t in steps])
        import imagecodecs

        c = self.spec.camera(camera)
        out = np.empty((len(steps), c.height, c.width, 3), np.uint8)
        for j, t in enumerate(steps):
            if not 0 <= t < self.n_steps:
                raise StoreError(
                    f"{self.location}: step {t} of {camera} is not committed (0..{self.n_steps - 1})"
                )
            buf = self.read_raw_chunk(key, t)
            if buf is None:
                self._check_chunks(key, t, t + 1, strict=True)  # raises, naming the file and episode
                raise DamagedStoreError(
                    f"{self.location}/data/{key}: frame {t} is missing; {self._damage_fix(t, t + 1)}"
                )
            try:
                img = imagecodecs.jpeg8_decode(buf)
                img = img if img.ndim == 3 else img[..., None]
                if img.shape[:2] != (c.height, c.width):
                    raise ValueError(f"{img.shape[1]}x{img.shape[0]} instead of {c.width}x{c.height}")
            except Exception as e:  # noqa: BLE001 - imagecodecs raises its own error types
                ep = self._episode_of(t)
                raise DamagedStoreError(
                    f"{self.location}/data/{key}/c.{t}.0.0.0: not a readable JPEG (episode {ep}, frame "
                    f"{t - self.episode_slice(ep).start}: {e}); the store is damaged: {self._damage_fix(t, t + 1)}"
                ) from None
            out[j] = img
        return out

    def writer(self) -> dict[str, Any] | None:
        """Who holds (or last held without releasing) the writer lock: host, pid, since,
        command; None when nobody does. Reads the lock file only (takes no lock)."""
        h = parse_holder(self._raw.get(LOCK_NAME))
        return h or None

    def disk_bytes(self) -> int | None:
        return self._raw.size_bytes()

    @property
    def pending(self) -> dict[str, Any] | None:
        """The partial episode a crashed writer left (its marker), or None."""
        try:
            g = zarr.open_group(store=self._zstore, path="meta/recording", mode="r")
        except Exception:
            return None
        rec = dict(g.attrs).get("recording")
        return rec if isinstance(rec, dict) else None

    # ------------------------------------------------------------------ writing
    def _require_writable(self) -> None:
        if self._closed:
            raise StoreError(
                f"{self.location}: closed for writing (its writer lock was released); open it again "
                "with mode='a'"
            )
        if self.mode == "r":
            raise StoreError(f"{self.location}: opened read-only; open with mode='a' to write")
        self._check_lock()

    def _check_lock(self) -> None:
        """Raise if a remote writer lease was taken over by someone else."""
        lost = self.lock.lost() if self.lock is not None else None
        if lost:
            raise StoreLockedError(
                f"{self.location}: another writer took over this store's lease "
                f"({describe_holder(lost)}); stop it, then record again"
            )

    def episode(self, meta: dict[str, Any] | None = None) -> EpisodeWriter:
        """Start writing an episode (a context manager: commit on exit, discard on error)."""
        self._require_writable()
        if self._writer is not None:
            raise StoreError(
                f"{self.location}: an episode is already being written; commit or discard it first"
            )
        pend = self.pending
        if pend is not None:
            raise StoreError(
                f"{self.location}: holds an unrecovered partial episode ({pend.get('flushed', 0)} steps); "
                f"run `duet data recover {self.location}` (or --discard)"
            )
        self.refresh()
        self._writer = EpisodeWriter(self, dict(meta or {}))
        return self._writer

    def _set_marker(self, rec: dict[str, Any] | None) -> None:
        g = zarr.open_group(store=self._zstore, path="meta/recording", mode="a")
        g.attrs.put({"recording": rec})

    def _resize_all(self, length: int) -> None:
        for key in self.data_keys:
            a = self.array(key)
            if a.shape[0] != length:
                a.resize((length, *a.shape[1:]))

    def _commit_episode(self, end: int, meta: dict[str, Any]) -> int:
        """Make rows [current end, end) an episode: metadata first, episode_ends last."""
        self._resize_all(end)
        self._raw.sync()
        # Rig configs are stored once per distinct config, keyed by hash.
        meta = dict(meta)
        attrs = dict(self._meta_attrs)
        rigs = dict(attrs.get("rigs", {}))
        rig = meta.pop("rig", None)
        if rig is not None:
            h = meta.get("rig_hash") or config_hash(rig)
            meta["rig_hash"] = h
            rigs[h] = rig
        n = self.n_episodes
        episodes = list(attrs.get("episodes", []))[:n] + [meta]
        g = zarr.open_group(store=self._zstore, path="meta", mode="r+")
        g.attrs.put({**attrs, "episodes": episodes, "rigs": rigs})
        # episode_ends: write the chunk holding the new value first (invisible beyond the
        # old shape), then grow the shape: that metadata write is the commit point.
        ends = np.concatenate([self._ends, [end]]).astype("<i8")
        k = n // EPISODE_ENDS_CHUNK
        chunk = np.zeros(EPISODE_ENDS_CHUNK, dtype="<i8")
        part = ends[k * EPISODE_ENDS_CHUNK : (k + 1) * EPISODE_ENDS_CHUNK]
        chunk[: len(part)] = part
        self._raw.put(f"meta/episode_ends/c.{k}", chunk.tobytes())
        ea = zarr.open_array(store=self._zstore, path="meta/episode_ends", mode="r+")
        ea.resize((n + 1,))
        self._raw.sync()
        self.refresh()
        return n

    def recover(self, commit: bool = True) -> dict[str, Any]:
        """Deal with what a killed writer left: commit the partial episode (its flushed
        steps, flagged recovered) or discard it; remove temp files. Returns a summary."""
        self._require_writable()
        removed = self._raw.clean_partials()
        self.refresh()
        pend = self.pending
        out: dict[str, Any] = {"temp_files_removed": removed, "action": "none", "steps": 0}
        end = self.n_steps
        if pend is not None and int(pend.get("start", -1)) != end:
            pend = None  # stale marker (the commit completed before the crash)
        if pend is not None and commit and int(pend.get("flushed", 0)) > 0:
            n = int(pend["flushed"])
            meta = dict(pend.get("meta") or {})
            meta.update({"length": n, "recovered": True, "flagged": True})
            meta.setdefault("flags", []).append(f"recovered after a crash: {n} flushed steps kept")
            idx = self._commit_episode(end + n, meta)
            out.update(action="committed", steps=n, episode=idx)
        else:
            if pend is not None:
                out.update(action="discarded", steps=int(pend.get("flushed", 0)))
            self._resize_all(end)
        self._set_marker(None)
        self._raw.sync()
        return out

    # ------------------------------------------------------------------ editing
    def copy_episodes_from(
        self,
        src: EpisodeStore,
        indices: Sequence[int] | None = None,
        progress: bool = False,
        extra_meta: dict | None = None,
    ) -> list[int]:
        """Append episodes of another store (merge / push); JPEG frames are copied as bytes."""
        self._require_writable()
        self.check_compatible(src.spec, where=src.location)
        indices = list(range(src.n_episodes)) if indices is None else [src._check_index(i) for i in indices]
        out = []
        from tqdm import tqdm

        for i in tqdm(indices, desc=f"copy -> {self.location}", unit="ep", disable=not progress):
            meta = src.episode_meta(i)
            meta.update(extra_meta or {})
            meta["copied_from"] = {"store": src.location, "episode": i}
            sl = src.episode_slice(i)
            ep = self.episode(meta)
            try:
                block = {k: src.read(k, sl) for k in src.spec.lowdim_arrays()}
                imgs: dict[str, Any] = {}
                for k in src.image_keys:
                    if k.endswith(".color") and src.spec.image_codec == "jpeg":
                        src._check_chunks(k, sl.start, sl.stop, strict=True)
                        imgs[k] = [src.read_raw_chunk(k, t) for t in range(sl.start, sl.stop)]
                    else:
                        imgs[k] = src.read(k, sl)
                ep.extend({**block, **imgs})
            except BaseException:
                ep.discard()
                raise
            ep.commit(health=False)  # the source's health summary (in meta) stays
            out.append(self.n_episodes - 1)
        return out

    def rewrite(self, keep: Sequence[int], progress: bool = False) -> None:
        """Keep only the episodes `keep` (in that order): used by drop. Rewrites the
        store through a sibling temp store, then swaps (local stores only)."""
        self._require_writable()
        if self._raw.root is None:
            raise StoreError(f"{self.location}: drop/split rewrite local stores only; copy it locally first")
        root = self._raw.root
        tmp = root.with_name(root.name + ".rewrite-tmp")
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp)
        dst = EpisodeStore.create(tmp, self.spec)
        try:
            dst.copy_episodes_from(self, keep, progress=progress)
        except BaseException:
            dst.close()
            raise
        import shutil

        old = root.with_name(root.name + ".rewrite-old")
        os.replace(root, old)
        os.replace(tmp, root)
        # The new store's lock (held by dst since its creation) is now the store's lock:
        # no other writer can slip in during the swap.
        lock, dst.lock = dst.lock, None
        if self.lock is not None:
            self.lock.release()
        shutil.rmtree(old)
        self._bind(zarr.storage.LocalStore(root), lock)

    def __repr__(self) -> str:
        return f"EpisodeStore({self.location!r}, episodes={self.n_episodes}, steps={self.n_steps})"


def _lengths(episodes: Any) -> list[int] | None:
    """Episode lengths from per-episode metadata records, or None if any is unusable."""
    if not isinstance(episodes, list):
        return None
    try:
        out = [int(m["length"]) for m in episodes]
    except (TypeError, KeyError, ValueError):
        return None
    return out if all(n > 0 for n in out) else None


def _repair_metadata(raw: _Raw, loc: str) -> list[str]:
    """Rebuild damaged metadata files from the copies a store keeps (see
    EpisodeStore.open_for_recovery). Raises DamagedStoreError when nothing can rebuild one."""
    notes: list[str] = []
    root_bytes = raw.get("zarr.json")
    if root_bytes is None:
        return notes  # not a store at all: opening says so
    root = _json_or_none(root_bytes)
    meta = _json_or_none(raw.get("meta/zarr.json"))
    meta_attrs = meta.get("attributes") if isinstance(meta, dict) else None
    if not isinstance(meta_attrs, dict) or not isinstance(meta_attrs.get("episodes"), list):
        meta_attrs = None
    if not isinstance(root, dict):
        layout = (meta_attrs or {}).get("layout")
        if not isinstance(layout, dict):
            raise DamagedStoreError(f"{loc}/zarr.json: unreadable; {_root_fix(raw, loc)}")
        raw.put("zarr.json", _group_json({"duet": layout}))
        notes.append("rebuilt zarr.json (the layout) from its copy in meta/zarr.json")
        root = {"attributes": {"duet": layout}}
    layout = (root.get("attributes") or {}).get("duet")
    if not isinstance(layout, dict):
        return notes  # a foreign group: opening says so
    zstore = raw.zstore

    def read_ends() -> np.ndarray | None:
        try:
            ends = np.asarray(zarr.open_array(store=zstore, path="meta/episode_ends", mode="r")[:], np.int64)
        except Exception:  # noqa: BLE001 - any failure means damaged
            return None
        if len(ends) and (np.any(np.diff(ends) <= 0) or ends[0] <= 0):
            return None
        return ends

    ends = read_ends()
    if meta_attrs is None:
        if ends is None:
            raise DamagedStoreError(
                f"{loc}/meta: both meta/zarr.json and meta/episode_ends are damaged; restore "
                f"{loc}/meta from a copy of the store (the data arrays are intact)"
            )
        lens = np.diff(np.concatenate([[0], ends])).tolist()
        flag = "metadata lost: meta/zarr.json was damaged and rebuilt by duet data recover"
        eps = [{"task": "", "length": int(n), "flagged": True, "flags": [flag]} for n in lens]
        raw.put("meta/zarr.json", _group_json({"episodes": eps, "rigs": {}, "layout": layout}))
        notes.append(
            f"rebuilt meta/zarr.json for {len(eps)} episodes from meta/episode_ends "
            "(tasks and health were lost; the episodes are flagged)"
        )
        meta_attrs = {"episodes": eps}
    if ends is None:
        lens = _lengths(meta_attrs["episodes"])
        if lens is None:
            raise DamagedStoreError(
                f"{loc}/meta/episode_ends: damaged, and the episode records in meta/zarr.json "
                f"lack lengths; restore {loc}/meta from a copy of the store"
            )
        new = np.cumsum(lens, dtype=np.int64)
        try:
            t_len = zarr.open_array(store=zstore, path="data/t", mode="r").shape[0]
        except Exception:  # noqa: BLE001
            t_len = None
        if t_len is not None and len(new) and new[-1] > t_len:
            raise DamagedStoreError(
                f"{loc}/meta/episode_ends: damaged, and the episode lengths in meta/zarr.json "
                f"cover {int(new[-1])} steps but the data holds {t_len}; restore {loc}/meta "
                "from a copy of the store"
            )
        arr = zarr.create_array(
            store=zstore,
            name="meta/episode_ends",
            shape=(len(new),),
            chunks=(EPISODE_ENDS_CHUNK,),
            dtype="int64",
            compressors=None,
            fill_value=0,
            chunk_key_encoding=CHUNK_KEYS,
            overwrite=True,
        )
        if len(new):
            arr[:] = new
        notes.append(
            f"rebuilt meta/episode_ends ({len(new)} episodes) from the episode lengths in meta/zarr.json"
        )
    return notes


# ---------------------------------------------------------------------------- episode writer


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(img), level=int(quality)))


class EpisodeWriter:
    """Appends one episode's steps to a store. Use via EpisodeStore.episode()."""

    def __init__(self, store: EpisodeStore, meta: dict[str, Any]):
        self.store = store
        self.spec = store.spec
        self.meta = meta
        self.meta.setdefault("start_time", utc_now_iso())
        self.start = store.n_steps
        self.length = 0
        self._flushed = 0
        self._last_flush = time.monotonic()
        self._lowdim = self.spec.lowdim_arrays()
        self._images = self.spec.image_arrays()
        # Rows appended since the last flush, and the flushed rows (one block per flush),
        # kept for the health summary at commit.
        self._rows: dict[str, list[np.ndarray]] = {k: [] for k in self._lowdim}
        self._blocks: dict[str, list[np.ndarray]] = {k: [] for k in self._lowdim}
        self._capacity = self.store.array("t").shape[0]
        self._closed = False
        self.before_flush: Callable[[], None] | None = None
        # Per flush: seconds waiting for image writes, writing rows, syncing (diagnostics).
        self.flush_times: list[tuple[float, float, float]] = []
        self._lock = threading.Lock()
        self.bytes_written = 0
        self._jpeg = self.spec.image_codec == "jpeg"
        # Data beyond the committed end belongs to nobody: trim it before writing.
        self.store._resize_all(self.start)
        self._capacity = self.start
        self.store._set_marker({"start": self.start, "flushed": 0, "meta": self._json_meta()})

    def _json_meta(self) -> dict[str, Any]:
        return jsonable(self.meta)

    # ------------------------------------------------------------------ appending
    def _ensure_capacity(self, n_total: int) -> None:
        need = self.start + n_total
        if need <= self._capacity:
            return
        cap = max(need, self._capacity + GROW_STEPS)
        self.store._resize_all(cap)
        self._capacity = cap

    def reserve(self, n_steps: int) -> None:
        """Make room for n_steps steps of this episode (before write_image from threads)."""
        try:
            self._ensure_capacity(n_steps)
        except OSError as e:
            raise self._full(e) if _is_enospc(e) else e from None

    def write_image(self, key: str, step: int, frame: Any) -> None:
        """Write one image of step `step` (0-based in this episode). Thread-safe for
        distinct steps; call reserve() first. Used by the recorder's writer pool, which
        then appends the step with images_written=True."""
        try:
            self._write_images(key, step, [frame])
        except OSError as e:
            raise self._full(e) if _is_enospc(e) else e from None

    def _full(self, e: OSError) -> DiskFullError:
        return DiskFullError(
            f"{self.store.location}: disk full while writing episode {self.store.n_episodes} ({e.strerror}); "
            "free space; committed episodes are intact"
        )

    def append(self, step: dict[str, Any], images_written: bool = False) -> None:
        """Append one time step. Keys are data keys without 'data/' (see the layout);
        images may be uint8 arrays or JPEG bytes. Optional keys default: t = step / rate,
        velocity/effort 0, stamps = t, ages 0, frame index = step. With images_written,
        the step's images were already written with write_image()."""
        block: dict[str, Any] = {}
        for k, v in step.items():
            if k in self._images:
                block[k] = [v]
            else:
                block[k] = np.asarray(v)[None]
        self.extend(block, images_written=images_written)

    def extend(self, block: dict[str, Any], images_written: bool = False) -> None:
        """Append n steps at once: arrays (n, ...) per key; images as (n, H, W, 3) arrays
        or a list of n JPEG bytes / arrays."""
        if self._closed:
            raise StoreError("episode writer is closed")
        unknown = sorted(set(block) - set(self._lowdim) - set(self._images))
        if unknown:
            raise StoreError(
                f"episode step: unknown key {unknown[0]!r} (valid: {', '.join(list(self._lowdim) + list(self._images))})"
            )
        n = len(next(iter(block.values())))
        t0 = self.length
        try:
            self._ensure_capacity(t0 + n)
            for k in () if images_written else self._images:
                v = block.get(k)
                if v is None:
                    raise StoreError(f"episode step: missing image {k!r}")
                if len(v) != n:
                    raise StoreError(f"episode step: {k!r} has {len(v)} steps, expected {n}")
                self._write_images(k, t0, v)
            rows = self._complete_lowdim(block, n, t0)
        except OSError as e:
            if _is_enospc(e):
                raise self._full(e) from None
            raise
        for k, v in rows.items():
            self._rows[k].append(v)
        self.length += n
        if (
            self.length - self._flushed >= self.spec.rate_hz
            or time.monotonic() - self._last_flush >= FLUSH_PERIOD_S
        ):
            self.flush()

    def _complete_lowdim(self, block: dict[str, Any], n: int, t0: int) -> dict[str, np.ndarray]:
        rows: dict[str, np.ndarray] = {}
        t = block.get("t")
        if t is None:
            t = (t0 + np.arange(n)) / self.spec.rate_hz
        rows["t"] = np.asarray(t, dtype=np.float64).reshape(n)
        for k, (shape, dtype) in self._lowdim.items():
            if k == "t":
                continue
            v = block.get(k)
            if v is None:
                if k.endswith(".position") or k == "action":
                    raise StoreError(f"episode step: missing {k!r}")
                if k.endswith(".stamp"):
                    v = np.broadcast_to(rows["t"].reshape((n,) + (1,) * len(shape)), (n, *shape))
                elif k.endswith(".index"):
                    v = t0 + np.arange(n)
                else:
                    v = np.zeros((n, *shape))
            v = np.asarray(v, dtype=dtype)
            if v.shape != (n, *shape):
                try:
                    v = v.reshape((n, *shape))
                except ValueError:
                    raise StoreError(
                        f"episode step: {k!r} has shape {v.shape[1:]}, expected {shape}"
                    ) from None
            rows[k] = v
        return rows

    def _write_images(self, key: str, t0: int, frames: Any) -> None:
        shape, _dtype = self._images[key]
        raw_jpeg = self._jpeg and key.endswith(".color")
        base = self.start + t0
        if not raw_jpeg:
            if isinstance(frames, np.ndarray):
                arr = frames
            else:
                arr = np.stack([_to_array(f, shape) for f in frames])
            if arr.shape[1:] != shape:
                raise StoreError(f"episode step: {key!r} frames have shape {arr.shape[1:]}, expected {shape}")
            self.store.array(key)[base : base + len(arr)] = arr
            with self._lock:
                self.bytes_written += arr.nbytes // 4  # estimate: zstd output size is not exposed
            return
        q = self.spec.jpeg_quality
        for j, f in enumerate(frames):
            if isinstance(f, (bytes, bytearray, memoryview)):
                data = bytes(f)
                try:
                    h, w, c = jpeg_size(data)
                except ValueError as e:
                    raise StoreError(f"episode step: {key!r} frame is not a JPEG ({e})") from None
                if (h, w) != shape[:2] or c not in (1, 3):
                    raise StoreError(
                        f"episode step: {key!r} JPEG is {h}x{w}x{c}, expected {shape[0]}x{shape[1]}x3"
                    )
            else:
                arr = np.asarray(f)
                if arr.shape != shape or arr.dtype != np.uint8:
                    raise StoreError(
                        f"episode step: {key!r} frame is {arr.shape} {arr.dtype}, expected {shape} uint8"
                    )
                data = encode_jpeg(arr, q)
            # One frame per chunk, never shared with committed data: a plain write is safe
            # (the recovery marker only advances once the frame is complete).
            self.store._raw.put(f"data/{key}/c.{base + j}.0.0.0", data, atomic=False)
            with self._lock:
                self.bytes_written += len(data)

    def flush(self, sync: bool = True) -> None:
        """Write buffered rows and advance the recovery marker (then syncfs, locally)."""
        if self._flushed == self.length:
            self._last_flush = time.monotonic()
            return
        self.store._check_lock()
        t_start = time.perf_counter()
        if self.before_flush is not None:
            self.before_flush()  # e.g. wait for images written by other threads
        t_images = time.perf_counter()
        a, b = self.start + self._flushed, self.start + self.length
        try:
            for k in self._lowdim:
                vals = np.concatenate(self._rows[k])
                self.store.array(k)[a:b] = vals
                with self._lock:
                    self.bytes_written += vals.nbytes
            t_rows = time.perf_counter()
            if sync:
                self.store._raw.sync()
            t_sync = time.perf_counter()
            self.flush_times.append((t_images - t_start, t_rows - t_images, t_sync - t_rows))
            for k in self._lowdim:
                self._blocks[k].append(np.concatenate(self._rows[k]))
                self._rows[k] = []
            self._flushed = self.length
            self.store._set_marker({"start": self.start, "flushed": self._flushed, "meta": self._json_meta()})
        except OSError as e:
            if _is_enospc(e):
                raise self._full(e) from None
            raise
        self._last_flush = time.monotonic()

    def data(self) -> dict[str, np.ndarray]:
        """The low-dimensional data appended so far."""
        out = {}
        for k, (shape, dtype) in self._lowdim.items():
            parts = self._blocks[k] + self._rows[k]
            out[k] = np.concatenate(parts) if parts else np.zeros((0, *shape), dtype)
        return out

    def commit(self, extra_meta: dict[str, Any] | None = None, health: bool = True) -> int:
        """Commit the episode atomically; returns its index. health: add the health summary
        of the recorded data (False: keep the one in meta, e.g. of a copied episode)."""
        if self._closed:
            raise StoreError("episode writer is closed")
        if self.length == 0:
            self.discard()
            raise StoreError(
                f"{self.store.location}: refusing to commit an empty episode (no steps appended)"
            )
        self.flush(sync=False)
        meta = dict(self.meta)
        if health:
            meta.update(episode_health(self.spec, self.data()))
        meta.update(extra_meta or {})
        meta["length"] = self.length
        meta = jsonable(meta)
        try:
            idx = self.store._commit_episode(self.start + self.length, meta)
            self.store._set_marker(None)
        except OSError as e:
            if _is_enospc(e):
                raise DiskFullError(
                    f"{self.store.location}: disk full while committing an episode ({e.strerror}); "
                    "free space, then `duet data recover` it"
                ) from None
            raise
        self._closed = True
        self.store._writer = None
        self.committed_meta = meta
        return idx

    def discard(self) -> None:
        """Drop the episode (nothing of it stays visible)."""
        if self._closed:
            return
        self._closed = True
        self.store._writer = None
        with contextlib.suppress(OSError):
            self.store._resize_all(self.start)
            self.store._set_marker(None)

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, et, ev, tb) -> None:
        if et is None:
            self.commit()
        else:
            self.discard()


def _to_array(f: Any, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(f, (bytes, bytearray, memoryview)):
        import imagecodecs

        img = imagecodecs.jpeg8_decode(bytes(f))
        if img.ndim == 2 and len(shape) == 3:
            img = np.repeat(img[..., None], 3, axis=-1)
        return img
    return np.asarray(f)


# ---------------------------------------------------------------------------- health


def _stats(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)), "max": float(x.max())}


def episode_health(spec: DatasetSpec, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Rate, period jitter, per-sensor ages, dropped and stale frames, and flags, computed
    from an episode's low-dimensional data."""
    t = data["t"]
    n = len(t)
    out: dict[str, Any] = {"length": n}
    flags: list[str] = []
    if n >= 2:
        dt = np.diff(t)
        out["rate_hz"] = float((n - 1) / (t[-1] - t[0])) if t[-1] > t[0] else float("nan")
        err = np.abs(dt - 1.0 / spec.rate_hz) * 1e3
        out["period_jitter_ms"] = {k: round(v, 3) for k, v in _stats(err).items()}
        late = int(np.sum(dt > 1.5 / spec.rate_hz))
        out["late_ticks"] = late
        if late:
            flags.append(f"{late} ticks came more than half a period late")
    else:
        out["rate_hz"] = float("nan")
        out["period_jitter_ms"] = _stats(np.zeros(0))
    sensors: dict[str, Any] = {}
    for a in spec.arms:
        age = data[f"{a.name}.age"]
        stale = int(np.sum(~(age <= spec.arm_max_age_s)))
        sensors[a.name] = {"age_ms": {k: v * 1e3 for k, v in _stats(age).items()}, "stale_ticks": stale}
        if stale:
            flags.append(
                f"{a.name}: {stale} stale ticks (age > {spec.arm_max_age_s * 1e3:.0f} ms, max {np.nanmax(np.where(np.isfinite(age), age, np.nan), initial=0) * 1e3:.0f} ms)"
            )
    cams: dict[str, Any] = {}
    for c in spec.cameras:
        age = data[f"{c.name}.age"]
        idx = data[f"{c.name}.index"]
        valid = idx >= 0
        iv = idx[valid]
        new = iv[np.concatenate([[True], np.diff(iv) != 0])] if iv.size else iv
        gaps = np.diff(new)
        dropped = int(np.sum(np.clip(gaps - 1, 0, None))) if gaps.size else 0
        stale = int(np.sum(~(age <= c.max_age_s)))
        fin = age[np.isfinite(age)]
        cams[c.name] = {
            "age_ms": {k: v * 1e3 for k, v in _stats(age).items()},
            "frames": int(new.size),
            "dropped_frames": dropped,
            "stale_ticks": stale,
            "max_gap_s": float(fin.max()) if fin.size else float("inf"),
            "missing_ticks": int(np.sum(~valid)),
        }
        if dropped:
            flags.append(f"{c.name}: {dropped} dropped frames")
        if stale:
            flags.append(
                f"{c.name}: {stale} stale ticks (age > {c.max_age_s * 1e3:.0f} ms, longest gap {cams[c.name]['max_gap_s'] * 1e3:.0f} ms)"
            )
    out["sensors"] = sensors
    out["cameras"] = cams
    out["flags"] = flags
    out["flagged"] = bool(flags)
    return out


def health_line(meta: dict[str, Any]) -> str:
    """One line per episode: length, rate, jitter, dropped frames, MB written, flags."""
    jit = meta.get("period_jitter_ms", {})
    cams = meta.get("cameras", {})
    dropped = sum(int(c.get("dropped_frames", 0)) for c in cams.values())
    stale = sum(int(c.get("stale_ticks", 0)) for c in cams.values())
    parts = [
        f"{meta.get('length', 0)} steps",
        f"{meta.get('rate_hz', float('nan')):.2f} Hz",
        f"jitter p99 {jit.get('p99', float('nan')):.2f} ms",
        f"dropped frames {dropped}",
        f"stale camera ticks {stale}",
    ]
    if "mb_written" in meta:
        parts.append(f"{meta['mb_written']:.1f} MB")
    if meta.get("writer_dropped"):
        parts.append(f"writer dropped {meta['writer_dropped']} frames")
    parts.append("FLAGGED: " + "; ".join(meta.get("flags", [])) if meta.get("flagged") else "ok")
    return ", ".join(parts)


def iter_episode_indices(spec: str | None, n: int) -> Iterator[int]:
    """'3', '0-4', '1,3,7', '-1' -> indices."""
    if spec is None or spec == "all":
        yield from range(n)
        return
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = (
                    part.split("-", 1)
                    if not part.startswith("-")
                    else ("-" + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1])
                )
                yield from range(int(a), int(b) + 1)
            else:
                i = int(part)
                yield i + n if i < 0 else i
        except ValueError:
            raise StoreError(f"episode selection {spec!r}: use N, A-B or a comma list (e.g. 0-4,7)") from None
