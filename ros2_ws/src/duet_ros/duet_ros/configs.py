"""Node parameter schemas (ROS-free): one dataclass per node kind.

Each node declares its ROS parameters from its dataclass (duet_ros.params.declare_config:
flatten -> one parameter per leaf, help string as the description) and rebuilds the
validated config from them (unflatten -> from_dict). launch/params/*.yaml set them under
``ros__parameters``; the graph (launch/graph.yaml) adds ``rig``, ``use_mock_hardware`` and
the device name per node.
"""

from __future__ import annotations

from dataclasses import dataclass

from duet.config import field
from duet.errors import ConfigError
from duet.ratewatch import RateWatchConfig
from duet.teleop.config import TeleopConfig


@dataclass
class ArmNodeConfig:
    rig: str = field("aloha", help="rig: a shipped rig name or a rig YAML path")
    use_mock_hardware: bool = field(False, help="drive the mock backend instead of the real bus")
    arm: str = field("", help="which arm of the rig this node drives, e.g. left_follower")
    rate_hz: float = field(0.0, help="read/publish rate, Hz; 0 = the rig's control_rate_hz")
    command_max_age_s: float = field(
        0.1, help="followers: a command older than this (by its header stamp) is never applied; the arm holds"
    )
    command_future_tolerance_s: float = field(
        0.05,
        help="followers: a command stamped more than this ahead of the host's clock is rejected (clock skew allowance), s",
    )
    diagnostics_rate_hz: float = field(1.0, help="diagnostics publish rate, Hz")
    max_consecutive_errors: int = field(
        25,
        help="after this many failed bus ticks in a row the arm goes to its safe state (fault); a servo's "
        "hardware error (overload, overheating, ...) at once",
    )
    rate_watch: RateWatchConfig = field(
        factory=RateWatchConfig,
        help="when the arm loop's achieved rate is reported (WARN / ERROR) as too low",
    )
    fault_scenario: str = field("", help="mock only: fault scenario overriding the rig's (e.g. lossy_1pct)")
    mock_motion: str = field("", help="mock leaders only: scripted motion overriding the rig's (wave, still)")
    autostart: bool = field(
        True, help="configure and activate at start; false waits for lifecycle transitions"
    )
    phase_s: float = field(
        -1.0,
        help="tick phase on the host's monotonic grid (t = k * period + phase), s; -1 = by role: leaders 0 (read first), followers 0.006 (after teleop)",
    )
    realtime_priority: int = field(
        0, help="SCHED_FIFO priority of the loop thread (1..98; 0 = normal scheduling)"
    )

    def __post_init__(self):
        if not self.arm:
            raise ConfigError(
                "arm node: parameter 'arm' is required (the arm name in the rig, e.g. left_follower)"
            )
        if self.rate_hz < 0 or self.diagnostics_rate_hz <= 0 or self.command_max_age_s <= 0:
            raise ConfigError(
                f"arm node {self.arm}: rate_hz >= 0, diagnostics_rate_hz > 0 and command_max_age_s > 0 required"
            )
        if self.command_future_tolerance_s < 0:
            raise ConfigError(
                f"arm node {self.arm}: command_future_tolerance_s must be >= 0 (seconds a stamp may lead this host's clock)"
            )
        if self.max_consecutive_errors < 1:
            raise ConfigError(f"arm node {self.arm}: max_consecutive_errors must be >= 1")
        if not 0 <= self.realtime_priority <= 98:
            raise ConfigError(f"arm node {self.arm}: realtime_priority must be within 0..98")


@dataclass
class CameraNodeConfig:
    rig: str = field("aloha", help="rig: a shipped rig name or a rig YAML path")
    use_mock_hardware: bool = field(False, help="drive the mock camera instead of the device")
    camera: str = field("", help="which camera of the rig this node drives, e.g. cam_high")
    fps: float = field(0.0, help="capture and publish rate, frames/s; 0 = the rig camera's fps")
    jpeg_quality: int = field(90, help="JPEG quality of the CompressedImage (1..100)")
    publish_compressed: bool = field(
        True, help="publish ~/image/compressed (sensor_msgs/CompressedImage, JPEG)"
    )
    publish_raw: bool = field(False, help="also publish ~/image (sensor_msgs/Image rgb8; large)")
    diagnostics_rate_hz: float = field(1.0, help="diagnostics publish rate, Hz")
    fault_scenario: str = field("", help="mock only: fault scenario overriding the rig's (stall, disconnect)")

    def __post_init__(self):
        if not self.camera:
            raise ConfigError(
                "camera node: parameter 'camera' is required (the camera name in the rig, e.g. cam_high)"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"camera node {self.camera}: jpeg_quality must be within 1..100")
        if self.fps < 0 or self.diagnostics_rate_hz <= 0:
            raise ConfigError(f"camera node {self.camera}: fps >= 0 and diagnostics_rate_hz > 0 required")


@dataclass
class TeleopNodeConfig:
    rig: str = field("aloha", help="rig: a shipped rig name or a rig YAML path")
    use_mock_hardware: bool = field(
        False, help="unused by teleop itself (arms run in their own nodes); kept for uniformity"
    )
    teleop: TeleopConfig = field(factory=TeleopConfig, help="the teleop core: mapping, ramp, gesture, rate")
    inputs: list[str] = field(
        factory=list,
        help="extra start/stop inputs, e.g. ['evdev:/dev/input/by-id/<pedal>-event-kbd:30=toggle']",
    )
    diagnostics_rate_hz: float = field(1.0, help="diagnostics publish rate, Hz")
    phase_s: float = field(
        0.003,
        help="tick phase on the host's monotonic grid (t = k * period + phase), s; after the arms read (0), before the followers write (0.006)",
    )
    realtime_priority: int = field(
        0, help="SCHED_FIFO priority of the loop thread (1..98; 0 = normal scheduling)"
    )

    def __post_init__(self):
        if self.diagnostics_rate_hz <= 0:
            raise ConfigError("teleop node: diagnostics_rate_hz must be > 0")
        if not 0 <= self.realtime_priority <= 98:
            raise ConfigError("teleop node: realtime_priority must be within 0..98")
