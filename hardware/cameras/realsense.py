"""Intel RealSense cameras (pyrealsense2): color rgb8, optional depth aligned to color.

The device is chosen by serial number. Frames are stamped with the device's hardware
timestamp mapped onto the host monotonic clock when the SDK reports a hardware_clock or
global_time domain (TimestampMapper), else with their arrival time. The frame index is
the device frame counter (get_frame_number), so gaps are dropped frames.

The SDK access sits behind a small backend (serials / start / wait / stop): PipelineBackend
drives real devices through rs.pipeline; in mock mode SoftwareDeviceBackend
(hardware/mock/cameras.py) feeds synthetic frames through an rs.software_device, and the
frame handling below runs unchanged on the frames the SDK returns.

Intrinsics: the device's factory calibration of the started color stream
(video_stream_profile.get_intrinsics(), read from the backend after every start; depth is
aligned to color, so it shares them). A rig camera `calibration` file overrides them.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from duet.clock import Clock, MonotonicClock
from duet.hardware.cameras.base import CameraError, CaptureCamera, SourceLost, TimestampMapper
from duet.hardware.cameras.intrinsics import (
    Intrinsics,
    calibration_for,
    from_realsense,
    load_calibration_yaml,
)
from duet.hardware.interfaces import CameraFeatures, Frame
from duet.hardware.rig import CameraSlot


def import_pyrealsense2():
    try:
        import pyrealsense2 as rs
    except ImportError as e:
        raise CameraError(
            f"pyrealsense2 cannot be imported ({e}); install it with pip install 'duet[hardware]' "
            "(it also needs libusb-1.0-0)"
        ) from e
    return rs


class RealSenseBackend(Protocol):
    def serials(self) -> list[str]:
        """Serial numbers of the devices present now."""

    def start(self, serial: str, width: int, height: int, fps: int, depth: bool) -> None:
        """Start streaming color (rgb8) and optionally depth (z16); RuntimeError if not possible."""

    def wait(self, timeout_ms: int) -> Any:
        """The next rs.frameset, or None when none came within timeout_ms."""

    def color_intrinsics(self) -> Any:
        """The started color stream's rs.intrinsics (video_stream_profile.get_intrinsics());
        None when not started."""

    def stop(self) -> None: ...


class PipelineBackend:
    """Real devices through rs.pipeline."""

    def __init__(self):
        self._rs = import_pyrealsense2()
        self._ctx = self._rs.context()
        self._pipe = None
        self._profile: Any = None

    def serials(self) -> list[str]:
        rs = self._rs
        return [d.get_info(rs.camera_info.serial_number) for d in self._ctx.query_devices()]

    def start(self, serial: str, width: int, height: int, fps: int, depth: bool) -> None:
        rs = self._rs
        cfg = rs.config()
        cfg.enable_device(serial)
        cfg.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        if depth:
            cfg.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
        pipe = rs.pipeline(self._ctx)
        self._profile = pipe.start(cfg)
        self._pipe = pipe

    def color_intrinsics(self) -> Any:
        if self._profile is None:
            return None
        return self._profile.get_stream(self._rs.stream.color).as_video_stream_profile().get_intrinsics()

    def wait(self, timeout_ms: int) -> Any:
        if self._pipe is None:
            return None
        ok, fs = self._pipe.try_wait_for_frames(int(timeout_ms))
        return fs if ok else None

    def stop(self) -> None:
        pipe, self._pipe = self._pipe, None
        self._profile = None
        if pipe is not None:
            try:
                pipe.stop()
            except RuntimeError:
                pass


class RealSenseSource:
    """FrameSource over a RealSense backend."""

    def __init__(self, slot: CameraSlot, backend: RealSenseBackend, clock: Clock):
        self.slot = slot
        self.backend = backend
        self.clock = clock
        self._rs = import_pyrealsense2()
        self._align = None
        self._serial = slot.serial
        self.mapper = TimestampMapper()
        self.timestamp_source = "arrival"
        self.read_timeout_ms = int(max(200.0, 3000.0 / slot.fps))
        self.incomplete = 0  # framesets without color (or without depth when depth is on)
        self._file_intrinsics = (
            calibration_for(load_calibration_yaml(slot.calibration)[1], slot.width, slot.height, slot.name)
            if slot.calibration
            else None
        )
        self._sdk_intrinsics: Intrinsics | None = None

    def open(self) -> None:
        s = self.slot
        found = self.backend.serials()
        serial = s.serial
        if not serial:
            if len(found) != 1:
                raise CameraError(
                    f"camera {s.name!r}: no serial set and {len(found)} RealSense devices found "
                    f"({', '.join(found) or 'none'}); set cameras[].serial"
                )
            serial = found[0]
        if serial not in found:
            raise CameraError(
                f"camera {s.name!r}: no RealSense with serial {serial!r} (found: {', '.join(found) or 'none'}); "
                "set cameras[].serial to one of them, or check the USB 3 cable and permissions (udev rules)"
            )
        try:
            self.backend.start(serial, s.width, s.height, s.fps, s.depth)
        except RuntimeError as e:
            mode = f"{s.width}x{s.height}@{s.fps}" + (" with depth" if s.depth else "")
            raise CameraError(
                f"camera {s.name!r}: RealSense {serial} cannot stream {mode} ({e}); "
                "pick a mode the device supports (rs-enumerate-devices) or free it from other programs"
            ) from e
        self._serial = serial
        self._align = self._rs.align(self._rs.stream.color) if s.depth else None
        self.mapper.reset()
        intr = self.backend.color_intrinsics() if hasattr(self.backend, "color_intrinsics") else None
        self._sdk_intrinsics = None if intr is None else from_realsense(intr, f"realsense {serial}")

    def intrinsics(self) -> Intrinsics | None:
        """cameras[].calibration when set, else the SDK's (None before the first start)."""
        return self._file_intrinsics or self._sdk_intrinsics

    def read(self) -> Frame | None:
        fs = self.backend.wait(self.read_timeout_ms)
        if fs is None:
            if self._serial not in self.backend.serials():
                raise SourceLost(f"RealSense {self._serial} is gone")
            return None
        arrival = self.clock.now()
        return self.convert(fs, arrival)

    def convert(self, fs: Any, arrival: float) -> Frame | None:
        """rs.frameset -> Frame (depth aligned to color); None when incomplete."""
        rs = self._rs
        if self._align is not None:
            fs = self._align.process(fs)
        color = fs.get_color_frame()
        depth_frame = fs.get_depth_frame() if self._align is not None else None
        if not color or (self._align is not None and not depth_frame):
            self.incomplete += 1  # e.g. the syncer's first unmatched frames
            return None
        domain = color.get_frame_timestamp_domain()
        if domain in (rs.timestamp_domain.hardware_clock, rs.timestamp_domain.global_time):
            stamp = self.mapper.map(color.get_timestamp() / 1000.0, arrival)
            self.timestamp_source = "hardware"
        else:  # system_time: the host wall clock at arrival, which may jump; use arrival
            stamp = arrival
            self.timestamp_source = "arrival"
        rgb = np.array(color.get_data(), dtype=np.uint8, copy=True)
        depth = np.array(depth_frame.get_data(), dtype=np.uint16, copy=True) if depth_frame else None
        return Frame(stamp=stamp, index=int(color.get_frame_number()), color=rgb, depth=depth)

    def close(self) -> None:
        try:
            self.backend.stop()
        except Exception:  # noqa: BLE001 - closing must not raise
            pass


class RealSenseCamera(CaptureCamera):
    """A RealSense camera (color + optional aligned depth) captured on a worker thread."""

    kind = "realsense"

    def __init__(self, slot: CameraSlot, clock: Clock | None = None, backend: RealSenseBackend | None = None):
        clock = clock or MonotonicClock()
        features = CameraFeatures(slot.name, slot.width, slot.height, float(slot.fps), has_depth=slot.depth)
        self.slot = slot
        super().__init__(
            features, RealSenseSource(slot, backend or PipelineBackend(), clock), clock, slot.max_age_s
        )
