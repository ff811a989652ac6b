"""Mock cameras end to end: the real RealSense and OpenCV camera classes running over the
mock devices (pyrealsense2 software_device, cv2.VideoCapture look-alike)."""

import importlib.util
import time

import numpy as np
import pytest

from duet.clock import FakeClock
from duet.errors import ConfigError, DuetError
from duet.hardware import factory
from duet.hardware.cameras import CameraError, CaptureCamera
from duet.hardware.cameras.opencv import OpenCVCamera
from duet.hardware.cameras.realsense import RealSenseCamera
from duet.hardware.interfaces import Camera
from duet.hardware.mock.cameras import SoftwareDeviceBackend, SyntheticSource, decode_index
from duet.hardware.rig import CameraSlot, RigConfig

HAVE_RS = importlib.util.find_spec("pyrealsense2") is not None
needs_rs = pytest.mark.skipif(not HAVE_RS, reason="pyrealsense2 not installed")
KINDS = [pytest.param("realsense", marks=needs_rs), "opencv"]


def make_camera(slot: CameraSlot, use_mock: bool, clock=None):
    """hardware.factory.make_camera (the one camera factory) for a one-camera rig holding this slot."""
    return factory.make_camera(RigConfig(name="cams", cameras=[slot]), slot.name, use_mock, clock)


def _slot(kind: str, **kw) -> CameraSlot:
    base = dict(name=f"cam_{kind}", kind=kind, serial="SN123", width=320, height=240, fps=30)
    base.update(kw)
    return CameraSlot(**base)


def _until(pred, timeout: float = 5.0, step: float = 0.01) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def _assert_indices_match_pixels(frames, kind: str) -> None:
    """The pixels show the frame they claim to be. RealSense indices are the device's
    frame numbers; a UVC camera has no counter OpenCV exposes, so its index counts from
    its first frame (and advances by the gaps in the V4L2 buffer times): only the
    differences match the device's."""
    shown = [decode_index(f.color) for f in frames]
    idx = [f.index for f in frames]
    if kind == "realsense":
        assert shown == idx
    else:
        assert [s - shown[0] for s in shown] == [i - idx[0] for i in idx]


def _collect(cam, n: int, timeout: float = 10.0) -> list:
    frames, end = [], time.monotonic() + timeout
    while len(frames) < n and time.monotonic() < end:
        f = cam.wait_for_frame(timeout=0.5)
        if f is not None:
            frames.append(f)
    return frames


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_mock_camera_streams_indexed_frames_on_the_monotonic_clock(kind):
    cam = make_camera(_slot(kind), use_mock=True)
    assert isinstance(cam, Camera)
    assert isinstance(cam, RealSenseCamera if kind == "realsense" else OpenCVCamera)  # the real driver class
    cam.connect()
    try:
        frames = _collect(cam, 15)
        assert len(frames) >= 15
        idx = [f.index for f in frames]
        assert all(b > a for a, b in zip(idx, idx[1:]))
        assert all(b.stamp > a.stamp for a, b in zip(frames, frames[1:]))
        now = time.monotonic()
        assert all(now - 5.0 < f.stamp <= now for f in frames)  # stamps are on time.monotonic
        assert all(f.color.shape == (240, 320, 3) for f in frames)
        _assert_indices_match_pixels(frames, kind)
        r = cam.read()
        assert r.connected and r.frame is not None and r.age >= 0
        h = cam.health()
        assert h["connected"] and h["frames"] >= 15 and h["fps"] > 0
        assert h["disconnects"] == 0 and h["timestamp_source"] == "hardware"
    finally:
        cam.disconnect()
        cam.disconnect()  # idempotent
    assert not cam.is_connected
    assert not cam.read().connected


@needs_rs
@pytest.mark.timeout(20)
def test_realsense_software_device_depth_aligned_and_hardware_stamps_mapped():
    clock = FakeClock(2000.0)
    slot = _slot("realsense", depth=True, width=160, height=120, fps=15)
    backend = SoftwareDeviceBackend(slot, clock)
    cam = RealSenseCamera(slot, clock, backend=backend)
    assert cam.features.has_depth
    cam.connect()
    try:
        got = []
        for _ in range(12):
            clock.advance(1.0 / slot.fps)
            f = cam.wait_for_frame(timeout=1.0)
            if f is not None:
                got.append((clock.now(), f))
        assert len(got) >= 8
        for t, f in got:
            # the SDK's frame carried a global-time stamp in ms; mapped back it is the capture time
            assert f.stamp == pytest.approx(t, abs=1e-3)
            assert f.depth is not None and f.depth.shape == (120, 160) and f.depth.dtype.name == "uint16"
            assert 400 < int(f.depth[60, 80]) < 1700  # aligned depth, mm
            assert decode_index(f.color) == f.index
        assert backend.fed >= len(got)
        assert cam.health()["timestamp_source"] == "hardware"
    finally:
        cam.disconnect()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_disconnect_is_reported_and_the_camera_reconnects(kind):
    clock = FakeClock(0.0)
    slot = _slot(kind, width=160, height=120, fps=10, fault_scenario="disconnect_at_0.5s:0.5")
    cam = make_camera(slot, use_mock=True, clock=clock)
    cam.connect()
    try:
        assert cam.wait_for_frame(timeout=2.0) is not None
        for _ in range(6):  # to t = 0.6 s: unplugged at 0.5 s
            clock.advance(0.1)
            cam.wait_for_frame(timeout=0.3)
        assert _until(lambda: not cam.read().connected)
        r = cam.read()
        assert r.stale and r.frame is not None  # the last frame is kept, never served as fresh
        h = cam.health()
        assert h["disconnects"] == 1 and not h["connected"] and h["last_error"]
        clock.advance(0.5)  # replugged at 1.0 s
        assert _until(lambda: cam.read().connected)
        clock.advance(0.1)
        f = cam.wait_for_frame(timeout=2.0)
        if f is None:  # a frame may have been due right at the reopen
            clock.advance(0.1)
            f = cam.wait_for_frame(timeout=2.0)
        assert f is not None and not cam.read().stale
        h = cam.health()
        assert h["reconnects"] == 1 and h["connected"]
    finally:
        cam.disconnect()


@pytest.mark.timeout(20)
def test_device_gone_for_good_never_crashes_and_disconnect_returns():
    clock = FakeClock(0.0)
    cam = make_camera(
        _slot("opencv", width=96, height=64, fps=10, fault_scenario="disconnect_at_0.2s"), True, clock
    )
    cam.connect()
    clock.advance(0.3)
    assert _until(lambda: not cam.is_connected)
    time.sleep(0.4)  # a few reconnect attempts with backoff
    h = cam.health()
    assert h["disconnects"] == 1 and h["reconnects"] == 0
    t = time.monotonic()
    cam.disconnect()
    assert time.monotonic() - t < 3.0
    cam.disconnect()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_dropped_frames_show_as_index_gaps_and_are_counted(kind):
    cam = make_camera(_slot(kind, width=96, height=64, fps=60, fault_scenario="drop_25pct"), use_mock=True)
    cam.connect()
    try:
        frames = _collect(cam, 40)
    finally:
        cam.disconnect()
    idx = [f.index for f in frames]
    assert any(b - a > 1 for a, b in zip(idx, idx[1:]))
    h = cam.health()
    assert h["dropped"] > 0 and h["frames"] >= len(frames)
    _assert_indices_match_pixels(frames, kind)


@pytest.mark.timeout(20)
def test_opencv_jpeg_passthrough_keeps_the_camera_bytes():
    cam = make_camera(_slot("opencv", jpeg=True), use_mock=True)
    cam.connect()
    try:
        frames = _collect(cam, 5)
    finally:
        cam.disconnect()
    assert len(frames) == 5
    for f in frames:
        assert f.jpeg is not None and f.jpeg[:2] == b"\xff\xd8" and f.jpeg[-2:] == b"\xff\xd9"
        assert f.color.shape == (240, 320, 3)
    _assert_indices_match_pixels(frames, "opencv")
    assert cam.health()["jpeg_passthrough"]


@pytest.mark.timeout(20)
def test_worker_survives_an_unexpected_driver_error():
    clock = FakeClock(0.0)
    slot = _slot("opencv", width=96, height=64, fps=10)

    class Flaky(SyntheticSource):
        calls = 0

        def read(self):
            Flaky.calls += 1
            if Flaky.calls == 3:
                raise RuntimeError("driver hiccup")
            return super().read()

    from duet.hardware.interfaces import CameraFeatures

    cam = CaptureCamera(CameraFeatures("cam", 96, 64, 10.0, False), Flaky(slot, clock), clock, 0.5)
    cam.connect()
    try:
        for _ in range(10):
            clock.advance(0.1)
            cam.wait_for_frame(timeout=0.3)
        assert _until(lambda: cam.health()["reconnects"] == 1)
        h = cam.health()
        assert h["read_errors"] == 1 and h["disconnects"] == 1 and "driver hiccup" in h["last_error"]
        clock.advance(0.1)
        assert cam.wait_for_frame(timeout=2.0) is not None or cam.wait_for_frame(timeout=2.0) is not None
    finally:
        cam.disconnect()


# ------------------------------------------------------------------ user errors, one line each


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and msg
    return msg


@needs_rs
def test_unknown_realsense_serial_lists_what_was_found():
    slot = _slot("realsense", serial="WRONG1")
    cam = RealSenseCamera(slot, backend=SoftwareDeviceBackend(slot, serial="SIM-0001"))
    with pytest.raises(CameraError) as e:
        cam.connect()
    msg = _one_line(e.value)
    assert "WRONG1" in msg and "SIM-0001" in msg and "cameras[].serial" in msg
    assert not cam.is_connected


@needs_rs
def test_real_realsense_backend_missing_serial_is_a_duet_error():
    # the real pipeline backend: no camera on CI, so the serial is not found
    cam = make_camera(_slot("realsense", serial="000000000042"), use_mock=False)
    with pytest.raises(DuetError) as e:
        cam.connect()
    assert "000000000042" in _one_line(e.value)


def test_opencv_device_that_cannot_open():
    cam = make_camera(_slot("opencv", device="/dev/v4l/by-id/usb-nothing-here-video-index0"), use_mock=False)
    with pytest.raises(CameraError) as e:
        cam.connect()
    msg = _one_line(e.value)
    assert "usb-nothing-here" in msg and "/dev/v4l/by-id" in msg


def test_config_errors():
    with pytest.raises(ConfigError):
        make_camera(_slot("realsense", jpeg=True), use_mock=True)
    with pytest.raises(CameraError):
        make_camera(_slot("opencv", device=""), use_mock=False)
    with pytest.raises(ConfigError):
        make_camera(_slot("opencv", fault_scenario="melt_at_2s"), use_mock=True)


@needs_rs
@pytest.mark.timeout(20)
def test_realsense_stamps_are_capture_times_not_arrival_times():
    from duet.hardware.cameras.realsense import RealSenseSource

    clock = FakeClock(500.0)
    slot = _slot("realsense", width=96, height=64, fps=10)
    backend = SoftwareDeviceBackend(slot, clock)
    src = RealSenseSource(slot, backend, clock)
    src.open()
    try:
        first = None
        while first is None:
            first = src.read()  # frame 0, read at once: arrival == capture
        assert first.stamp == pytest.approx(500.0, abs=1e-4)
        clock.advance(0.1)  # frame 1 is captured at 500.1 ...
        assert _until(lambda: backend.fed >= 2)
        clock.advance(0.03)  # ... and read 30 ms later
        second = None
        while second is None:
            second = src.read()
        assert second.index == 1
        assert second.stamp == pytest.approx(500.1, abs=1e-3)  # the device time, mapped (not 500.13)
        assert src.timestamp_source == "hardware"
    finally:
        src.close()


def test_discover_cameras_lists_what_is_plugged_in():
    from duet.hardware.cameras import discover_cameras

    found = discover_cameras()
    assert set(found) == {"realsense", "uvc"}
    for dev in found["uvc"]:
        assert dev["device"].startswith("/dev/v4l/by-id/")


@pytest.mark.timeout(20)
def test_opencv_camera_drives_a_real_cv2_videocapture(tmp_path):
    """The OpenCV camera code against real cv2.VideoCapture calls (a video file stands in
    for the UVC device: no V4L2 node on CI)."""
    import os

    import cv2

    from duet.hardware.mock.cameras import FrameRenderer

    path = str(tmp_path / "uvc.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
    if not w.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG AVI")
    r = FrameRenderer(160, 120, "file")
    for i in range(20):
        w.write(np.ascontiguousarray(r.color(i, 0.0)[..., ::-1]))
    w.release()

    class FileBackend:
        def open(self, device):
            return cv2.VideoCapture(device)

        def present(self, device):
            return os.path.exists(device)

    slot = _slot("opencv", device=path, width=160, height=120, fps=30)
    cam = OpenCVCamera(slot, backend=FileBackend())
    cam.connect()
    try:
        frames = _collect(cam, 10)
    finally:
        cam.disconnect()
    assert len(frames) == 10
    assert [decode_index(f.color) for f in frames] == list(range(10))  # RGB out, in order
    assert [f.index for f in frames] == list(range(10))
    assert cam.health()["timestamp_source"] == "arrival"  # a file position is no capture time
