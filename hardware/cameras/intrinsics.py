"""Camera intrinsics: what a pixel of a published frame means (ROS-free).

One dataclass, Intrinsics, for every source of them:
- RealSense: the SDK's factory calibration of the started color stream
  (rs.video_stream_profile.get_intrinsics(); from_realsense);
- the MuJoCo sim: the scene camera's vertical field of view and the render size
  (hardware/sim/cameras.py, sim_intrinsics);
- UVC cameras: a camera calibration YAML in the format of ROS camera_calibration_parsers
  (what `ros2 run camera_calibration cameracalibrator` saves; load_calibration_yaml), named
  by the rig camera field `calibration`.

Conventions are those of OpenCV and sensor_msgs/CameraInfo: the optical frame has x right,
y down and z forward; pixel (0, 0) is the CENTRE of the top-left pixel, so the centre of a
W x H image is ((W - 1) / 2, (H - 1) / 2). A camera with no calibration is "uncalibrated":
size only, every matrix zero, as sensor_msgs/CameraInfo asks ("If the camera is
uncalibrated, the matrices D, K, R, P should be left zeroed out"; clients test K[0] == 0).
duet_ros/convert.py turns an Intrinsics into the message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from duet.errors import ConfigError

IDENTITY3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# distortion models of sensor_msgs/distortion_models.hpp and their coefficient counts
DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


@dataclass(frozen=True)
class Intrinsics:
    """A pinhole camera model for frames of width x height pixels (see the module doc).

    fx, fy, cx, cy in pixels; `distortion` are the coefficients of `distortion_model`
    (plumb_bob: k1, k2, p1, p2, k3); `rectification` is R (row major, 3x3) and
    `projection` P (row major, 3x4; None = [K | 0], a monocular camera). `source` says
    where the numbers came from (realsense, sim, calibration file, uncalibrated)."""

    width: int
    height: int
    fx: float = 0.0
    fy: float = 0.0
    cx: float = 0.0
    cy: float = 0.0
    distortion_model: str = "plumb_bob"
    distortion: tuple[float, ...] = ()
    rectification: tuple[float, ...] = IDENTITY3
    projection: tuple[float, ...] | None = None
    source: str = ""

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(
                f"intrinsics ({self.source or 'camera'}): size {self.width}x{self.height} must be > 0"
            )
        if len(self.rectification) != 9:
            raise ConfigError(f"intrinsics ({self.source or 'camera'}): rectification needs 9 values")
        if self.projection is not None and len(self.projection) != 12:
            raise ConfigError(f"intrinsics ({self.source or 'camera'}): projection needs 12 values")

    @classmethod
    def uncalibrated(cls, width: int, height: int, source: str = "uncalibrated") -> Intrinsics:
        """Size only, every matrix zero (sensor_msgs/CameraInfo's uncalibrated camera)."""
        return cls(
            int(width),
            int(height),
            distortion_model="",
            rectification=(0.0,) * 9,
            projection=(0.0,) * 12,
            source=source,
        )

    @property
    def calibrated(self) -> bool:
        return self.fx > 0.0 and self.fy > 0.0

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the camera matrix's usual name
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0 if self.calibrated else 0.0]]
        )

    @property
    def P(self) -> np.ndarray:  # noqa: N802 - the projection matrix's usual name
        if self.projection is not None:
            return np.array(self.projection, dtype=np.float64).reshape(3, 4)
        return np.hstack([self.K, np.zeros((3, 1))])

    @property
    def R(self) -> np.ndarray:  # noqa: N802 - the rectification matrix's usual name
        return np.array(self.rectification, dtype=np.float64).reshape(3, 3)

    def D(self) -> list[float]:  # noqa: N802 - the distortion vector's usual name
        """The distortion coefficients, zero-padded to the model's count (empty when uncalibrated)."""
        if not self.calibrated:
            return list(self.distortion)
        n = max(DISTORTION_MODELS.get(self.distortion_model, 0), len(self.distortion))
        return [float(x) for x in self.distortion] + [0.0] * (n - len(self.distortion))

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera for frames resized to width x height: focal lengths scale with
        the size, and the principal point keeps its place in the picture (pixel centres:
        c' = (c + 0.5) * s - 0.5). Distortion and rectification do not change."""
        width, height = int(width), int(height)
        if (width, height) == (self.width, self.height):
            return self
        if not self.calibrated:
            return replace(self, width=width, height=height)
        sx, sy = width / self.width, height / self.height
        p = self.P.copy()
        p[0, :] *= sx
        p[1, :] *= sy
        p[0, 2] += 0.5 * sx - 0.5
        p[1, 2] += 0.5 * sy - 0.5
        return replace(
            self,
            width=width,
            height=height,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            projection=None if self.projection is None else tuple(float(x) for x in p.ravel()),
        )

    def project(self, points: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) of points (N, 3) in the optical frame (x right, y down, z forward),
        by the pinhole K alone (no distortion)."""
        if not self.calibrated:
            raise ValueError(f"intrinsics ({self.source}): an uncalibrated camera projects nothing")
        pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
        z = pts[:, 2]
        return np.stack([self.fx * pts[:, 0] / z + self.cx, self.fy * pts[:, 1] / z + self.cy], axis=1)


def fovy_intrinsics(fovy_deg: float, width: int, height: int, source: str = "sim") -> Intrinsics:
    """A camera of vertical field of view fovy with square pixels and the principal point
    at the image centre (a MuJoCo camera): fy = h / (2 tan(fovy / 2)), fx = fy."""
    if not 0.0 < fovy_deg < 180.0:
        raise ConfigError(f"camera ({source}): field of view {fovy_deg:g} deg must be within (0, 180)")
    f = height / (2.0 * math.tan(math.radians(fovy_deg) / 2.0))
    return Intrinsics(
        int(width),
        int(height),
        fx=f,
        fy=f,
        cx=(width - 1) / 2.0,
        cy=(height - 1) / 2.0,
        distortion_model="plumb_bob",
        distortion=(0.0,) * 5,
        source=source,
    )


def from_realsense(intr: Any, source: str = "realsense") -> Intrinsics:
    """An Intrinsics from an rs.intrinsics (width, height, fx, fy, ppx, ppy, model, coeffs).
    Distortion as realsense-ros reports it: Kannala-Brandt -> equidistant (4 coefficients),
    every other model (none, Brown-Conrady and its inverse / modified forms) -> plumb_bob
    (5 coefficients: k1, k2, p1, p2, k3)."""
    model = str(intr.model).rsplit(".", 1)[-1]
    coeffs = [float(c) for c in intr.coeffs]
    if model == "kannala_brandt4":
        dist_model, dist = "equidistant", coeffs[:4]
    else:
        dist_model, dist = "plumb_bob", (coeffs + [0.0] * 5)[:5]
    return Intrinsics(
        int(intr.width),
        int(intr.height),
        fx=float(intr.fx),
        fy=float(intr.fy),
        cx=float(intr.ppx),
        cy=float(intr.ppy),
        distortion_model=dist_model,
        distortion=tuple(dist),
        source=f"{source} ({model})",
    )


# --------------------------------------------------------------------------- calibration YAML


def _matrix(doc: dict, key: str, rows: int, cols: int | None, path: str) -> list[float]:
    m = doc.get(key)
    if not isinstance(m, dict) or "data" not in m:
        raise ConfigError(f"camera calibration {path}: {key} missing; expected {key}: {{rows, cols, data}}")
    data = m["data"]
    if not isinstance(data, list) or not all(isinstance(x, (int, float)) for x in data):
        raise ConfigError(f"camera calibration {path}: {key}.data must be a list of numbers")
    r, c = m.get("rows", rows), m.get("cols", len(data) // rows if cols is None else cols)
    if r != rows or (cols is not None and c != cols) or not isinstance(c, int) or len(data) != r * c:
        want = f"{rows}x{cols}" if cols is not None else f"{rows}xN"
        raise ConfigError(
            f"camera calibration {path}: {key} is {r}x{c} with {len(data)} values, expected {want}"
        )
    return [float(x) for x in data]


def parse_calibration(doc: Any, path: str = "<yaml>") -> tuple[str, Intrinsics]:
    """(camera_name, Intrinsics) from a loaded camera_calibration_parsers YAML document."""
    if not isinstance(doc, dict):
        raise ConfigError(
            f"camera calibration {path}: not a camera_calibration_parsers YAML (expected a mapping)"
        )
    for key in ("image_width", "image_height"):
        if not isinstance(doc.get(key), int) or doc[key] <= 0:
            raise ConfigError(f"camera calibration {path}: {key} missing or not a positive integer")
    k = _matrix(doc, "camera_matrix", 3, 3, path)
    model = str(doc.get("distortion_model", "plumb_bob"))
    if model not in DISTORTION_MODELS:
        raise ConfigError(
            f"camera calibration {path}: distortion_model {model!r}: use one of {', '.join(DISTORTION_MODELS)}"
        )
    dist = _matrix(doc, "distortion_coefficients", 1, None, path) if "distortion_coefficients" in doc else []
    rect = (
        _matrix(doc, "rectification_matrix", 3, 3, path) if "rectification_matrix" in doc else list(IDENTITY3)
    )
    proj = _matrix(doc, "projection_matrix", 3, 4, path) if "projection_matrix" in doc else None
    if k[0] <= 0 or k[4] <= 0:
        raise ConfigError(
            f"camera calibration {path}: camera_matrix has no focal length (fx, fy must be > 0)"
        )
    intr = Intrinsics(
        doc["image_width"],
        doc["image_height"],
        fx=k[0],
        fy=k[4],
        cx=k[2],
        cy=k[5],
        distortion_model=model,
        distortion=tuple(dist),
        rectification=tuple(rect),
        projection=None if proj is None else tuple(proj),
        source=f"calibration {path}",
    )
    return str(doc.get("camera_name", "")), intr


def load_calibration_yaml(path: str | Path) -> tuple[str, Intrinsics]:
    """(camera_name, Intrinsics) from a camera_calibration_parsers YAML file."""
    import yaml

    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(
            f"camera calibration {p}: cannot read it ({e.strerror}); fix cameras[].calibration in the rig "
            "(relative paths are taken inside the rig's calibration_dir)"
        ) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"camera calibration {p}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_calibration(doc, str(p))


def calibration_yaml(intr: Intrinsics, camera_name: str) -> str:
    """The camera_calibration_parsers YAML text of a calibrated Intrinsics."""
    import yaml

    def m(rows: int, cols: int, data: Sequence[float] | np.ndarray) -> dict:
        return {"rows": rows, "cols": cols, "data": [float(x) for x in data]}

    doc = {
        "image_width": intr.width,
        "image_height": intr.height,
        "camera_name": camera_name,
        "camera_matrix": m(3, 3, intr.K.ravel()),
        "distortion_model": intr.distortion_model,
        "distortion_coefficients": m(1, len(intr.D()), intr.D()),
        "rectification_matrix": m(3, 3, intr.rectification),
        "projection_matrix": m(3, 4, intr.P.ravel()),
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)


def calibration_for(intr: Intrinsics, width: int, height: int, camera: str) -> Intrinsics:
    """A calibration file's intrinsics for a stream of width x height: the same size as is,
    a size of the same aspect ratio scaled; another aspect ratio is an error (the camera
    crops differently in that mode: calibrate it at that size)."""
    if (intr.width, intr.height) == (width, height):
        return intr
    if abs(intr.width * height - intr.height * width) > 0.01 * intr.width * height:
        raise ConfigError(
            f"camera {camera!r}: {intr.source} is for {intr.width}x{intr.height}, the stream is {width}x{height} "
            "(another aspect ratio); calibrate the camera at the rig's width and height"
        )
    return intr.scaled(width, height)


def camera_intrinsics(camera: Any) -> Intrinsics | None:
    """A camera's intrinsics (its intrinsics() method; None while not known, e.g. a
    RealSense before its stream started), or an uncalibrated model of its size for a
    camera that has no such method."""
    fn = getattr(camera, "intrinsics", None)
    if fn is None:
        f = camera.features
        return Intrinsics.uncalibrated(f.width, f.height)
    return fn()
