"""Cameras: RealSense (pyrealsense2) and UVC (OpenCV), each captured on its own worker
thread that offers the latest frame with its capture stamp (hardware.interfaces.Camera).

make_camera(slot, use_mock) is the one entry point. In mock mode the real driver classes
run against fakes from hardware/mock/cameras.py: a pyrealsense2 software_device for
kind=realsense, a cv2.VideoCapture look-alike for kind=opencv, both fed by a synthetic
device that honours the slot's fault_scenario.
"""

from __future__ import annotations

import logging
import os

from duet.clock import Clock, MonotonicClock
from duet.errors import ConfigError
from duet.hardware.cameras.base import CameraError, CaptureCamera, SourceLost, TimestampMapper
from duet.hardware.interfaces import Camera
from duet.hardware.rig import CameraSlot

__all__ = ["CameraError", "CaptureCamera", "SourceLost", "TimestampMapper", "discover_cameras", "make_camera"]

log = logging.getLogger("duet.hardware.cameras")


def make_camera(slot: CameraSlot, use_mock: bool, clock: Clock | None = None) -> Camera:
    """The camera for a rig slot: the real driver, or (use_mock) the real driver over the
    mock device. Not connected yet: call connect()."""
    clock = clock or MonotonicClock()
    if slot.jpeg and slot.kind != "opencv":
        raise ConfigError(
            f"camera {slot.name!r}: jpeg passthrough is for kind opencv (UVC MJPG); set jpeg: false"
        )
    if slot.fault_scenario and not use_mock:
        log.warning("camera %s: fault_scenario %r ignored (real hardware)", slot.name, slot.fault_scenario)
    if slot.kind == "realsense":
        from duet.hardware.cameras.realsense import RealSenseCamera

        if not use_mock:
            return RealSenseCamera(slot, clock)
        try:
            import pyrealsense2  # noqa: F401
        except ImportError:
            log.warning(
                "camera %s: pyrealsense2 missing; mock RealSense uses the plain synthetic source", slot.name
            )
            return _synthetic_camera(slot, clock)
        from duet.hardware.mock.cameras import SoftwareDeviceBackend

        return RealSenseCamera(slot, clock, backend=SoftwareDeviceBackend(slot, clock))
    if slot.kind == "opencv":
        from duet.hardware.cameras.opencv import OpenCVCamera

        if not use_mock:
            return OpenCVCamera(slot, clock)
        from duet.hardware.mock.cameras import SyntheticUVCBackend

        mock_slot = slot if slot.device else _with_device(slot)
        return OpenCVCamera(mock_slot, clock, backend=SyntheticUVCBackend(mock_slot, clock))
    raise ConfigError(f"camera {slot.name!r}: unknown kind {slot.kind!r}; use realsense or opencv")


def _with_device(slot: CameraSlot) -> CameraSlot:
    import dataclasses

    return dataclasses.replace(slot, device=f"mock:{slot.name}")


def _synthetic_camera(slot: CameraSlot, clock: Clock) -> CaptureCamera:
    from duet.hardware.mock.cameras import SyntheticCamera

    return SyntheticCamera(slot, clock)


def discover_cameras() -> dict[str, list[dict[str, str]]]:
    """The cameras plugged in now, to fill a rig YAML: RealSense devices (serial, name,
    firmware, usb) and UVC devices (stable /dev/v4l/by-id paths, capture nodes only)."""
    import glob

    out: dict[str, list[dict[str, str]]] = {"realsense": [], "uvc": []}
    try:
        import pyrealsense2 as rs
    except ImportError:
        rs = None
    if rs is not None:
        info = {
            "serial": rs.camera_info.serial_number,
            "name": rs.camera_info.name,
            "firmware": rs.camera_info.firmware_version,
            "usb": rs.camera_info.usb_type_descriptor,
        }
        for dev in rs.context().query_devices():
            out["realsense"].append({k: dev.get_info(v) if dev.supports(v) else "" for k, v in info.items()})
    for path in sorted(glob.glob("/dev/v4l/by-id/*-video-index0")):
        out["uvc"].append({"device": path, "node": os.path.realpath(path)})
    return out
