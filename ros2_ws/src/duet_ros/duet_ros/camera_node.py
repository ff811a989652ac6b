"""Camera node: one per camera, publishing the camera worker's latest frame.

Topics (relative to the node name, e.g. /cam_high/...), sensor-data QoS (best effort):
  ~/image/compressed   sensor_msgs/CompressedImage, JPEG (default); a device that delivers
                       JPEG is passed through without re-encoding
  ~/image              sensor_msgs/Image rgb8 (publish_raw: true)
  ~/camera_info        sensor_msgs/CameraInfo beside every image (same header stamp and
                       frame_id, the image_transport layout): the driver's intrinsics
                       (RealSense SDK, sim field of view, cameras[].calibration for UVC),
                       scaled to the published frame's size; uncalibrated cameras get
                       their size and zero matrices (K[0] == 0), as the message defines
  /diagnostics         1 Hz: connected, stale, frame age, published fps, encode time,
                       dropped frames and the driver's health counters

Header stamps are the frames' capture times (never the publish time). The capture runs in
the camera's own worker; this node's publish loop (a paced thread, not the executor)
encodes and publishes each new frame once; a stale or disconnected camera publishes
nothing and reports WARN / ERROR.
"""

from __future__ import annotations

import threading
import time

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from duet.clock import MonotonicClock
from duet.errors import DuetError
from duet.hardware.cameras.intrinsics import Intrinsics, camera_intrinsics
from duet.hardware.factory import make_camera
from duet.hardware.rig import load_rig
from duet.hardware.urdf import optical_frame
from duet.stats import Samples
from duet_ros import convert
from duet_ros.configs import CameraNodeConfig
from duet_ros.params import declare_config
from duet_ros.runtime import PacedThread, run_node

DIAG_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# topic names relative to the node (/<camera>/...); launch/rviz/duet.rviz names them too
COMPRESSED_TOPIC = "image/compressed"
IMAGE_TOPIC = "image"
CAMERA_INFO_TOPIC = "camera_info"


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera")
        self.cfg = declare_config(self, CameraNodeConfig)
        cfg = self.cfg
        self.rig = load_rig(cfg.rig)
        self.slot = self.rig.camera(cfg.camera)
        # images are in the camera's optical frame (REP 103: z forward, x right, y down), a frame of
        # the rig's URDF (duet.hardware.urdf), so CameraInfo projects in the frame TF knows
        self.frame_id = optical_frame(cfg.camera)
        if cfg.fps:
            self.slot.fps = max(1, int(round(cfg.fps)))
        if cfg.fault_scenario:
            self.slot.fault_scenario = cfg.fault_scenario
        self.clock = MonotonicClock()
        self.mapper = convert.TimeMapper()
        self.pub_jpeg = (
            self.create_publisher(CompressedImage, f"~/{COMPRESSED_TOPIC}", qos_profile_sensor_data)
            if cfg.publish_compressed
            else None
        )
        self.pub_raw = (
            self.create_publisher(Image, f"~/{IMAGE_TOPIC}", qos_profile_sensor_data)
            if cfg.publish_raw
            else None
        )
        self.pub_info = (
            self.create_publisher(CameraInfo, f"~/{CAMERA_INFO_TOPIC}", qos_profile_sensor_data)
            if cfg.publish_compressed or cfg.publish_raw
            else None
        )
        self.pub_diag = self.create_publisher(convert.DiagnosticArray, "/diagnostics", DIAG_QOS)
        self.camera = make_camera(self.rig, self.slot.name, cfg.use_mock_hardware, clock=self.clock)
        self.camera.connect()
        self._last_index: int | None = None
        self._published = 0
        self._published_window = 0
        self._skipped_index_gaps = 0
        self._stale_ticks = 0
        self._reading = None
        self._last_error = ""
        self._intrinsics_error = ""
        self._intrinsics_source = ""
        self._encode = Samples(4096)
        self._lock = threading.Lock()
        self._window_start = self.clock.now()
        self._loop = PacedThread(
            f"{cfg.camera}-publish", float(self.slot.fps), self._tick, self._on_error, self.clock
        )
        self._loop.start()
        self.create_timer(1.0 / cfg.diagnostics_rate_hz, self._publish_diagnostics)
        self.get_logger().info(
            f"{cfg.camera} ({self.slot.kind}, {'mock' if cfg.use_mock_hardware else 'real'}) "
            f"{self.slot.width}x{self.slot.height} @ {self.slot.fps} fps"
        )

    def _tick(self) -> None:
        reading = self.camera.read()
        self._reading = reading
        frame = reading.frame
        if frame is None or reading.stale or not reading.connected:
            self._stale_ticks += 1
            return
        if frame.index == self._last_index:
            return
        if self._last_index is not None and frame.index > self._last_index + 1:
            self._skipped_index_gaps += frame.index - self._last_index - 1
        self._last_index = frame.index
        t0 = time.perf_counter()
        if self.pub_jpeg is not None:
            self.pub_jpeg.publish(
                convert.frame_to_compressed(frame, self.mapper, self.frame_id, self.cfg.jpeg_quality)
            )
        if self.pub_raw is not None:
            self.pub_raw.publish(convert.frame_to_image(frame, self.mapper, self.frame_id))
        if self.pub_info is not None:
            h, w = frame.color.shape[:2]
            self.pub_info.publish(
                convert.intrinsics_to_camera_info(
                    self._intrinsics(w, h), frame.stamp, self.mapper, self.frame_id
                )
            )
        self._encode.add((time.perf_counter() - t0) * 1e3)
        with self._lock:
            self._published += 1
            self._published_window += 1

    def _intrinsics(self, width: int, height: int) -> Intrinsics:
        """The driver's intrinsics for a published frame of width x height (scaled when the
        frame has another size); uncalibrated when the driver has none (logged once)."""
        try:
            intr = camera_intrinsics(self.camera)
        except DuetError as e:
            if not self._intrinsics_error:
                self.get_logger().warning(f"{self.cfg.camera}: no intrinsics, publishing uncalibrated: {e}")
            self._intrinsics_error = str(e)
            intr = None
        if intr is None:
            intr = Intrinsics.uncalibrated(width, height)
        self._intrinsics_source = intr.source
        return intr.scaled(width, height)

    def _on_error(self, e: BaseException) -> None:
        self._last_error = f"{type(e).__name__}: {e}"

    def _publish_diagnostics(self) -> None:
        now = self.clock.now()
        with self._lock:
            n, self._published_window = self._published_window, 0
        dt = max(now - self._window_start, 1e-9)
        self._window_start = now
        p50, pmax = self._encode.percentiles_and_reset(50, 100)
        reading = self._reading
        values = {
            "published_fps": n / dt,
            "published_total": self._published,
            "frames_missed_by_publisher": self._skipped_index_gaps,
            "publish_ms_p50": p50,
            "publish_ms_max": pmax,
            "stale_ticks": self._stale_ticks,
            "mock": self.cfg.use_mock_hardware,
            "last_error": self._last_error,
            "intrinsics": self._intrinsics_source,
        }
        if self._intrinsics_error:
            values["intrinsics_error"] = self._intrinsics_error
        values.update(self._loop.window.summary_and_reset())
        if reading is not None:
            values.update(connected=reading.connected, stale=reading.stale, frame_age_s=reading.age)
        try:
            values.update({f"health.{k}": v for k, v in dict(self.camera.health()).items()})
        except Exception as e:
            values["health_error"] = str(e)
        if reading is None:
            level, msg = convert.WARN, "no reading yet"
        elif not reading.connected:
            level, msg = (
                convert.ERROR,
                "camera disconnected (check the cable; the worker keeps trying to reopen it)",
            )
        elif reading.stale or reading.frame is None:
            level, msg = (
                convert.WARN,
                f"stale: newest frame {reading.age:.2f} s old (max {self.slot.max_age_s:g} s)",
            )
        else:
            level, msg = convert.OK, "ok"
        status = convert.diagnostic_status(
            f"duet/camera/{self.cfg.camera}",
            self.slot.serial or self.slot.device or self.cfg.camera,
            level,
            msg,
            values,
        )
        self.pub_diag.publish(convert.diagnostic_array([status], now, self.mapper))

    def close(self) -> None:
        self._loop.stop()
        self.camera.disconnect()


def main() -> int:
    return run_node(CameraNode, "duet_camera_node")


if __name__ == "__main__":
    raise SystemExit(main())
