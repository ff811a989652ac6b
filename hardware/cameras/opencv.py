"""UVC cameras through OpenCV (cv2.VideoCapture with the V4L2 backend).

The device is a /dev/v4l/by-id/... path (stable across reboots and USB ports) or an index.
With jpeg=True the camera is asked for MJPG and OpenCV's conversion is turned off, so each
frame arrives as the JPEG the camera produced: Frame.jpeg keeps those bytes (a recorder
stores them without re-encoding) and Frame.color is the decoded image.

Timestamps: V4L2 stamps each buffer on CLOCK_MONOTONIC (what time.monotonic reads) and
OpenCV reports it as CAP_PROP_POS_MSEC. When that value is a plausible time on the
camera's clock (in the past, within a second of arrival) it is the frame's stamp;
otherwise the arrival time (right after grab) is. With device stamps, gaps longer than
one period advance the index accordingly, so dropped frames show up as index gaps.

Intrinsics: from the rig camera's `calibration` file (a camera_calibration_parsers YAML, as
ROS camera_calibration saves it), scaled when the stream has another size of the same
aspect ratio; without one the camera is uncalibrated (size only, matrices zero: the
sensor_msgs/CameraInfo convention). The file is read when the camera is built, so a bad
one fails at once.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import cv2
import numpy as np

from duet.clock import Clock, MonotonicClock
from duet.hardware.cameras.base import CameraError, CaptureCamera, SourceLost
from duet.hardware.cameras.intrinsics import Intrinsics, calibration_for, load_calibration_yaml
from duet.hardware.interfaces import CameraFeatures, Frame
from duet.hardware.rig import CameraSlot


class UVCBackend(Protocol):
    def open(self, device: str) -> Any:
        """A cv2.VideoCapture-like object for the device (check isOpened())."""

    def present(self, device: str) -> bool:
        """Whether the device node exists now."""


def _device_arg(device: str) -> int | str:
    return int(device) if device.strip().isdigit() else device


class OpenCVBackend:
    """Real UVC devices: cv2.VideoCapture(device, CAP_V4L2)."""

    def open(self, device: str) -> Any:
        return cv2.VideoCapture(_device_arg(device), cv2.CAP_V4L2)

    def present(self, device: str) -> bool:
        d = _device_arg(device)
        return os.path.exists(f"/dev/video{d}" if isinstance(d, int) else d)


class OpenCVSource:
    """FrameSource over a UVC backend."""

    def __init__(self, slot: CameraSlot, backend: UVCBackend, clock: Clock):
        if not slot.device:
            raise CameraError(
                f"camera {slot.name!r}: kind opencv needs cameras[].device (a /dev/v4l/by-id/ path or an index)"
            )
        self.slot = slot
        self.backend = backend
        self.clock = clock
        self.cap: Any = None
        self.read_timeout_ms = int(max(200.0, 3000.0 / slot.fps))
        self.timestamp_source = "arrival"
        self.jpeg_passthrough = False  # the device really delivers JPEG bytes
        self._index = -1
        self._last_device_stamp: float | None = None
        self._intrinsics = (
            calibration_for(load_calibration_yaml(slot.calibration)[1], slot.width, slot.height, slot.name)
            if slot.calibration
            else Intrinsics.uncalibrated(slot.width, slot.height, "uncalibrated (no cameras[].calibration)")
        )

    def intrinsics(self) -> Intrinsics:
        """From cameras[].calibration; uncalibrated (zeros) without one."""
        return self._intrinsics

    def open(self) -> None:
        s = self.slot
        cap = self.backend.open(s.device)
        if not cap.isOpened():
            present = self.backend.present(s.device)
            cap.release()
            raise CameraError(
                f"camera {s.name!r}: cannot open UVC device {s.device!r} "
                + (
                    "(it exists: check permissions - video group - and that no other program holds it)"
                    if present
                    else "(no such device: list them with ls /dev/v4l/by-id/ and set cameras[].device)"
                )
            )
        if s.jpeg:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, s.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, s.height)
        cap.set(cv2.CAP_PROP_FPS, s.fps)
        cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.read_timeout_ms)
        if s.jpeg:
            cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if (w, h) != (s.width, s.height):
            cap.release()
            raise CameraError(
                f"camera {s.name!r}: {s.device} delivers {w}x{h}, not {s.width}x{s.height}; "
                "set cameras[].width/height to a supported mode (v4l2-ctl --list-formats-ext)"
            )
        self.cap = cap
        self._index = -1
        self._last_device_stamp = None

    def read(self) -> Frame | None:
        cap = self.cap
        if cap is None:
            raise SourceLost("not open")
        if not cap.grab():
            if not self.backend.present(self.slot.device):
                raise SourceLost(f"{self.slot.device} is gone")
            return None
        arrival = self.clock.now()
        stamp, index = self._stamp_and_index(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0, arrival)
        ok, buf = cap.retrieve()
        if not ok or buf is None:
            return None
        jpeg = None
        if buf.ndim <= 2 and (buf.ndim == 1 or buf.shape[0] == 1):  # raw MJPG bytes
            jpeg = buf.tobytes()
            bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:  # a corrupt JPEG (USB bandwidth): skip the frame
                return None
            self.jpeg_passthrough = True
        else:
            bgr = buf
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return Frame(stamp=stamp, index=index, color=rgb, jpeg=jpeg)

    def _stamp_and_index(self, device_t: float, arrival: float) -> tuple[float, int]:
        period = 1.0 / self.slot.fps
        if 0.0 <= arrival - device_t < 1.0:  # V4L2 buffer time on the same clock
            self.timestamp_source = "hardware"
            step = 1
            if self._last_device_stamp is not None:
                step = max(1, int(round((device_t - self._last_device_stamp) / period)))
            self._last_device_stamp = device_t
            self._index += step
            return device_t, self._index
        self.timestamp_source = "arrival"
        self._index += 1
        return arrival, self._index

    def close(self) -> None:
        cap, self.cap = self.cap, None
        if cap is not None:
            try:
                cap.release()
            except Exception:  # noqa: BLE001 - closing must not raise
                pass


class OpenCVCamera(CaptureCamera):
    """A UVC camera through OpenCV, captured on a worker thread."""

    kind = "opencv"

    def __init__(self, slot: CameraSlot, clock: Clock | None = None, backend: UVCBackend | None = None):
        clock = clock or MonotonicClock()
        features = CameraFeatures(slot.name, slot.width, slot.height, float(slot.fps), has_depth=False)
        self.slot = slot
        super().__init__(
            features, OpenCVSource(slot, backend or OpenCVBackend(), clock), clock, slot.max_age_s
        )

    def health(self) -> dict[str, Any]:
        h = super().health()
        h["jpeg_passthrough"] = bool(getattr(self.source, "jpeg_passthrough", False))
        return h
