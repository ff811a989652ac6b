"""Arm models: which servos make up an arm, and how ticks become joint angles.

An arm model is a YAML file (hardware/configs/arms/<name>.yaml, or any path) listing the
arm's joints in order, the gripper last. Each joint is driven by one primary servo and
optionally shadow servos bolted to the same axis (the ViperX shoulder and elbow): the
primary is read, and every servo of the joint is written in the same sync write. A
servo's `reverse` flag is its Drive Mode reverse bit, written at connect, so a shadow
mounted mirror-wise receives the same goal as its primary and the two never fight.

Units: servo positions are ticks (resolution per revolution from the servo model, 4096
for X series; resolution/2 = 2048 ticks is 0 rad); joint limits are radians; the
gripper is commanded normalized 0..1 (open = 1) over its raw angle range [closed, open].

Any Dynamixel arm can be defined in YAML without code; `load_arm_model` validates it and
raises a one-line ConfigError naming the file and the joint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from duet.config import field, from_dict, read_yaml
from duet.errors import ConfigError
from duet.resources import shipped_dir

ARMS = "hardware/configs/arms"  # shipped arm models (duet.resources: the checkout or the wheel)

Mode = Literal["position", "current_based_position"]


@dataclass
class ServoSpec:
    id: int = field(help="Dynamixel ID, 0..252")
    model: str = field(help="servo model, e.g. XM540-W270 (see duet.hardware.dynamixel.control_table)")
    reverse: bool = field(False, help="Drive Mode reverse bit (written at connect); mirror-mounted shadows")


@dataclass
class JointSpec:
    name: str = field(help="joint name, e.g. shoulder")
    servos: list[ServoSpec] = field(help="primary servo first, then shadows on the same axis")
    lower: float = field(help="lower joint limit, rad")
    upper: float = field(help="upper joint limit, rad")
    max_velocity: float = field(3.0, help="max commanded speed, rad/s (max step per tick = this / rate)")
    mode: Mode = field("position", help="operating mode while torque is on")
    current_limit_ma: float = field(0.0, help="Current Limit register, mA (0 keeps the servo's value)")
    # Kinematics (the URDF, duet.hardware.urdf): where this joint sits on the previous link.
    link: str = field(
        "", help="the link this joint moves (URDF child link), e.g. shoulder_link; '' = <name>_link"
    )
    origin_xyz: list[float] = field(
        factory=list, help="joint origin in the parent link's frame, m (URDF <origin xyz>); [] = none given"
    )
    origin_rpy: list[float] = field(
        factory=list,
        help="joint origin rotation, rad, fixed-axis roll pitch yaw (URDF <origin rpy>); [] = 0 0 0",
    )
    axis: list[float] = field(
        factory=list, help="rotation axis in the joint frame (URDF <axis>), e.g. [0, 1, 0]"
    )


@dataclass
class FingerSpec:
    """The gripper's two mirrored slide fingers, moved by the gripper joint (URDF mimic joints)."""

    origin_xyz: list[float] = field(help="finger joints' origin in the gripper link's frame, m")
    closed_m: float = field(help="left finger slide position at gripper 0 (closed), m")
    open_m: float = field(help="left finger slide position at gripper 1 (open), m")
    axis: list[float] = field(
        factory=lambda: [0.0, 1.0, 0.0], help="left finger slide axis (right: mirrored)"
    )


@dataclass
class GripperSpec:
    servos: list[ServoSpec] = field(help="primary servo first, then shadows")
    open: float = field(help="raw joint angle when fully open, rad (nominal; calibration overrides)")
    closed: float = field(help="raw joint angle when fully closed, rad (nominal; calibration overrides)")
    name: str = field("gripper", help="gripper joint name")
    max_velocity: float = field(5.0, help="max commanded speed, normalized units/s (1 = full stroke)")
    mode: Mode = field("position", help="operating mode while torque is on")
    current_limit_ma: float = field(0.0, help="Current Limit register, mA (0 keeps the servo's value)")
    link: str = field("gripper_prop_link", help="the link the gripper servo turns (URDF child link)")
    origin_xyz: list[float] = field(factory=list, help="gripper joint origin in the last arm link's frame, m")
    axis: list[float] = field(factory=list, help="gripper servo axis in the joint frame")
    fingers: FingerSpec | None = field(None, help="the slide fingers (URDF mimic joints of the gripper)")


@dataclass
class ArmModelConfig:
    name: str = field(help="arm model name, e.g. vx300s")
    joints: list[JointSpec] = field(help="arm joints in order (without the gripper)")
    gripper: GripperSpec = field(help="the gripper: always the last joint")
    description: str = field("", help="free text")
    home: list[float] = field(
        factory=list, help="a resting pose of the arm joints, rad (no gripper); [] = zeros"
    )


@dataclass(frozen=True)
class Joint:
    """One joint as the backends use it (arm joints and the gripper alike)."""

    index: int
    name: str
    ids: tuple[int, ...]  # primary first, then shadows
    models: tuple[str, ...]  # canonical control-table model name per id
    reverse: tuple[bool, ...]  # Drive Mode reverse bit per id
    lower: float  # rad; gripper: 0 (normalized)
    upper: float  # rad; gripper: 1
    max_velocity: float  # rad/s; gripper: normalized/s
    mode: str
    current_limit_ma: float
    is_gripper: bool

    @property
    def primary(self) -> int:
        return self.ids[0]

    @property
    def shadows(self) -> tuple[int, ...]:
        return self.ids[1:]


def _models():
    from duet.hardware.dynamixel.control_table import MODELS

    return MODELS


def canonical_model(name: str):
    """The control-table ModelInfo for a model name (case-insensitive), or None."""
    models = _models()
    if name in models:
        return models[name]
    low = name.strip().lower()
    for key, info in models.items():
        if key.lower() == low or getattr(info, "name", "").lower() == low:
            return info
    return None


def model_by_number(number: int):
    for info in _models().values():
        if info.number == number:
            return info
    return None


@dataclass(frozen=True)
class ArmModel:
    """A validated arm model. Build with load_arm_model() or ArmModel.from_config()."""

    config: ArmModelConfig
    source: str  # file it came from (for error messages)
    joints: tuple[Joint, ...]

    @classmethod
    def from_config(cls, cfg: ArmModelConfig, source: str = "<arm model>") -> ArmModel:
        if not cfg.joints:
            raise ConfigError(f"{source}: no joints defined (list the arm joints under 'joints:')")
        if cfg.home and len(cfg.home) != len(cfg.joints):
            raise ConfigError(f"{source}: home has {len(cfg.home)} values for {len(cfg.joints)} arm joints")
        specs: list[JointSpec | GripperSpec] = [*cfg.joints, cfg.gripper]
        names = [s.name for s in specs]
        seen_ids: dict[int, str] = {}
        joints: list[Joint] = []
        for i, spec in enumerate(specs):
            where = f"{source}: joint {spec.name!r}"
            if not spec.name.isidentifier():
                raise ConfigError(f"{where}: use letters, digits and _ only in joint names")
            if names.count(spec.name) > 1:
                raise ConfigError(f"{where}: joint name used twice")
            if not spec.servos:
                raise ConfigError(f"{where}: no servos (add e.g. servos: [{{id: 1, model: XM430-W350}}])")
            models = []
            for s in spec.servos:
                if not 0 <= s.id <= 252:
                    raise ConfigError(f"{where}: servo ID {s.id} outside 0..252")
                if s.id in seen_ids:
                    raise ConfigError(f"{where}: servo ID {s.id} is already used by joint {seen_ids[s.id]!r}")
                seen_ids[s.id] = spec.name
                info = canonical_model(s.model)
                if info is None:
                    known = ", ".join(sorted(_models()))
                    raise ConfigError(f"{where}: unknown servo model {s.model!r} (known: {known})")
                models.append(info.name)
            if len(set(models)) > 1:
                raise ConfigError(
                    f"{where}: shadow servos must be the same model as the primary ({models[0]})"
                )
            if spec.mode == "current_based_position" or spec.current_limit_ma:
                info = canonical_model(models[0])
                if not getattr(info, "current_unit_ma", 0):
                    raise ConfigError(
                        f"{where}: {models[0]} has no current control; use mode: position and current_limit_ma: 0"
                    )
            if spec.current_limit_ma < 0:
                raise ConfigError(f"{where}: current_limit_ma must be >= 0")
            if not (math.isfinite(spec.max_velocity) and spec.max_velocity > 0):
                raise ConfigError(f"{where}: max_velocity must be > 0")
            vectors = {"origin_xyz": spec.origin_xyz, "axis": spec.axis}
            if isinstance(spec, JointSpec):
                vectors["origin_rpy"] = spec.origin_rpy
            for key, vec in vectors.items():
                if vec and (len(vec) != 3 or not all(math.isfinite(v) for v in vec)):
                    raise ConfigError(f"{where}: {key} needs 3 finite numbers, got {vec}")
            if spec.axis and not any(spec.axis):
                raise ConfigError(f"{where}: axis must not be [0, 0, 0]")
            is_gripper = isinstance(spec, GripperSpec)
            if isinstance(spec, GripperSpec):
                if not (math.isfinite(spec.open) and math.isfinite(spec.closed)) or spec.open == spec.closed:
                    raise ConfigError(f"{where}: open and closed must be different angles (rad)")
                lower, upper = 0.0, 1.0
            else:
                lower, upper = float(spec.lower), float(spec.upper)
                if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
                    raise ConfigError(f"{where}: needs lower < upper (rad), got {lower} .. {upper}")
                if lower < -math.pi - 1e-3 or upper > math.pi + 1e-3:
                    raise ConfigError(f"{where}: limits must lie within -pi..pi in position mode")
            joints.append(
                Joint(
                    index=i,
                    name=spec.name,
                    ids=tuple(s.id for s in spec.servos),
                    models=tuple(models),
                    reverse=tuple(bool(s.reverse) for s in spec.servos),
                    lower=lower,
                    upper=upper,
                    max_velocity=float(spec.max_velocity),
                    mode=spec.mode,
                    current_limit_ma=float(spec.current_limit_ma),
                    is_gripper=is_gripper,
                )
            )
        return cls(config=cfg, source=source, joints=tuple(joints))

    # ------------------------------------------------------------------ descriptions
    @property
    def name(self) -> str:
        return self.config.name

    @cached_property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def n(self) -> int:
        return len(self.joints)

    @property
    def gripper(self) -> Joint:
        return self.joints[-1]

    @cached_property
    def lower(self) -> np.ndarray:
        return np.array([j.lower for j in self.joints], dtype=np.float64)

    @cached_property
    def upper(self) -> np.ndarray:
        return np.array([j.upper for j in self.joints], dtype=np.float64)

    def max_step(self, rate_hz: float) -> np.ndarray:
        """Largest change per control tick (rad; gripper normalized) at rate_hz."""
        return np.array([j.max_velocity / rate_hz for j in self.joints], dtype=np.float64)

    @cached_property
    def servos(self) -> tuple[tuple[int, str, str], ...]:
        """(id, model, servo name) for every servo, primaries and shadows, in joint order.
        Shadows are named <joint>_shadow, <joint>_shadow2, ..."""
        out = []
        for j in self.joints:
            for k, (sid, model) in enumerate(zip(j.ids, j.models)):
                name = j.name if k == 0 else f"{j.name}_shadow" + (str(k) if k > 1 else "")
                out.append((sid, model, name))
        return tuple(out)

    @cached_property
    def servo_models(self) -> dict[int, str]:
        return {sid: model for sid, model, _ in self.servos}

    def resolution(self, joint: Joint) -> int:
        return int(canonical_model(joint.models[0]).resolution)

    def joint_of(self, name: str) -> Joint:
        for j in self.joints:
            if j.name == name:
                return j
        raise ConfigError(f"{self.source}: no joint named {name!r} (have {', '.join(self.joint_names)})")


# ---------------------------------------------------------------------- ticks <-> radians


def ticks_to_rad(ticks, resolution: int = 4096):
    """Servo ticks -> angle (rad) in the servo's frame: resolution/2 ticks is 0 rad."""
    return (np.asarray(ticks, dtype=np.float64) - resolution / 2) * (2 * math.pi / resolution)


def rad_to_ticks(rad, resolution: int = 4096) -> np.ndarray:
    """Angle (rad) -> nearest servo tick (int64)."""
    return np.rint(np.asarray(rad, dtype=np.float64) * (resolution / (2 * math.pi)) + resolution / 2).astype(
        np.int64
    )


# ---------------------------------------------------------------------- loading


def shipped_arm_models() -> list[str]:
    return sorted(p.stem for p in shipped_dir(ARMS).glob("*.yaml"))


def arm_model_path(name_or_path: str) -> Path:
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml"):
        return p
    shipped = shipped_dir(ARMS) / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConfigError(
            f"arm model {name_or_path!r}: not a shipped model ({', '.join(shipped_arm_models())}) nor a .yaml path"
        )
    return shipped


_CACHE: dict[tuple[str, str], ArmModel] = {}


def load_arm_model(name_or_path: str) -> ArmModel:
    """Load and validate an arm model: a shipped name (vx300s, wx250s) or a YAML path."""
    path = arm_model_path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"{path}: arm model file not found (check the path)")
    key = (str(path.resolve()), path.read_text())
    if key not in _CACHE:
        cfg = from_dict(ArmModelConfig, read_yaml(path), where=str(path))
        _CACHE[key] = ArmModel.from_config(cfg, source=str(path))
    return _CACHE[key]
