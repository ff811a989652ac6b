"""Cameras: RealSense (pyrealsense2) and UVC (OpenCV), each captured on its own worker
thread that offers the latest frame with its capture stamp (hardware.interfaces.Camera).

The drivers live here; the one camera factory is hardware.factory.make_camera(rig, name,
use_mock), which picks a driver, or in mock mode the same driver over a device of
hardware/mock/cameras.py (this package imports no mock).
"""

from __future__ import annotations

import os

from duet.hardware.cameras.base import CameraError, CaptureCamera, SourceLost, TimestampMapper

__all__ = ["CameraError", "CaptureCamera", "SourceLost", "TimestampMapper", "discover_cameras"]


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
