"""ALL conversion between duet's core types and ROS messages lives here.

Time mapping
------------
Every duet sample is stamped on the process monotonic clock (time.monotonic(), i.e.
CLOCK_MONOTONIC, shared by all processes of one host). ROS header stamps are wall-clock
(system) time, as every ROS tool expects. TimeMapper converts with

    ros_time = monotonic + offset,   offset = CLOCK_REALTIME - CLOCK_MONOTONIC

where the offset is measured by a bracketed read (the realtime read between two
monotonic reads, taken from the tightest of a few tries) and re-measured at most once a
second, so every process on a host applies the same offset to within a few microseconds,
and an NTP step of the wall clock is picked up within a second. Receivers convert header
stamps back with their own mapper, so ages (now - stamp) are computed on the monotonic
clock: a capture time survives the trip to within microseconds on one host. Across hosts
the mapping relies on the hosts' wall clocks being synchronised (NTP / PTP).

Commands to followers are sensor_msgs/JointState on /<follower>/command: the header stamp
is the capture time of the leader sample the command was computed from (hold commands:
the time they were issued), `name` must list the follower's joints in its order, and
`position` holds the targets (rad; gripper normalized 0..1, open = 1). JointState was
chosen over Float64MultiArray because it carries a stamp (the watchdog's input) and the
joint names (a mismatched command is rejected, not applied to the wrong joints).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import TransformStamped
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from sensor_msgs.msg import JointState as JointStateMsg
from std_msgs.msg import String

from duet.hardware.cameras.intrinsics import Intrinsics
from duet.hardware.interfaces import Frame, JointState
from duet.hardware.urdf import Transform

try:  # tf2_msgs comes with a system ROS 2; the ros-jazzy-* wheels have none (state_publisher_node)
    from tf2_msgs.msg import TFMessage
except ImportError:  # pragma: no cover - depends on the installation
    TFMessage = None

# --------------------------------------------------------------------------- time


class TimeMapper:
    """Monotonic seconds <-> ROS wall-clock stamps (see the module docstring)."""

    def __init__(self, refresh_s: float = 1.0):
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._offset_ns = 0
        self._measured_at = -1e18
        self._measure()

    def _measure(self) -> None:
        best = None
        for _ in range(5):
            a = time.monotonic_ns()
            r = time.time_ns()
            b = time.monotonic_ns()
            if best is None or b - a < best[0]:
                best = (b - a, r - (a + b) // 2)
        assert best is not None
        self._offset_ns = best[1]
        self._measured_at = time.monotonic()

    @property
    def offset_ns(self) -> int:
        with self._lock:
            if time.monotonic() - self._measured_at > self.refresh_s:
                self._measure()
            return self._offset_ns

    def to_ros_ns(self, mono_s: float) -> int:
        return int(round(mono_s * 1e9)) + self.offset_ns

    def to_msg(self, mono_s: float) -> Time:
        ns = self.to_ros_ns(mono_s)
        return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)

    def from_msg(self, stamp: Time) -> float:
        """A header stamp back on this process's monotonic clock (s)."""
        ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        return (ns - self.offset_ns) * 1e-9


# --------------------------------------------------------------------------- joints


def joint_state_to_msg(state: JointState, mapper: TimeMapper, frame_id: str = "") -> JointStateMsg:
    msg = JointStateMsg()
    msg.header.stamp = mapper.to_msg(state.stamp)
    msg.header.frame_id = frame_id
    msg.name = list(state.names)
    msg.position = np.asarray(state.position, dtype=np.float64).tolist()
    msg.velocity = np.asarray(state.velocity, dtype=np.float64).tolist()
    msg.effort = np.asarray(state.effort, dtype=np.float64).tolist()
    return msg


def msg_to_joint_state(msg: JointStateMsg, mapper: TimeMapper) -> JointState:
    n = len(msg.position)
    vel = np.asarray(msg.velocity, dtype=np.float64) if len(msg.velocity) == n else np.zeros(n)
    eff = np.asarray(msg.effort, dtype=np.float64) if len(msg.effort) == n else np.zeros(n)
    return JointState(
        stamp=mapper.from_msg(msg.header.stamp),
        names=tuple(msg.name),
        position=np.asarray(msg.position, dtype=np.float64),
        velocity=vel,
        effort=eff,
    )


def command_to_msg(
    names: tuple[str, ...] | list[str], position: np.ndarray, stamp: float, mapper: TimeMapper
) -> JointStateMsg:
    msg = JointStateMsg()
    msg.header.stamp = mapper.to_msg(stamp)
    msg.name = list(names)
    msg.position = np.asarray(position, dtype=np.float64).tolist()
    return msg


def msg_to_command(
    msg: JointStateMsg, mapper: TimeMapper, names: tuple[str, ...]
) -> tuple[np.ndarray, float]:
    """(position in `names` order, stamp on the monotonic clock). Raises ValueError when
    the joints do not match; the safety function rejects non-finite values later."""
    if tuple(msg.name) != tuple(names):
        if sorted(msg.name) != sorted(names) or len(msg.position) != len(msg.name):
            raise ValueError(f"command joints {list(msg.name)} do not match the arm's {list(names)}")
        index = {n: i for i, n in enumerate(msg.name)}
        pos = np.array([msg.position[index[n]] for n in names], dtype=np.float64)
    else:
        if len(msg.position) != len(names):
            raise ValueError(f"command has {len(msg.position)} positions for {len(names)} joints")
        pos = np.asarray(msg.position, dtype=np.float64)
    return pos, mapper.from_msg(msg.header.stamp)


# --------------------------------------------------------------------------- images

JPEG_FORMAT = "rgb8; jpeg compressed bgr8"  # image_transport's compressed format string


def encode_jpeg(color_rgb: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(color_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) uint8 RGB."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a JPEG image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def frame_to_compressed(
    frame: Frame, mapper: TimeMapper, frame_id: str, quality: int = 90
) -> CompressedImage:
    """A frame as JPEG; a frame the device delivered as JPEG is passed through unchanged."""
    msg = CompressedImage()
    msg.header.stamp = mapper.to_msg(frame.stamp)
    msg.header.frame_id = frame_id
    msg.format = JPEG_FORMAT
    msg.data = frame.jpeg if frame.jpeg is not None else encode_jpeg(frame.color, quality)
    return msg


def compressed_to_array(msg: CompressedImage) -> np.ndarray:
    return decode_jpeg(bytes(msg.data))


def is_jpeg(msg: CompressedImage) -> bool:
    """The message holds a JPEG (image_transport format names it and the data starts with SOI)."""
    fmt = msg.format.lower()
    return ("jpeg" in fmt or "jpg" in fmt or not fmt) and bytes(msg.data[:2]) == b"\xff\xd8"


def compressed_to_frame(msg: CompressedImage, mapper: TimeMapper, index: int, decode: bool = True) -> Frame:
    """A CompressedImage as a Frame stamped with its capture time (monotonic). JPEG bytes
    are kept in Frame.jpeg, so a store keeps them without re-encoding. decode=False skips
    decoding a JPEG (a consumer that needs only .jpeg): color is then an empty (0, 0, 3)
    array. Other formats (png) are always decoded. `index` is the receiver's frame count
    (the message carries no device frame counter)."""
    data = bytes(msg.data)
    jpeg = data if is_jpeg(msg) else None
    if jpeg is not None and not decode:
        color = np.empty((0, 0, 3), dtype=np.uint8)
    else:
        color = decode_jpeg(data)  # cv2.imdecode: any format it knows
    return Frame(stamp=mapper.from_msg(msg.header.stamp), index=int(index), color=color, jpeg=jpeg)


def frame_to_image(frame: Frame, mapper: TimeMapper, frame_id: str) -> Image:
    color = np.ascontiguousarray(frame.color, dtype=np.uint8)
    msg = Image()
    msg.header.stamp = mapper.to_msg(frame.stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(color.shape[0]), int(color.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = color.tobytes()
    return msg


def image_to_array(msg: Image) -> np.ndarray:
    if msg.encoding != "rgb8":
        raise ValueError(f"image encoding {msg.encoding!r}: only rgb8 is produced by duet")
    return np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(msg.height, msg.width, 3)


# --------------------------------------------------------------------------- camera info


def intrinsics_to_camera_info(
    intr: Intrinsics, stamp: float, mapper: TimeMapper, frame_id: str
) -> CameraInfo:
    """sensor_msgs/CameraInfo for an image of the same stamp and frame_id. An uncalibrated
    camera gets its size and zero matrices (the message's convention: K[0] == 0)."""
    msg = CameraInfo()
    msg.header.stamp = mapper.to_msg(stamp)
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.distortion_model = intr.distortion_model
    msg.d = intr.D()
    msg.k = [float(x) for x in intr.K.ravel()]
    msg.r = [float(x) for x in intr.rectification]
    msg.p = [float(x) for x in intr.P.ravel()]
    return msg


def camera_info_to_intrinsics(msg: CameraInfo) -> Intrinsics:
    """The Intrinsics a CameraInfo describes (uncalibrated when K[0] == 0)."""
    if msg.k[0] == 0.0:
        return Intrinsics.uncalibrated(msg.width, msg.height, source="camera_info")
    return Intrinsics(
        int(msg.width),
        int(msg.height),
        fx=float(msg.k[0]),
        fy=float(msg.k[4]),
        cx=float(msg.k[2]),
        cy=float(msg.k[5]),
        distortion_model=msg.distortion_model,
        distortion=tuple(float(x) for x in msg.d),
        rectification=tuple(float(x) for x in msg.r),
        projection=tuple(float(x) for x in msg.p),
        source="camera_info",
    )


# --------------------------------------------------------------------------- diagnostics

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR
STALE = DiagnosticStatus.STALE
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}


def _flat_items(values: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += _flat_items(v, key + ".")
        elif isinstance(v, float):
            out.append((key, f"{v:.6g}"))
        elif isinstance(v, (list, tuple)):
            out.append((key, ", ".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in v)))
        else:
            out.append((key, str(v)))
    return out


def diagnostic_status(
    name: str, hardware_id: str, level: bytes, message: str, values: dict[str, Any]
) -> DiagnosticStatus:
    st = DiagnosticStatus()
    st.name = name
    st.hardware_id = hardware_id
    st.level = level
    st.message = message
    st.values = [KeyValue(key=k, value=v) for k, v in _flat_items(values)]
    return st


def diagnostic_array(statuses: list[DiagnosticStatus], stamp: float, mapper: TimeMapper) -> DiagnosticArray:
    arr = DiagnosticArray()
    arr.header.stamp = mapper.to_msg(stamp)
    arr.status = statuses
    return arr


def diagnostic_values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


# --------------------------------------------------------------------------- teleop state


def string_msg(text: str) -> String:
    return String(data=text)


# --------------------------------------------------------------------------- TF


def transform_to_msg(t: Transform, stamp: Time) -> TransformStamped:
    """One TF edge (duet.hardware.urdf.Transform) as geometry_msgs/TransformStamped."""
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = t.parent
    msg.child_frame_id = t.child
    tr, q = msg.transform.translation, msg.transform.rotation
    tr.x, tr.y, tr.z = (float(v) for v in t.xyz)
    q.x, q.y, q.z, q.w = (float(v) for v in t.quat_xyzw)
    return msg


def tf_message(transforms: list[Transform], stamp: Time):
    """tf2_msgs/TFMessage of TF edges (only where tf2_msgs is installed: TFMessage is not None)."""
    if TFMessage is None:
        raise RuntimeError("tf2_msgs is not installed (it comes with a system ROS 2)")
    return TFMessage(transforms=[transform_to_msg(t, stamp) for t in transforms])
