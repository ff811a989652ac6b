"""Teleop configuration: the leader->follower mapping, the episode state machine and pacing.

The same dataclasses feed YAML files, CLI overrides and the ROS teleop node's parameters
(duet.config.flatten / unflatten).
"""

from __future__ import annotations

from dataclasses import dataclass

from duet.config import field
from duet.errors import ConfigError
from duet.ratewatch import RateWatchConfig


@dataclass
class PairMapConfig:
    """How one leader drives one follower. Mapping is in joint space: calibration (offsets,
    signs) is already applied inside the arm backends."""

    leader: str = field(help="leader arm name, e.g. left_leader")
    follower: str = field(help="follower arm name, e.g. left_follower")
    joint_scale: list[float] = field(
        factory=list, help="per arm joint (gripper excluded) scale; empty = 1 for every joint"
    )
    joint_offset: list[float] = field(
        factory=list, help="per arm joint (gripper excluded) offset, rad, added after scaling; empty = 0"
    )
    gripper_scale: float = field(
        1.0, help="follower gripper = gripper_offset + gripper_scale * leader gripper (both normalized 0..1)"
    )
    gripper_offset: float = field(0.0, help="see gripper_scale; normalized units")

    def __post_init__(self):
        if not self.leader or not self.follower:
            raise ConfigError(
                "teleop pair: leader and follower names are required, e.g. {leader: left_leader, follower: left_follower}"
            )
        if self.gripper_scale == 0:
            raise ConfigError(f"teleop pair {self.leader}->{self.follower}: gripper_scale must be non-zero")


@dataclass
class GestureConfig:
    """The ALOHA start gesture: close both leader grippers and hold them closed."""

    enabled: bool = field(True, help="start (or resume) when every leader gripper is held closed")
    close_below: float = field(0.15, help="a leader gripper below this (normalized, open=1) counts as closed")
    open_above: float = field(
        0.4, help="after a trigger, every gripper must open above this to re-arm (hysteresis)"
    )
    hold_s: float = field(0.6, help="how long the grippers must stay closed, s")

    def __post_init__(self):
        if not 0.0 <= self.close_below < self.open_above <= 1.0:
            raise ConfigError(
                f"teleop gesture: need 0 <= close_below ({self.close_below}) < open_above ({self.open_above}) <= 1"
            )
        if self.hold_s < 0:
            raise ConfigError(f"teleop gesture: hold_s must be >= 0, got {self.hold_s}")


@dataclass
class TeleopConfig:
    # 0 = the rig's control_rate_hz (RigConfig.resolve_rate), like every rate_hz field.
    rate_hz: float = field(0.0, help="control loop rate, Hz; 0 = the rig's control_rate_hz")
    pairs: list[PairMapConfig] = field(
        factory=list, help="leader->follower pairs; empty = the rig's pairs with identity mapping"
    )
    ramp_speed: float = field(0.5, help="arm joint speed while ramping to the leader pose, rad/s")
    ramp_gripper_speed: float = field(0.5, help="gripper speed while ramping, normalized units/s")
    ramp_tolerance: float = field(
        0.02,
        help="ramp ends when the commanded pose is this close to the mapped leader pose (rad / normalized)",
    )
    settle_tolerance: float = field(
        0.15,
        help="...and the measured follower pose is this close too (rad / normalized); <= 0 skips the check",
    )
    ramp_timeout_s: float = field(20.0, help="give up ramping (hold, back to idle) after this long, s")
    leader_max_age_s: float = field(
        0.1, help="a leader sample older than this is stale: the followers hold until a fresh one, s"
    )
    leader_lost_s: float = field(
        0.5, help="leaders stale for longer than this pause teleop (resume goes through the ramp), s"
    )
    # Followers were judged by leader_max_age_s before this field existed: the default is that
    # field's default, so a default configuration behaves as before.
    follower_max_age_s: float = field(
        0.1,
        help="a follower sample older than this is stale: it is not checked for tracking error and a start "
        "ramps from the last command instead of the measured pose, s",
    )
    track_error_limit: float = field(
        0.35,
        help="pause when a follower stays farther than this from its command (rad / normalized); 0 = off",
    )
    track_error_time_s: float = field(0.5, help="...for this long, s")
    arm_fault_after_errors: int = field(
        2,
        help="an arm whose reads fail this many ticks in a row is faulted: teleop pauses, start is refused "
        "until it reads again (a latched servo hardware error faults it at once)",
    )
    rate_watch: RateWatchConfig = field(
        factory=RateWatchConfig, help="when the loop's achieved rate is reported (WARN / ERROR) as too low"
    )
    start_on_launch: bool = field(False, help="start (ramp then mirror) as soon as every arm reports")
    gesture: GestureConfig = field(factory=GestureConfig, help="the close-both-grippers start gesture")

    def __post_init__(self):
        if self.rate_hz < 0:
            raise ConfigError(
                f"teleop: rate_hz must be >= 0 (0 = the rig's control_rate_hz), got {self.rate_hz}"
            )
        for name in (
            "ramp_speed",
            "ramp_gripper_speed",
            "ramp_tolerance",
            "ramp_timeout_s",
            "leader_max_age_s",
            "leader_lost_s",
            "follower_max_age_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"teleop: {name} must be > 0, got {getattr(self, name)}")
        if self.arm_fault_after_errors < 1:
            raise ConfigError(
                f"teleop: arm_fault_after_errors must be >= 1, got {self.arm_fault_after_errors}"
            )
        followers = [p.follower for p in self.pairs]
        leaders = [p.leader for p in self.pairs]
        for names in (followers, leaders):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ConfigError(
                    f"teleop: arm {dup[0]!r} appears in two pairs; each arm belongs to one pair"
                )

    @property
    def dt(self) -> float:
        """The tick period, s. rate_hz 0 must be resolved against the rig first."""
        if not self.rate_hz > 0:
            raise ConfigError(
                "teleop: rate_hz is 0 (the rig's control rate) and was not resolved: build the core "
                "from dataclasses.replace(cfg, rate_hz=rig.resolve_rate(cfg.rate_hz))"
            )
        return 1.0 / self.rate_hz

    def resolved_pairs(self, rig_pairs: list[tuple[str, str]] | list[list[str]]) -> list[PairMapConfig]:
        """The configured pairs, or the rig's pairs with identity mapping when none are set."""
        if self.pairs:
            return list(self.pairs)
        if not rig_pairs:
            raise ConfigError(
                "teleop: no pairs configured and the rig lists none (add pairs to the rig YAML)"
            )
        return [PairMapConfig(leader=leader, follower=follower) for leader, follower in rig_pairs]
