"""One store, one writer: the exclusive lock a writer holds for its whole life.

Every writable open of an EpisodeStore (create, open(mode='a'), open_or_create) takes
the lock before it reads or creates anything, and keeps it until EpisodeStore.close()
(or until the process ends). Readers (training, info, export) never take it.

Local directories: an fcntl.flock on ``<store>/.duet-writer.lock``. The kernel drops the
lock when the holding process dies, so a lock left by a killed writer is simply free
again (detected for free, also across hosts on NFS); the file holds the holder's host,
pid, start time and command, for the message a second writer gets, and is emptied on a
clean release, so a non-empty file found by a new holder names a writer that died.

Other fsspec stores (s3://, memory://, ...): a lease object at the same key, renewed by a
background thread every LEASE_S / 3 seconds. A lease that expired (or whose holder process
is gone on this host) is taken over. Object stores have no compare-and-swap through
fsspec, so the lease is written and read back: two writers starting within the same
instant can still both believe they won; use a local store for recording.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from duet.clock import utc_now_iso

LOCK_NAME = ".duet-writer.lock"
LEASE_S = 60.0  # lease of a remote writer; renewed every LEASE_S / 3


class LockHeld(Exception):
    """The store's writer lock is held by someone else (holder: their info, may be {})."""

    def __init__(self, holder: dict[str, Any]):
        super().__init__(describe_holder(holder))
        self.holder = holder


class LockUnsupported(Exception):
    """The filesystem refuses locks (the message says why)."""


def holder_info() -> dict[str, Any]:
    """Who we are: host, pid, since (UTC), command."""
    cmd = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)) or "python"
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": utc_now_iso(),
        "command": " ".join(cmd.split())[:160],
    }


def pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def describe_holder(h: dict[str, Any]) -> str:
    """'pid 123 on host since 2026-...: duet up record' (one line)."""
    if not h:
        return "a writer that has not written its name yet"
    s = f"pid {h.get('pid', '?')} on {h.get('host', '?')} since {h.get('since', '?')}"
    if h.get("command"):
        s += f" ({h['command']})"
    return s


def parse_holder(data: bytes | None) -> dict[str, Any]:
    if not data:
        return {}
    try:
        d = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


class WriterLock:
    """Held by one writable EpisodeStore. release() is idempotent and only acts in the
    process that took the lock (a forked child never releases its parent's lock)."""

    holder: dict[str, Any]
    took_over: dict[str, Any] | None  # the previous holder, when it ended without releasing

    def release(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def lost(self) -> dict[str, Any] | None:
        """Who took the lock from us (remote leases only), else None."""
        return None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


class FileLock(WriterLock):
    def __init__(self, root: Path):
        self.path = root / LOCK_NAME
        self._owner = os.getpid()
        self.took_over = None
        self.holder = holder_info()
        self._fd: int | None = None
        root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                held = parse_holder(_read_fd(fd))
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LockHeld(held) from None
                raise LockUnsupported(f"cannot lock {self.path} ({e.strerror})") from None
            # A store rewrite (drop) swaps directories: make sure the file we locked is
            # still the one at the path, else lock the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        prev = parse_holder(_read_fd(fd))
        if prev:
            self.took_over = prev  # a writer that ended without releasing (killed, power loss)
        data = json.dumps(self.holder).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None or os.getpid() != self._owner:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # a clean release leaves no holder behind
        with contextlib.suppress(OSError):
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    with contextlib.suppress(OSError):
        return os.pread(fd, 4096, 0)
    return b""


class LeaseLock(WriterLock):
    """A lease object for stores without file locks. get/put/delete: byte access to keys."""

    def __init__(self, get, put, delete, lease_s: float = LEASE_S):
        self._get, self._put, self._delete = get, put, delete
        self._owner = os.getpid()
        self.lease_s = float(lease_s)
        self.took_over = None
        self.holder = {**holder_info(), "token": uuid.uuid4().hex}
        cur = parse_holder(get(LOCK_NAME))
        if cur and not self._expired(cur):
            raise LockHeld(cur)
        if cur:
            self.took_over = cur
        self._write()
        back = parse_holder(get(LOCK_NAME))
        if back.get("token") != self.holder["token"]:
            raise LockHeld(back)
        self._lost: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="duet-store-lease", daemon=True)
        self._thread.start()

    def _expired(self, h: dict[str, Any]) -> bool:
        if float(h.get("lease_until", 0)) < time.time():
            return True
        return h.get("host") == socket.gethostname() and not pid_alive(h.get("pid", -1))

    def _write(self) -> None:
        self.holder["lease_until"] = time.time() + self.lease_s
        self._put(LOCK_NAME, json.dumps(self.holder).encode())

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                cur = parse_holder(self._get(LOCK_NAME))
                if cur.get("token") != self.holder["token"]:
                    self._lost = cur
                    return
                self._write()
            except Exception:  # noqa: BLE001 - a failed renewal is retried; expiry is the backstop
                continue

    def lost(self) -> dict[str, Any] | None:
        return self._lost

    def release(self) -> None:
        if getattr(self, "_stop", None) is None or self._stop.is_set() or os.getpid() != self._owner:
            return
        self._stop.set()
        if self._lost is None:
            with contextlib.suppress(Exception):
                if parse_holder(self._get(LOCK_NAME)).get("token") == self.holder["token"]:
                    self._delete(LOCK_NAME)
