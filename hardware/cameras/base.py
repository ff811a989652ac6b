"""The capture worker every camera runs: one thread per camera, latest frame on offer.

A camera = a device-specific FrameSource (RealSense pipeline, UVC through OpenCV, ...)
behind CaptureCamera, which owns the worker thread and everything the rest of duet relies
on: non-blocking read() with age and staleness on the injected clock, counters, stall
detection, and reconnect with backoff when the device goes away. A device error never
escapes the worker; it is counted, logged and retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from duet.clock import Clock, MonotonicClock
from duet.errors import DuetError
from duet.hardware.cameras.intrinsics import Intrinsics
from duet.hardware.interfaces import CameraFeatures, CameraReading, Frame

log = logging.getLogger("duet.hardware.cameras")


class CameraError(DuetError):
    """A camera cannot be found or opened (wrong serial, path, mode, permissions)."""


class SourceLost(Exception):
    """Raised by FrameSource.read() when the device is gone (unplugged, stream dead)."""


class FrameSource(Protocol):
    """The device-specific part of a camera; its methods run on the worker thread
    (open() also from connect()). Stamps are on the camera's clock."""

    timestamp_source: str  # "hardware" (device clock mapped to the host clock) or "arrival"

    def open(self) -> None:
        """Open the device and start streaming; CameraError when it cannot."""

    def read(self) -> Frame | None:
        """Block up to a short read timeout for the next frame: the frame, None when none
        came in time, SourceLost when the device is gone."""

    def close(self) -> None:
        """Stop streaming and release the device. Idempotent; never raises."""

    # Optional: `intrinsics() -> Intrinsics | None`, the intrinsics of the frames read()
    # returns (None while not known yet); a source without it is uncalibrated.


def wait_until(clock: Clock, t: float, stop: threading.Event, real_timeout: float | None = None) -> bool:
    """Wait until clock.now() >= t. Returns False early when `stop` is set or when
    `real_timeout` seconds of real time pass first. A clock with wait_until (FakeClock)
    is waited on, so a test moves time for the waiting thread."""
    give_up = None if real_timeout is None else time.monotonic() + real_timeout
    fake_wait = getattr(clock, "wait_until", None)
    while not stop.is_set():
        now = clock.now()
        if now >= t:
            return True
        slice_s = 0.05
        if give_up is not None:
            left = give_up - time.monotonic()
            if left <= 0:
                return False
            slice_s = min(slice_s, left)
        if fake_wait is not None:
            if fake_wait(t, timeout=slice_s):
                return True
        elif t - now > slice_s:
            stop.wait(slice_s)
        else:
            clock.sleep_until(t)
            return True
    return False


class TimestampMapper:
    """Maps a device clock (s) onto the host clock.

    stamp = device_time + offset, where offset tracks the lower envelope of
    (arrival - device_time): transport latency is never negative, so the smallest
    difference seen is the best estimate of the clock offset. The estimate drops at once
    to a smaller difference and relaxes upward slowly (time constant `drift_tau_s`) to
    follow a device clock that runs slow. A jump larger than `reset_s` (device clock reset
    or wrap, a replug) restarts the estimate.
    """

    def __init__(self, drift_tau_s: float = 30.0, reset_s: float = 1.0):
        self.drift_tau_s = drift_tau_s
        self.reset_s = reset_s
        self.offset: float | None = None
        self._last_arrival: float | None = None

    def reset(self) -> None:
        self.offset = None
        self._last_arrival = None

    def map(self, device_t: float, arrival: float) -> float:
        d = arrival - device_t
        if self.offset is None or abs(d - self.offset) > self.reset_s:
            self.offset = d
        elif d < self.offset:
            self.offset = d
        elif self._last_arrival is not None:
            alpha = min(1.0, max(0.0, arrival - self._last_arrival) / self.drift_tau_s)
            self.offset += (d - self.offset) * alpha
        self._last_arrival = arrival
        return min(device_t + self.offset, arrival)


@dataclass
class _Counters:
    frames: int = 0
    dropped: int = 0
    stalls: int = 0
    disconnects: int = 0
    reconnects: int = 0
    read_errors: int = 0


class CaptureCamera:
    """A Camera (hardware.interfaces) over a FrameSource, captured on a worker thread."""

    kind = "camera"
    backoff_min_s = 0.1
    backoff_max_s = 2.0
    # No frame for this long on the camera's clock with the device still present: the
    # stream is considered dead and restarted (counted as a disconnect).
    lost_after_s = 3.0

    def __init__(self, features: CameraFeatures, source: FrameSource, clock: Clock | None, max_age_s: float):
        if max_age_s <= 0:
            raise CameraError(f"camera {features.name!r}: max_age_s must be > 0, got {max_age_s}")
        self.features = features
        self.source = source
        self.clock: Clock = clock or MonotonicClock()
        self.max_age_s = float(max_age_s)
        # A gap longer than this between frames is a stall (at least 3 frame periods).
        self.stall_s = max(self.max_age_s, 3.0 / features.fps)
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open = False  # the source is open and streaming
        self._latest: Frame | None = None
        self._seq = 0  # frames published since construction (never resets)
        self._c = _Counters()
        self._stamps: deque[float] = deque(maxlen=max(2, int(features.fps)))
        self._last_index: int | None = None
        self._last_stamp: float | None = None  # stamp of the latest frame
        self._gap_stamp: float | None = None  # same, forgotten on reconnect (stall gaps)
        self._last_progress = 0.0  # clock time of the last frame or (re)open
        self._stalled = False
        self._last_error = ""

    # ------------------------------------------------------------------ Camera interface

    def connect(self) -> None:
        """Open the device (errors raise here, as CameraError) and start the worker."""
        if self._thread is not None and self._thread.is_alive():
            return
        self.source.open()
        self._stop.clear()
        with self._lock:
            self._open = True
            self._last_index = None
            self._last_progress = self.clock.now()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.features.name}", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        """Stop the worker and release the device. Idempotent."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)
            if t.is_alive():
                log.warning("camera %s: capture worker did not stop within 5 s", self.features.name)
        self._thread = None
        self._close_source()
        with self._lock:
            self._open = False
            self._lock.notify_all()

    @property
    def is_connected(self) -> bool:
        with self._lock:
            return self._open

    def read(self) -> CameraReading:
        """The latest frame with its age on the camera's clock; never blocks on the device.
        Stale when older than max_age_s or when the device is not connected."""
        now = self.clock.now()
        with self._lock:
            frame, connected = self._latest, self._open
        if frame is None:
            return CameraReading(frame=None, age=float("inf"), stale=True, connected=connected)
        age = now - frame.stamp
        return CameraReading(
            frame=frame, age=age, stale=(age > self.max_age_s) or not connected, connected=connected
        )

    def intrinsics(self) -> Intrinsics | None:
        """The intrinsics of the frames read() returns (hardware/cameras/intrinsics.py), from
        the source: None while it does not know them yet (a RealSense before its stream
        started); uncalibrated (zeros) for a source that has none."""
        fn = getattr(self.source, "intrinsics", None)
        if fn is None:
            return Intrinsics.uncalibrated(self.features.width, self.features.height)
        return fn()

    def wait_for_frame(self, timeout: float = 1.0) -> Frame | None:
        """Block (real time, up to timeout) for a frame newer than the current one; None on
        timeout. For recorders and tests; the control loop uses read()."""
        with self._lock:
            seq = self._seq
            if not self._lock.wait_for(lambda: self._seq > seq or self._stop.is_set(), timeout=timeout):
                return None
            return self._latest if self._seq > seq else None

    def health(self) -> dict[str, Any]:
        now = self.clock.now()
        with self._lock:
            c = self._c
            stamps = list(self._stamps)
            last = self._last_stamp
            stalled = self._stalled or (self._open and last is not None and now - last > self.stall_s)
            out: dict[str, Any] = {
                "name": self.features.name,
                "kind": self.kind,
                "connected": self._open,
                "frames": c.frames,
                "dropped": c.dropped,
                "stalls": c.stalls,
                "stalled": bool(stalled),
                "disconnects": c.disconnects,
                "reconnects": c.reconnects,
                "read_errors": c.read_errors,
                "fps": 0.0,
                "fps_nominal": float(self.features.fps),
                "age_s": (now - last) if last is not None else None,
                "timestamp_source": self.source.timestamp_source,
                "last_error": self._last_error,
            }
        # the rate over the last second of frames; 0 while stalled or disconnected
        if out["connected"] and not stalled and len(stamps) >= 2 and stamps[-1] > stamps[0]:
            out["fps"] = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        return out

    # ------------------------------------------------------------------ worker

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as e:  # a close must never take the process down
            log.warning("camera %s: error while closing: %s", self.features.name, e)

    def _run(self) -> None:
        delay = self.backoff_min_s
        while not self._stop.is_set():
            if not self._open:
                if self._reopen():
                    delay = self.backoff_min_s
                else:
                    self._stop.wait(delay)
                    delay = min(delay * 2.0, self.backoff_max_s)
                continue
            try:
                frame = self.source.read()
            except SourceLost as e:
                self._lost(str(e) or "device lost")
                continue
            except Exception as e:  # an unexpected driver error: count it, restart the stream
                log.exception("camera %s: read failed", self.features.name)
                with self._lock:
                    self._c.read_errors += 1
                self._lost(f"{type(e).__name__}: {e}")
                continue
            if self._stop.is_set():
                break
            if frame is None:
                self._no_frame()
            else:
                self._publish(frame)

    def _reopen(self) -> bool:
        try:
            self.source.open()
        except Exception as e:
            with self._lock:
                self._last_error = str(e)
            self._close_source()
            return False
        with self._lock:
            self._open = True
            self._c.reconnects += 1
            self._last_index = None  # device counters restart after a replug
            self._gap_stamp = None
            self._stamps.clear()
            self._last_progress = self.clock.now()
            self._lock.notify_all()
        log.info("camera %s: reconnected", self.features.name)
        return True

    def _lost(self, why: str) -> None:
        log.warning("camera %s: disconnected (%s); reconnecting", self.features.name, why)
        self._close_source()
        with self._lock:
            self._open = False
            self._stalled = False
            self._c.disconnects += 1
            self._last_error = why
            self._lock.notify_all()

    def _no_frame(self) -> None:
        now = self.clock.now()
        lost = False
        with self._lock:
            ref = self._gap_stamp if self._gap_stamp is not None else self._last_progress
            if now - ref > self.stall_s and not self._stalled:
                self._stalled = True
                self._c.stalls += 1
                log.warning("camera %s: no frame for %.2f s", self.features.name, now - ref)
            if now - self._last_progress > self.lost_after_s:
                lost = True
        if lost:
            self._lost(f"no frame for {self.lost_after_s:.1f} s")

    def _publish(self, frame: Frame) -> None:
        with self._lock:
            c = self._c
            if self._gap_stamp is not None and frame.stamp - self._gap_stamp > self.stall_s:
                if not self._stalled:
                    c.stalls += 1  # a gap that ended before the worker noticed it
                self._stamps.clear()  # measure the rate from here on
            self._stalled = False
            if self._last_index is not None and frame.index > self._last_index + 1:
                c.dropped += frame.index - self._last_index - 1
            self._last_index = frame.index
            self._last_stamp = self._gap_stamp = frame.stamp
            self._last_progress = self.clock.now()
            self._stamps.append(frame.stamp)
            c.frames += 1
            self._latest = frame
            self._seq += 1
            self._lock.notify_all()
