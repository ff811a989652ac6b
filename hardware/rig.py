"""The rig: which arms and cameras make up a station, and which backend drives them.

A rig YAML describes the real hardware (ports by /dev/serial/by-id, cameras by serial).
One switch, use_mock_hardware, swaps the backend for every device at once (to the
wire-level mock or to the MuJoCo sim, per `mock_backend`); nothing downstream changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from duet.config import field, load_yaml
from duet.errors import ConfigError
from duet.resources import shipped_dir

RIGS = "hardware/configs/rigs"  # shipped rigs (duet.resources: the checkout or the wheel)

# The ALOHA layout (world frame: table centre, x to the right arm, y away from the operator,
# z up), the default base poses and camera mounts. Followers and cameras as in gym-aloha's
# MuJoCo world (vx300s_left/right.xml, scene.xml: top = cam_high, angle = cam_low, the wrist
# cameras); leaders sit nominally 0.6 m nearer the operator, facing the same way (measure yours).
ALOHA_ARM_BASES: dict[tuple[str, str], tuple[tuple[float, ...], tuple[float, ...]]] = {
    ("left", "follower"): ((-0.469, 0.5, 0.0), (0.0, 0.0, 0.0)),
    ("right", "follower"): ((0.469, 0.5, 0.0), (0.0, 0.0, 3.1416)),
    ("left", "leader"): ((-0.469, -0.1, 0.0), (0.0, 0.0, 0.0)),
    ("right", "leader"): ((0.469, -0.1, 0.0), (0.0, 0.0, 3.1416)),
}
ALOHA_CAMERA_MOUNTS: dict[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    "cam_high": ("world", (0.0, 0.6, 0.8), (0.0, 1.5708, 1.5708)),
    "cam_low": ("world", (0.0, 0.0, 0.6), (0.0, 0.7854, 1.5708)),
    "cam_left_wrist": ("left_follower", (-0.1, 0.0, 0.16), (0.0, 0.5404, 0.0)),
    "cam_right_wrist": ("right_follower", (-0.1, 0.0, 0.16), (0.0, 0.5404, 0.0)),
}


def _check_vectors(where: str, **vectors: list[float]) -> None:
    for key, vec in vectors.items():
        if vec and (len(vec) != 3 or not all(math.isfinite(v) for v in vec)):
            raise ConfigError(f"{where}: {key} needs 3 numbers (x y z or roll pitch yaw), got {vec}")


@dataclass
class ArmSlot:
    name: str = field(help="unique arm name, e.g. left_follower")
    role: Literal["leader", "follower"] = field(help="leader (puppet, torque off) or follower")
    model: str = field(help="arm model: a shipped name (vx300s, wx250s) or a path to an arm YAML")
    port: str = field("", help="serial port, preferably /dev/serial/by-id/...; unused by mock/sim")
    baudrate: int = field(1_000_000, help="bus baud rate; must match the servos' Baud Rate register")
    calibration: str = field("", help="calibration file; default: <calibration_dir>/<port id>.json")
    fault_scenario: str = field("", help="mock backend only: named fault scenario to inject")
    mock_motion: str = field("wave", help="mock leaders only: scripted operator motion (wave, still)")
    on_disconnect: Literal["torque_off", "hold"] = field(
        "torque_off", help="followers: after holding the pose on disconnect, torque off or keep holding"
    )
    # Where the arm's base frame (the TF frame named after the arm, its JointState frame_id)
    # sits in the rig's world frame (the table centre under the arms, z up: the MuJoCo world).
    base_xyz: list[float] = field(
        factory=list,
        help="arm base position in the world frame, m; [] = the ALOHA layout for its side and role",
    )
    base_rpy: list[float] = field(
        factory=list,
        help="arm base rotation, rad (roll pitch yaw); [] = the ALOHA layout for its side and role",
    )

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ConfigError(f"arm name {self.name!r}: use letters, digits and _ only (e.g. left_follower)")
        _check_vectors(f"arm {self.name!r}", base_xyz=self.base_xyz, base_rpy=self.base_rpy)

    def base_pose(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(xyz, rpy) of the arm base in the world frame: the given pose or the ALOHA layout."""
        side = next((s for s in ("left", "right") if self.name.startswith(s)), "")
        xyz, rpy = ALOHA_ARM_BASES.get((side, self.role), ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
        return (tuple(self.base_xyz) or xyz, tuple(self.base_rpy) or rpy)


@dataclass
class CameraSlot:
    name: str = field(help="unique camera name, e.g. cam_high, cam_left_wrist")
    kind: Literal["realsense", "opencv"] = field("realsense", help="driver for the real device")
    serial: str = field("", help="RealSense serial number (realsense)")
    device: str = field("", help="OpenCV device: /dev/v4l/by-id/... path or an index (opencv)")
    width: int = field(640, help="image width, px")
    height: int = field(480, help="image height, px")
    fps: int = field(30, help="capture rate, frames per second")
    depth: bool = field(False, help="also capture depth aligned to color (realsense)")
    max_age_s: float = field(0.1, help="a frame older than this is reported stale")
    fault_scenario: str = field(
        "",
        help="mock backend only: comma-separated faults, e.g. stall_at_2s:1.5, disconnect_at_2s:1, drop_5pct",
    )
    jpeg: bool = field(
        False, help="opencv: request MJPG from the UVC device and keep the JPEG bytes in Frame.jpeg"
    )
    calibration: str = field(
        "",
        help="intrinsics file, camera_calibration_parsers YAML (ROS camera_calibration's output); relative "
        "paths are inside the rig's calibration_dir. opencv: without one the camera is uncalibrated "
        "(CameraInfo zeros); realsense: overrides the SDK's factory intrinsics",
    )
    # Where the camera is mounted: its body frame (REP 103: x along the optical axis, z up;
    # the URDF adds <name>_optical_frame, z forward, x right, y down) on the world or on an arm.
    mount: str = field(
        "", help="'world', or an arm name (the camera rides its gripper link); '' = the ALOHA layout"
    )
    mount_xyz: list[float] = field(
        factory=list, help="camera position on its mount, m; [] = the ALOHA layout for its name"
    )
    mount_rpy: list[float] = field(
        factory=list, help="camera body rotation on its mount, rad (roll pitch yaw); [] = the ALOHA layout"
    )

    def __post_init__(self):
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise ConfigError(f"camera {self.name!r}: width, height and fps must be > 0")
        _check_vectors(f"camera {self.name!r}", mount_xyz=self.mount_xyz, mount_rpy=self.mount_rpy)

    def mount_pose(self) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
        """(mount, xyz, rpy): the given mount and pose or the ALOHA layout for this camera name
        (unknown names: on the world at its origin)."""
        mount, xyz, rpy = ALOHA_CAMERA_MOUNTS.get(self.name, ("world", (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
        return (self.mount or mount, tuple(self.mount_xyz) or xyz, tuple(self.mount_rpy) or rpy)


@dataclass
class RigConfig:
    name: str = field("aloha", help="rig name, recorded with every episode")
    control_rate_hz: float = field(
        50.0,
        help="control loop rate, Hz: the one source of every loop's rate (rate_hz 0 = this; resolve_rate)",
    )
    mock_backend: Literal["mock", "sim"] = field("mock", help="what use_mock_hardware selects")
    sim_task: str = field("transfer_cube", help="sim backend only: task scene (transfer_cube, insertion)")
    calibration_dir: str = field("~/.config/duet/calibration", help="where calibration files live")
    arms: list[ArmSlot] = field(factory=list, help="leader and follower arms")
    cameras: list[CameraSlot] = field(factory=list, help="cameras")
    pairs: list[tuple[str, str]] = field(
        factory=list, help="teleop pairs [leader, follower], e.g. [[left_leader, left_follower]]"
    )

    def __post_init__(self):
        names = [a.name for a in self.arms] + [c.name for c in self.cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"rig {self.name!r}: device name {dup[0]!r} is used twice")
        if self.control_rate_hz <= 0:
            raise ConfigError(f"rig {self.name!r}: control_rate_hz must be > 0")
        for c in self.cameras:  # camera calibration files: relative to calibration_dir, as for arms
            if c.calibration and not Path(c.calibration).expanduser().is_absolute():
                c.calibration = str(Path(self.calibration_dir).expanduser() / c.calibration)
        arms = {a.name: a for a in self.arms}
        for leader, follower in self.pairs:
            for n, role in ((leader, "leader"), (follower, "follower")):
                if n not in arms:
                    raise ConfigError(f"rig {self.name!r}: pair names unknown arm {n!r}")
                if arms[n].role != role:
                    raise ConfigError(
                        f"rig {self.name!r}: {n!r} is paired as {role} but has role {arms[n].role}"
                    )

    def resolve_rate(self, rate_hz: float) -> float:
        """A loop's rate from its ``rate_hz`` field: 0 (every such field's default: teleop, the
        policy server, the recorder, the arm node, eval) = this rig's control_rate_hz; > 0 overrides it."""
        if rate_hz < 0:
            raise ConfigError(
                f"rate_hz {rate_hz:g} < 0: give a rate in Hz, or 0 for rig {self.name!r}'s "
                f"control_rate_hz ({self.control_rate_hz:g})"
            )
        return float(rate_hz) if rate_hz > 0 else float(self.control_rate_hz)

    def arm(self, name: str) -> ArmSlot:
        for a in self.arms:
            if a.name == name:
                return a
        raise ConfigError(
            f"rig {self.name!r}: no arm named {name!r} (have {', '.join(a.name for a in self.arms)})"
        )

    def camera(self, name: str) -> CameraSlot:
        for c in self.cameras:
            if c.name == name:
                return c
        raise ConfigError(f"rig {self.name!r}: no camera named {name!r}")


def rig_path(name_or_path: str) -> Path:
    """A shipped rig name (hardware/configs/rigs/<name>.yaml) or a path."""
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml"):
        return p
    rigs = shipped_dir(RIGS)
    shipped = rigs / f"{name_or_path}.yaml"
    if not shipped.is_file():
        have = ", ".join(sorted(q.stem for q in rigs.glob("*.yaml")))
        raise ConfigError(f"rig {name_or_path!r}: not a shipped rig ({have}) nor a .yaml path")
    return shipped


def load_rig(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> RigConfig:
    return load_yaml(RigConfig, rig_path(name_or_path), overrides)
