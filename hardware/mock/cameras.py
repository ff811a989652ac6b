"""Mock cameras: a synthetic camera device with fault injection, and the fakes that let the
real driver code run against it.

- SyntheticDevice: the "device". Frames are rendered at the configured fps on absolute
  deadlines (duet.clock.Pacer) on the injected clock. Each frame shows its index and
  capture time as text over a moving stripe pattern, and carries its index as a binary
  barcode in the top band (decode_index() reads it back, also after JPEG), so a test or a
  latency probe can tell exactly which frame it is looking at.
- SyntheticUVCBackend: what OpenCVCamera opens in mock mode; its captures behave like
  cv2.VideoCapture on V4L2 (grab / retrieve / set / get, MJPG with CONVERT_RGB off
  returns the JPEG bytes), so the real OpenCV camera code runs unmodified.
- SoftwareDeviceBackend: what RealSenseCamera uses in mock mode. The synthetic frames
  are fed into a pyrealsense2 software_device (color rgb8 + depth z16 with intrinsics,
  extrinsics and a hardware-clock timestamp domain) and come out of the SDK's syncer as
  real rs.frameset objects, so the real RealSense frame handling (rs.align, frame
  numbers, timestamp domains) runs against them.
- SyntheticSource: the synthetic device as a plain FrameSource, used for kind=realsense
  when pyrealsense2 is not installed.
- mock_realsense_intrinsics: the color intrinsics of the mock RealSense, numbers of the
  kind a D435's color stream reports (focal length ~617 px at 640 px width, principal
  point a few pixels off centre, inverse Brown-Conrady with zero coefficients), read
  back through the SDK exactly as from a real device (video_stream_profile.get_intrinsics()).

Fault scenarios (CameraSlot.fault_scenario, comma-separated, times from the first open):
  stall_at_<T>s:<D>        no frames for D seconds from T (the device stays present)
  disconnect_at_<T>s[:<D>] the device disappears at T; back after D seconds (never without D)
  drop_<P>pct              each frame is lost with probability P % (frame counter gaps)
"""

from __future__ import annotations

import random
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from duet.clock import Clock, MonotonicClock, Pacer
from duet.errors import ConfigError
from duet.hardware.cameras.base import CameraError, CaptureCamera, SourceLost, wait_until
from duet.hardware.cameras.intrinsics import Intrinsics
from duet.hardware.interfaces import CameraFeatures, Frame
from duet.hardware.rig import CameraSlot

# --------------------------------------------------------------------------- fault scenarios

_FAULT_FORMS = "stall_at_<T>s:<D>, disconnect_at_<T>s[:<D>], drop_<P>pct"
_NUM = r"(\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class FaultScenario:
    stalls: tuple[tuple[float, float], ...] = ()  # (start, end) s from the first open
    unplugged: tuple[tuple[float, float], ...] = ()  # (start, end); end inf = for good
    drop_p: float = 0.0  # probability that a frame is lost

    @classmethod
    def parse(cls, text: str, camera: str = "") -> FaultScenario:
        stalls, unplugged, drop_p = [], [], 0.0
        for tok in (t.strip() for t in text.split(",")):
            if not tok:
                continue
            if m := re.fullmatch(rf"stall_at_{_NUM}s:{_NUM}", tok):
                t0, d = float(m[1]), float(m[2])
                stalls.append((t0, t0 + d))
            elif m := re.fullmatch(rf"disconnect_at_{_NUM}s(?::{_NUM})?", tok):
                t0 = float(m[1])
                unplugged.append((t0, t0 + float(m[2]) if m[2] else float("inf")))
            elif m := re.fullmatch(rf"drop_{_NUM}pct", tok):
                drop_p = float(m[1]) / 100.0
                if drop_p > 1.0:
                    raise ConfigError(f"camera {camera!r}: fault {tok!r} drops more than 100 % of frames")
            else:
                raise ConfigError(f"camera {camera!r}: unknown fault {tok!r}; use {_FAULT_FORMS}")
        return cls(tuple(stalls), tuple(unplugged), drop_p)

    @staticmethod
    def window_end(windows: tuple[tuple[float, float], ...], t: float) -> float | None:
        """The end of the window containing t, or None."""
        for a, b in windows:
            if a <= t < b:
                return b
        return None


# --------------------------------------------------------------------------- rendering

INDEX_BITS = 24  # frame index barcode: 24 bits, most significant first
_BAND_H = 12  # barcode band height, px


class FrameRenderer:
    """Renders synthetic frames cheaply: a precomputed wide stripe tile is sliced at an
    offset that moves with the frame index; barcode and text are drawn on top."""

    def __init__(self, width: int, height: int, label: str = "", depth: bool = False):
        if width < 2 * INDEX_BITS or height < 2 * _BAND_H:
            raise ConfigError(
                f"camera {label!r}: synthetic frames need at least {2 * INDEX_BITS}x{2 * _BAND_H} px"
            )
        self.width, self.height, self.label = width, height, label
        self.period = 96  # stripe period, px
        x = np.arange(width + self.period)
        y = np.arange(height)[:, None]
        phase = 2 * np.pi * (x[None, :] + 0.5 * y) / self.period
        tile = np.empty((height, width + self.period, 3), np.uint8)
        tile[..., 0] = (90 + 60 * np.sin(phase)).astype(np.uint8)
        tile[..., 1] = (90 + 60 * np.sin(phase + 2.1)).astype(np.uint8)
        tile[..., 2] = (90 + 60 * np.sin(phase + 4.2)).astype(np.uint8)
        self._tile = tile
        self._block = width // INDEX_BITS
        self._scale = max(0.4, width / 640.0)
        self._depth_base = None
        if depth:  # a tilted plane 0.5 .. 1.5 m, in mm
            ramp = (
                500.0
                + 1000.0 * (np.arange(height)[:, None] / max(1, height - 1))
                + 0 * np.arange(width)[None, :]
            )
            self._depth_base = ramp.astype(np.uint16)

    def color(self, index: int, stamp: float) -> np.ndarray:
        """(H, W, 3) uint8 RGB showing `index` and `stamp`."""
        off = (index * 4) % self.period
        img = np.ascontiguousarray(self._tile[:, off : off + self.width])
        bits = [(index >> (INDEX_BITS - 1 - b)) & 1 for b in range(INDEX_BITS)]
        band = img[:_BAND_H]
        band[:] = 0
        for b, bit in enumerate(bits):
            if bit:
                band[:, b * self._block : (b + 1) * self._block] = 255
        s = self._scale
        for text, y in ((f"{self.label} #{index}", 40), (f"t={stamp:.3f}", 75)):
            org = (8, int(_BAND_H + y * s))
            cv2.putText(
                img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.9 * s, (0, 0, 0), max(1, int(4 * s)), cv2.LINE_AA
            )
            cv2.putText(
                img,
                text,
                org,
                cv2.FONT_HERSHEY_SIMPLEX,
                0.9 * s,
                (255, 255, 255),
                max(1, int(2 * s)),
                cv2.LINE_AA,
            )
        return img

    def depth(self, index: int) -> np.ndarray | None:
        """(H, W) uint16 mm: the plane moving back and forth by up to 10 cm."""
        if self._depth_base is None:
            return None
        return self._depth_base + np.uint16(abs((index % 100) - 50) * 2)


def decode_index(color: np.ndarray) -> int:
    """Read the frame index back from a synthetic frame's barcode band (RGB or BGR)."""
    h, w = color.shape[:2]
    block = w // INDEX_BITS
    row = (
        color[_BAND_H // 2, :, :].astype(np.int32).sum(axis=-1) / 3.0
        if color.ndim == 3
        else color[_BAND_H // 2]
    )
    value = 0
    for b in range(INDEX_BITS):
        value = (value << 1) | int(row[b * block + block // 2] > 127)
    return value


# --------------------------------------------------------------------------- the device


@dataclass
class SynthFrame:
    index: int  # device frame counter (restarts at 0 when the device re-enumerates)
    stamp: float  # capture time on the injected clock (the frame's deadline on the sensor grid)
    color: np.ndarray  # (H, W, 3) uint8 RGB
    depth: np.ndarray | None = None


class _Interrupted(Exception):
    pass


class _StoppableClock:
    """Adapts a Clock for Pacer: sleep_until gives up (raises) on stop or read timeout;
    Pacer then keeps the same deadline for the next call."""

    def __init__(self, clock: Clock, stop: threading.Event):
        self.clock, self.stop = clock, stop
        self.real_timeout: float | None = None

    def now(self) -> float:
        return self.clock.now()

    def sleep_until(self, t: float) -> None:
        if not wait_until(self.clock, t, self.stop, self.real_timeout):
            raise _Interrupted


@dataclass
class SyntheticDevice:
    """A synthetic camera device: paced frame generation with the slot's fault scenario.
    State (fault time origin, plugged or not) persists across opens, like a real device."""

    slot: CameraSlot
    clock: Clock = field(default_factory=MonotonicClock)

    def __post_init__(self):
        self.faults = FaultScenario.parse(self.slot.fault_scenario, self.slot.name)
        self.renderer = FrameRenderer(self.slot.width, self.slot.height, self.slot.name, self.slot.depth)
        self.origin: float | None = None  # clock time of the first open (fault times count from it)
        self._rng = random.Random(zlib.crc32(self.slot.name.encode()))
        self._pacer: Pacer | None = None
        self._grid_t0 = 0.0
        self.stop = threading.Event()
        self._sclock = _StoppableClock(self.clock, self.stop)

    # time since the first open, for the fault schedule
    def _t(self) -> float:
        if self.origin is None:
            return 0.0
        return self.clock.now() - self.origin

    def present(self) -> bool:
        return FaultScenario.window_end(self.faults.unplugged, self._t()) is None

    def start(self) -> None:
        """(Re)start streaming: the frame counter restarts at 0, pacing starts now."""
        now = self.clock.now()
        if self.origin is None:
            self.origin = now
        self.stop.clear()
        self._pacer = Pacer(self.slot.fps, self._sclock)
        self._pacer.start(now)
        self._grid_t0 = now

    def next(self, real_timeout: float | None = None) -> SynthFrame | None:
        """Wait for the next frame deadline and render it. None when no frame came within
        real_timeout (stall, or a clock that does not move) or on stop; SourceLost when
        the device is unplugged."""
        if self._pacer is None:
            raise RuntimeError("SyntheticDevice.next() before start()")
        give_up = None if real_timeout is None else time.monotonic() + real_timeout
        while True:
            if give_up is not None:
                self._sclock.real_timeout = max(0.0, give_up - time.monotonic())
            if not self.present():
                raise SourceLost("device unplugged (mock fault)")
            try:
                deadline = self._pacer.wait()
            except _Interrupted:
                return None
            # the device counter counts every exposure slot, delivered or not
            index = int(round((deadline - self._grid_t0) * self.slot.fps))
            if not self.present():
                raise SourceLost("device unplugged (mock fault)")
            if FaultScenario.window_end(self.faults.stalls, deadline - (self.origin or 0.0)) is not None:
                continue
            if self.faults.drop_p > 0 and self._rng.random() < self.faults.drop_p:
                continue
            # The sensor exposes on its own regular grid: the capture time is the deadline;
            # a late render is delivery latency, as with a real camera.
            return SynthFrame(
                index, deadline, self.renderer.color(index, deadline), self.renderer.depth(index)
            )

    def close(self) -> None:
        self.stop.set()


# --------------------------------------------------------------------------- UVC (OpenCV) fake


class SyntheticVideoCapture:
    """Behaves like cv2.VideoCapture(CAP_V4L2) on a UVC camera, over a SyntheticDevice.

    The mode is fixed by the device (like a camera that supports one mode): set() of
    width/height/fps is accepted and get() reports what the device delivers. With
    FOURCC MJPG and CONVERT_RGB 0, retrieve() returns the JPEG bytes as a 1xN uint8 Mat,
    as OpenCV's V4L2 backend does. CAP_PROP_POS_MSEC is the capture time of the last
    grabbed frame in ms (V4L2 reports the buffer's CLOCK_MONOTONIC time there).
    """

    _MJPG = cv2.VideoWriter.fourcc(*"MJPG")
    _YUYV = cv2.VideoWriter.fourcc(*"YUYV")

    def __init__(self, device: SyntheticDevice, jpeg_quality: int = 90):
        self._dev = device
        self._opened = device.present()
        self._props = {
            cv2.CAP_PROP_FOURCC: float(self._YUYV),
            cv2.CAP_PROP_CONVERT_RGB: 1.0,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC: 10_000.0,
            cv2.CAP_PROP_BUFFERSIZE: 4.0,
        }
        self._jpeg_quality = jpeg_quality
        self._frame: SynthFrame | None = None
        if self._opened:
            device.start()

    def isOpened(self) -> bool:  # noqa: N802 - cv2 API
        return self._opened

    def set(self, prop: int, value: float) -> bool:
        if not self._opened:
            return False
        if prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS):
            return True  # fixed mode; get() tells the truth
        if prop == cv2.CAP_PROP_FOURCC and int(value) not in (self._MJPG, self._YUYV):
            return False
        self._props[prop] = float(value)
        return True

    def get(self, prop: int) -> float:
        slot = self._dev.slot
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(slot.width)
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(slot.height)
        if prop == cv2.CAP_PROP_FPS:
            return float(slot.fps)
        if prop == cv2.CAP_PROP_POS_MSEC:
            return self._frame.stamp * 1000.0 if self._frame is not None else 0.0
        return self._props.get(prop, 0.0)

    def grab(self) -> bool:
        if not self._opened:
            return False
        try:
            f = self._dev.next(real_timeout=self._props[cv2.CAP_PROP_READ_TIMEOUT_MSEC] / 1000.0)
        except SourceLost:
            return False
        if f is None:
            return False
        self._frame = f
        return True

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        f = self._frame
        if f is None:
            return False, None
        bgr = np.ascontiguousarray(f.color[..., ::-1])
        raw = self._props[cv2.CAP_PROP_CONVERT_RGB] == 0
        if raw and int(self._props[cv2.CAP_PROP_FOURCC]) == self._MJPG:
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self._jpeg_quality])
            return bool(ok), buf.reshape(1, -1)
        return True, bgr

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.grab():
            return False, None
        return self.retrieve()

    def release(self) -> None:
        self._opened = False
        self._dev.close()


class SyntheticUVCBackend:
    """The UVC backend OpenCVCamera uses in mock mode (see opencv.OpenCVBackend)."""

    def __init__(self, slot: CameraSlot, clock: Clock | None = None):
        self.device = SyntheticDevice(slot, clock or MonotonicClock())

    def open(self, device: str) -> SyntheticVideoCapture:
        return SyntheticVideoCapture(self.device)

    def present(self, device: str) -> bool:
        return self.device.present()


# --------------------------------------------------------------------------- RealSense fake


def mock_realsense_intrinsics(width: int, height: int) -> dict[str, float]:
    """The mock RealSense's color intrinsics at width x height: a D435 color stream's
    factory values at 640x480 (fx 617.3, fy 617.5, principal point (324.3, 241.9), i.e.
    (4.8, 2.4) px off the centre), scaled with the width as the sensor is binned (px)."""
    s = width / 640.0
    return {
        "fx": 617.31 * s,
        "fy": 617.52 * s,
        "ppx": (width - 1) / 2.0 + (324.27 - 319.5) * s,
        "ppy": (height - 1) / 2.0 + (241.93 - 239.5) * s,
    }


class SoftwareDeviceBackend:
    """The RealSense backend RealSenseCamera uses in mock mode: a pyrealsense2
    software_device fed by the synthetic device, read through the SDK's syncer.

    Each start() builds a fresh software device (as a replugged camera re-enumerates):
    sensors "RGB Camera" (rgb8) and "Stereo Module" (z16 depth, depth units 1 mm), the
    same pinhole intrinsics for both (mock_realsense_intrinsics; color with a D435's
    inverse Brown-Conrady model, zero coefficients) and identity extrinsics. Frames carry
    the device's frame number and a global_time timestamp in ms, as D400 cameras deliver by default:
    the capture time moved onto a wall-clock-like time base (capture time +
    device_clock_offset_s), which the camera has to map back onto its own clock. (The
    SDK's syncer expects timestamps near the wall clock: with small values it stops
    pairing color and depth after a few frames.)

    (A software_device added to an rs.context is not listed by query_devices() in
    pyrealsense2 2.59, so rs.pipeline cannot open it; the sensors are opened directly
    and their frames go through an rs.syncer, which yields the same rs.frameset objects
    the pipeline does.)
    """

    def __init__(self, slot: CameraSlot, clock: Clock | None = None, serial: str | None = None):
        import pyrealsense2 as rs

        self._rs = rs
        self.slot = slot
        self.serial = serial if serial is not None else (slot.serial or f"MOCK-{slot.name}")
        self.device = SyntheticDevice(slot, clock or MonotonicClock())
        self._sdev = None
        self._sensors: list = []
        self._sync = None
        self._feeder: threading.Thread | None = None
        self._profiles: dict[str, Any] = {}
        self.fed = 0  # frames pushed into the SDK (diagnostics)
        # the simulated device time base: the wall clock, offset from the camera's clock
        self.device_clock_offset_s = time.time() - self.device.clock.now()

    def serials(self) -> list[str]:
        return [self.serial] if self.device.present() else []

    def start(self, serial: str, width: int, height: int, fps: int, depth: bool) -> None:
        rs = self._rs
        if serial not in self.serials():
            raise RuntimeError("No device connected")
        s = self.slot
        if (width, height, fps) != (s.width, s.height, s.fps):
            raise RuntimeError("Couldn't resolve requests")
        sdev = rs.software_device()
        sdev.register_info(rs.camera_info.serial_number, self.serial)
        sdev.register_info(rs.camera_info.name, "duet synthetic RealSense")
        k = mock_realsense_intrinsics(width, height)
        intr = rs.intrinsics()  # color: what a D435 reports (inverse Brown-Conrady, zero coefficients)
        intr.width, intr.height = width, height
        intr.fx, intr.fy, intr.ppx, intr.ppy = k["fx"], k["fy"], k["ppx"], k["ppy"]
        intr.model = rs.distortion.inverse_brown_conrady
        intr.coeffs = [0.0] * 5
        dintr = rs.intrinsics()  # depth: the same pinhole (aligned to color by identity), no distortion
        dintr.width, dintr.height = width, height
        dintr.fx, dintr.fy, dintr.ppx, dintr.ppy = k["fx"], k["fy"], k["ppx"], k["ppy"]
        dintr.model = rs.distortion.none
        dintr.coeffs = [0.0] * 5
        color_sensor = sdev.add_sensor("RGB Camera")
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid = rs.stream.color, 0, 1
        vs.width, vs.height, vs.fps, vs.bpp, vs.fmt, vs.intrinsics = (
            width,
            height,
            fps,
            3,
            rs.format.rgb8,
            intr,
        )
        cprof = color_sensor.add_video_stream(vs, True).as_video_stream_profile()
        sensors, profiles = [color_sensor], {"color": cprof}
        if depth:
            depth_sensor = sdev.add_sensor("Stereo Module")
            ds = rs.video_stream()
            ds.type, ds.index, ds.uid = rs.stream.depth, 0, 0
            ds.width, ds.height, ds.fps, ds.bpp, ds.fmt, ds.intrinsics = (
                width,
                height,
                fps,
                2,
                rs.format.z16,
                dintr,
            )
            dprof = depth_sensor.add_video_stream(ds, True).as_video_stream_profile()
            depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
            ext = rs.extrinsics()
            ext.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            ext.translation = [0.0, 0.0, 0.0]
            dprof.register_extrinsics_to(cprof, ext)
            sensors.append(depth_sensor)
            profiles["depth"] = dprof
        sdev.create_matcher(rs.matchers.default)
        sync = rs.syncer(4)
        for sensor, key in zip(sensors, ("color", "depth")):
            sensor.open(profiles[key])
            sensor.start(sync)
        self._sdev, self._sensors, self._sync, self._profiles = sdev, sensors, sync, profiles
        self.device.start()
        self._feeder = threading.Thread(target=self._feed, name=f"rs-feeder-{s.name}", daemon=True)
        self._feeder.start()

    def _video_frame(self, pixels: np.ndarray, key: str, f: SynthFrame):
        rs = self._rs
        v = rs.software_video_frame()
        v.pixels = pixels
        v.bpp = pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
        v.stride = pixels.shape[1] * v.bpp
        v.timestamp = (f.stamp + self.device_clock_offset_s) * 1000.0
        v.domain = rs.timestamp_domain.global_time
        v.frame_number = f.index
        v.profile = self._profiles[key]
        if key == "depth":
            v.depth_units = 0.001
        return v

    def _feed(self) -> None:
        color_sensor = self._sensors[0]
        depth_sensor = self._sensors[1] if len(self._sensors) > 1 else None
        while not self.device.stop.is_set():
            try:
                f = self.device.next(real_timeout=0.2)
            except SourceLost:
                return  # unplugged: the SDK simply stops delivering
            if f is None:
                continue
            if depth_sensor is not None and f.depth is not None:
                depth_sensor.on_video_frame(self._video_frame(f.depth, "depth", f))
            color_sensor.on_video_frame(self._video_frame(f.color, "color", f))
            self.fed += 1

    def color_intrinsics(self):
        """The color stream's rs.intrinsics, read from its profile as from a real device."""
        prof = self._profiles.get("color")
        return None if prof is None else prof.as_video_stream_profile().get_intrinsics()

    def wait(self, timeout_ms: int):
        if self._sync is None:
            return None
        ok, fs = self._sync.try_wait_for_frames(int(timeout_ms))
        return fs if ok else None

    def stop(self) -> None:
        self.device.close()
        if self._feeder is not None:
            self._feeder.join(timeout=2.0)
            self._feeder = None
        for sensor in self._sensors:
            for op in (sensor.stop, sensor.close):
                try:
                    op()
                except RuntimeError:
                    pass
        self._sensors, self._sync, self._sdev, self._profiles = [], None, None, {}


# --------------------------------------------------------------------------- plain source


class SyntheticSource:
    """The synthetic device as a FrameSource (no driver in between): kind=realsense in
    mock mode when pyrealsense2 is not installed."""

    timestamp_source = "synthetic"

    def __init__(self, slot: CameraSlot, clock: Clock | None = None):
        self.device = SyntheticDevice(slot, clock or MonotonicClock())

    def intrinsics(self) -> Intrinsics:
        """The mock RealSense's (mock_realsense_intrinsics), without the SDK in between."""
        s = self.device.slot
        k = mock_realsense_intrinsics(s.width, s.height)
        return Intrinsics(
            s.width,
            s.height,
            fx=k["fx"],
            fy=k["fy"],
            cx=k["ppx"],
            cy=k["ppy"],
            distortion=(0.0,) * 5,
            source="synthetic (mock RealSense)",
        )

    def open(self) -> None:
        if not self.device.present():
            raise CameraError(
                f"camera {self.device.slot.name!r}: synthetic device unplugged (fault scenario)"
            )
        self.device.start()

    def read(self) -> Frame | None:
        f = self.device.next(real_timeout=0.2)
        if f is None:
            return None
        return Frame(stamp=f.stamp, index=f.index, color=f.color, depth=f.depth)

    def close(self) -> None:
        self.device.close()


class SyntheticCamera(CaptureCamera):
    """The synthetic device behind the capture worker, with no driver in between."""

    kind = "synthetic"

    def __init__(self, slot: CameraSlot, clock: Clock | None = None):
        clock = clock or MonotonicClock()
        features = CameraFeatures(slot.name, slot.width, slot.height, float(slot.fps), has_depth=slot.depth)
        super().__init__(features, SyntheticSource(slot, clock), clock, slot.max_age_s)
