"""Camera building blocks: fault scenarios, timestamp mapping, synthetic frames, staleness."""

import cv2
import numpy as np
import pytest

from duet.clock import FakeClock
from duet.errors import ConfigError, DuetError
from duet.hardware.cameras import TimestampMapper
from duet.hardware.factory import make_camera
from duet.hardware.mock.cameras import FaultScenario, FrameRenderer, SyntheticCamera, decode_index
from duet.hardware.rig import CameraSlot, RigConfig


def test_fault_scenario_parses_all_forms():
    f = FaultScenario.parse("stall_at_2s:1.5, disconnect_at_4.5s:1,drop_5pct", "cam")
    assert f.stalls == ((2.0, 3.5),)
    assert f.unplugged == ((4.5, 5.5),)
    assert f.drop_p == pytest.approx(0.05)
    forever = FaultScenario.parse("disconnect_at_2s")
    assert forever.unplugged == ((2.0, float("inf")),)
    assert FaultScenario.parse("") == FaultScenario()


@pytest.mark.parametrize("bad", ["stall_at_2s", "explode", "drop_150pct", "disconnect_at_xs"])
def test_fault_scenario_rejects_unknown_faults_in_one_line(bad):
    with pytest.raises(ConfigError) as e:
        FaultScenario.parse(bad, "cam_high")
    msg = str(e.value)
    assert "cam_high" in msg and "\n" not in msg


def test_timestamp_mapper_recovers_offset_as_lower_envelope():
    rng = np.random.default_rng(0)
    m = TimestampMapper()
    offset = 123.456  # host = device + offset
    out = []
    for k in range(300):
        device_t = 10.0 + k / 30.0
        latency = 0.002 + rng.exponential(0.004)  # never negative, occasionally large
        arrival = device_t + offset + latency
        stamp = m.map(device_t, arrival)
        assert stamp <= arrival
        out.append(stamp - (device_t + offset))
    # The fixed part of the latency (2 ms) cannot be seen from the host; the jitter is
    # removed: after a few frames every stamp sits just above the fixed latency.
    err = np.array(out[30:])
    assert np.all(err >= 0.002 - 1e-9) and np.all(err < 0.0026)


def test_timestamp_mapper_restarts_after_device_clock_jump():
    m = TimestampMapper()
    m.map(5.0, 105.0)
    assert m.map(0.0, 105.1) == pytest.approx(105.1)  # device clock reset: new offset at once
    assert m.offset == pytest.approx(105.1)


def test_renderer_encodes_index_and_survives_jpeg():
    r = FrameRenderer(640, 480, "cam", depth=True)
    prev = None
    for index in (0, 1, 2, 77, 4095, 123456, 2**24 - 1):
        img = r.color(index, 1000.0 + index / 30)
        assert img.shape == (480, 640, 3) and img.dtype == np.uint8
        assert decode_index(img) == index
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
        assert ok and decode_index(cv2.imdecode(buf, cv2.IMREAD_COLOR)) == index
        if prev is not None:
            # the picture below the barcode (pattern + text) changes from frame to frame
            assert np.any(img[20:] != prev[20:])
        prev = img
    d = r.depth(3)
    assert d.dtype == np.uint16 and d.shape == (480, 640) and 400 < d.min() < d.max() < 1700


def test_small_synthetic_frames_are_refused_with_a_clear_error():
    with pytest.raises(DuetError, match="synthetic frames need"):
        FrameRenderer(32, 16, "tiny")


def _drive(clock: FakeClock, cam, seconds: float, fps: float, timeout: float = 1.0) -> list:
    """Advance the fake clock frame period by frame period, collecting the frames."""
    frames = []
    for _ in range(int(round(seconds * fps))):
        clock.advance(1.0 / fps)
        f = cam.wait_for_frame(timeout=timeout)
        if f is not None:
            frames.append(f)
    return frames


@pytest.mark.timeout(20)
def test_staleness_and_stall_with_fake_clock():
    clock = FakeClock(1000.0)
    slot = CameraSlot(
        name="cam",
        kind="opencv",
        width=160,
        height=120,
        fps=10,
        max_age_s=0.25,
        fault_scenario="stall_at_1s:1",
    )
    cam = make_camera(RigConfig(name="cams", cameras=[slot]), slot.name, use_mock=True, clock=clock)
    cam.connect()
    try:
        first = cam.wait_for_frame(timeout=2.0)  # frame 0 is due at once
        assert first is not None and first.stamp == pytest.approx(1000.0)
        frames = _drive(clock, cam, 0.9, slot.fps)
        r = cam.read()
        assert not r.stale and r.connected and r.age == pytest.approx(0.0, abs=1e-9)
        assert [f.index for f in frames] == list(range(1, len(frames) + 1))
        assert all(b.stamp > a.stamp for a, b in zip(frames, frames[1:]))

        clock.advance(0.2)  # no new frame yet but still young enough
        assert not cam.read().stale
        # inside the stall window: time moves on, no frame comes, the old one goes stale
        stalled = _drive(clock, cam, 0.5, slot.fps, timeout=0.05)
        assert stalled == []
        r = cam.read()
        assert r.stale and r.connected and r.age > slot.max_age_s
        assert r.frame.index == frames[-1].index  # the same frame, now reported as stale
        h = cam.health()
        assert h["stalled"] and h["fps"] == 0.0 and h["connected"]
        # after the stall frames flow again and are fresh
        after = _drive(clock, cam, 1.0, slot.fps, timeout=0.2)
        assert after and not cam.read().stale
        h = cam.health()
        assert h["stalls"] == 1 and h["connected"] and not h["stalled"]
        assert h["fps"] == pytest.approx(slot.fps, rel=0.01)  # measured on the (fake) capture stamps
        assert h["dropped"] >= 9  # the device counter kept counting through the stall
    finally:
        cam.disconnect()
    assert not cam.is_connected
    assert cam.read().stale  # a disconnected camera's last frame is never fresh


@pytest.mark.timeout(20)
def test_synthetic_camera_without_driver():
    clock = FakeClock(50.0)
    slot = CameraSlot(name="cam", kind="realsense", width=96, height=64, fps=20, depth=True)
    cam = SyntheticCamera(slot, clock)
    cam.connect()
    try:
        frames = _drive(clock, cam, 0.5, slot.fps)
        assert len(frames) >= 8
        assert all(decode_index(f.color) == f.index for f in frames)
        assert frames[-1].depth is not None and frames[-1].depth.shape == (64, 96)
    finally:
        cam.disconnect()
