"""The rig's robot description (URDF) and its forward kinematics, from the arm models and the rig.

One source: the kinematics live in the arm model YAMLs (each joint's link, origin and axis; the
gripper's slide fingers) and the rig (arm base poses, camera mounts); `rig_urdf(rig)` writes
the URDF from them, and `RobotState` computes the TF transforms a state publisher sends.
Pure Python (xml.etree, numpy): no ROS.

Names (every name is a TF frame or a URDF joint of the one rig-wide description):

- `world`: the rig's world frame (the table centre under the arms, z up; the MuJoCo world).
- `<arm>`: the arm's base frame, the frame_id of its JointState messages (e.g. left_follower).
- `<arm>_<link>`: its links (left_follower_shoulder_link ... left_follower_gripper_link,
  _gripper_prop_link, _left_finger_link, _right_finger_link).
- `<arm>_<joint>`: the URDF joint of each JointState name the arm publishes (waist ...
  wrist_rotate in rad; gripper = the normalized opening 0..1 as JointState reports it, on the
  gripper servo's link); the fingers `<arm>_left_finger` / `<arm>_right_finger` are mimic
  joints of the gripper (slide position m = closed_m + opening * (open_m - closed_m)).
- `<camera>`: the camera body (REP 103: x along the optical axis, y left, z up);
  `<camera>_optical_frame` (REP 103 optical: z forward, x right, y down), the frame_id of its
  image and CameraInfo messages.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np

from duet.errors import ConfigError
from duet.hardware.arm_model import ArmModel, load_arm_model
from duet.hardware.rig import RigConfig

WORLD = "world"
# Camera body -> optical frame (REP 103): z forward, x right, y down.
OPTICAL_RPY = (-math.pi / 2, 0.0, -math.pi / 2)


def joint_name(arm: str, joint: str) -> str:
    """The URDF joint of an arm's JointState name: left_follower + waist -> left_follower_waist."""
    return f"{arm}_{joint}"


def link_name(arm: str, link: str) -> str:
    return f"{arm}_{link}"


def optical_frame(camera: str) -> str:
    return f"{camera}_optical_frame"


@dataclass(frozen=True)
class Mimic:
    joint: str
    multiplier: float
    offset: float


@dataclass(frozen=True)
class UrdfJoint:
    """One joint of the description (fixed, revolute or prismatic)."""

    name: str
    type: str
    parent: str
    child: str
    xyz: tuple[float, ...] = (0.0, 0.0, 0.0)
    rpy: tuple[float, ...] = (0.0, 0.0, 0.0)
    axis: tuple[float, ...] = (1.0, 0.0, 0.0)
    lower: float = 0.0
    upper: float = 0.0
    velocity: float = 0.0
    mimic: Mimic | None = None

    @property
    def moves(self) -> bool:
        return self.type != "fixed"


# ---------------------------------------------------------------------- the description


def _vec(values, where: str, what: str) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ConfigError(
            f"{where}: no {what} (add the kinematics, e.g. {what}: [0, 0, 0.079], to the arm YAML)"
        )
    return (float(values[0]), float(values[1]), float(values[2]))


def arm_joints(arm: str, model: ArmModel) -> list[UrdfJoint]:
    """The URDF joints of one arm, from its base frame `<arm>` to the fingers."""
    out: list[UrdfJoint] = []
    parent = arm
    for spec, joint in zip(model.config.joints, model.joints):
        where = f"{model.source}: joint {spec.name!r}"
        child = link_name(arm, spec.link or f"{spec.name}_link")
        out.append(
            UrdfJoint(
                name=joint_name(arm, spec.name),
                type="revolute",
                parent=parent,
                child=child,
                xyz=_vec(spec.origin_xyz, where, "origin_xyz"),
                rpy=_vec(spec.origin_rpy, where, "origin_rpy") if spec.origin_rpy else (0.0, 0.0, 0.0),
                axis=_vec(spec.axis, where, "axis"),
                lower=joint.lower,
                upper=joint.upper,
                velocity=joint.max_velocity,
            )
        )
        parent = child
    g, gj = model.config.gripper, model.gripper
    where = f"{model.source}: joint {g.name!r}"
    gname = joint_name(arm, g.name)
    out.append(
        UrdfJoint(
            name=gname,
            type="revolute",
            parent=parent,
            child=link_name(arm, g.link),
            xyz=_vec(g.origin_xyz, where, "origin_xyz"),
            axis=_vec(g.axis, where, "axis"),
            lower=gj.lower,
            upper=gj.upper,
            velocity=gj.max_velocity,
        )
    )
    f = g.fingers
    if f is not None:
        xyz = _vec(f.origin_xyz, f"{where} fingers", "origin_xyz")
        axis = _vec(f.axis, f"{where} fingers", "axis")
        span = f.open_m - f.closed_m
        for side, sign in (("left", 1.0), ("right", -1.0)):
            lo, hi = sorted((sign * f.closed_m, sign * f.open_m))
            out.append(
                UrdfJoint(
                    name=joint_name(arm, f"{side}_finger"),
                    type="prismatic",
                    parent=parent,
                    child=link_name(arm, f"{side}_finger_link"),
                    xyz=xyz,
                    axis=axis,
                    lower=lo,
                    upper=hi,
                    velocity=abs(span) * gj.max_velocity,
                    mimic=Mimic(gname, sign * span, sign * f.closed_m),
                )
            )
    return out


def has_kinematics(model: ArmModel) -> bool:
    """The arm model gives every joint's origin and axis (the gripper's included)."""
    g = model.config.gripper
    arm = all(len(s.origin_xyz) == 3 and len(s.axis) == 3 for s in model.config.joints)
    return arm and len(g.origin_xyz) == 3 and len(g.axis) == 3


def arms_without_kinematics(rig: RigConfig) -> list[str]:
    return [a.name for a in rig.arms if not has_kinematics(load_arm_model(a.model))]


def rig_joints(rig: RigConfig, strict: bool = True) -> list[UrdfJoint]:
    """Every joint of the rig's description: arm bases on the world, the arms, the cameras.
    strict=False leaves out the chain of an arm whose model has no kinematics (its base frame
    stays) and the cameras riding it (see arms_without_kinematics); strict raises ConfigError."""
    out: list[UrdfJoint] = []
    last_link: dict[str, str] = {}
    skipped: set[str] = set()
    for slot in rig.arms:
        xyz, rpy = slot.base_pose()
        out.append(
            UrdfJoint(name=f"{slot.name}_base", type="fixed", parent=WORLD, child=slot.name, xyz=xyz, rpy=rpy)
        )
        model = load_arm_model(slot.model)
        if not strict and not has_kinematics(model):
            skipped.add(slot.name)
            continue
        joints = arm_joints(slot.name, model)
        out.extend(joints)
        last_link[slot.name] = joints[len(model.config.joints) - 1].child  # the gripper link
    for cam in rig.cameras:
        mount, xyz, rpy = cam.mount_pose()
        if mount in skipped:
            continue
        if mount == WORLD:
            parent = WORLD
        elif mount in last_link:
            parent = last_link[mount]
        else:
            raise ConfigError(
                f"rig {rig.name!r}: camera {cam.name!r} rides arm {mount!r}, which the rig lacks "
                f"(set the camera's mount: world or an arm, and mount_xyz / mount_rpy)"
            )
        out.append(
            UrdfJoint(name=f"{cam.name}_mount", type="fixed", parent=parent, child=cam.name, xyz=xyz, rpy=rpy)
        )
        out.append(
            UrdfJoint(
                name=f"{cam.name}_optical",
                type="fixed",
                parent=cam.name,
                child=optical_frame(cam.name),
                rpy=OPTICAL_RPY,
            )
        )
    return out


def _fmt(values) -> str:
    return " ".join(f"{float(v):.9g}" for v in values)


def rig_urdf(rig: RigConfig, strict: bool = True) -> str:
    """The rig's URDF (a string): one robot named after the rig, rooted at `world`
    (strict: see rig_joints)."""
    joints = rig_joints(rig, strict)
    robot = ET.Element("robot", name=rig.name)
    links = [WORLD]
    for j in joints:
        links.append(j.child)
    for name in links:
        ET.SubElement(robot, "link", name=name)
    for j in joints:
        el = ET.SubElement(robot, "joint", name=j.name, type=j.type)
        ET.SubElement(el, "parent", link=j.parent)
        ET.SubElement(el, "child", link=j.child)
        ET.SubElement(el, "origin", xyz=_fmt(j.xyz), rpy=_fmt(j.rpy))
        if j.moves:
            ET.SubElement(el, "axis", xyz=_fmt(j.axis))
            ET.SubElement(
                el,
                "limit",
                lower=_fmt([j.lower]),
                upper=_fmt([j.upper]),
                effort="10",
                velocity=_fmt([j.velocity]),
            )
        if j.mimic is not None:
            ET.SubElement(
                el,
                "mimic",
                joint=j.mimic.joint,
                multiplier=_fmt([j.mimic.multiplier]),
                offset=_fmt([j.mimic.offset]),
            )
    ET.indent(robot)
    return '<?xml version="1.0"?>\n' + ET.tostring(robot, encoding="unicode") + "\n"


def parse_urdf(text: str) -> list[UrdfJoint]:
    """The joints of a URDF string (the subset rig_urdf writes: origin, axis, limit, mimic)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ConfigError(
            f"URDF does not parse ({e}); regenerate it with duet.hardware.urdf.rig_urdf"
        ) from None

    def floats(el, attr, default):
        if el is None or el.get(attr) is None:
            return default
        return tuple(float(v) for v in el.get(attr).split())

    out = []
    for el in root.findall("joint"):
        origin, axis, limit, mimic = (el.find(t) for t in ("origin", "axis", "limit", "mimic"))
        out.append(
            UrdfJoint(
                name=el.get("name", ""),
                type=el.get("type", "fixed"),
                parent=el.find("parent").get("link", ""),  # type: ignore[union-attr]
                child=el.find("child").get("link", ""),  # type: ignore[union-attr]
                xyz=floats(origin, "xyz", (0.0, 0.0, 0.0)),
                rpy=floats(origin, "rpy", (0.0, 0.0, 0.0)),
                axis=floats(axis, "xyz", (1.0, 0.0, 0.0)),
                lower=floats(limit, "lower", (0.0,))[0],
                upper=floats(limit, "upper", (0.0,))[0],
                velocity=floats(limit, "velocity", (0.0,))[0],
                mimic=None
                if mimic is None
                else Mimic(
                    mimic.get("joint", ""),
                    float(mimic.get("multiplier", 1.0)),
                    float(mimic.get("offset", 0.0)),
                ),
            )
        )
    return out


# ---------------------------------------------------------------------- kinematics


def rpy_matrix(rpy) -> np.ndarray:
    """URDF rpy (fixed axes X, Y, Z): R = Rz(yaw) Ry(pitch) Rx(roll)."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def axis_angle_matrix(axis, angle: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def homogeneous(rot: np.ndarray, xyz) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = rot
    t[:3, 3] = np.asarray(xyz, dtype=np.float64)
    return t


def joint_transform(j: UrdfJoint, q: float = 0.0) -> np.ndarray:
    """Parent link -> child link at joint position q: origin, then the joint's motion."""
    t = homogeneous(rpy_matrix(j.rpy), j.xyz)
    if j.type in ("revolute", "continuous"):
        t = t @ homogeneous(axis_angle_matrix(j.axis, q), (0.0, 0.0, 0.0))
    elif j.type == "prismatic":
        a = np.asarray(j.axis, dtype=np.float64)
        t = t @ homogeneous(np.eye(3), q * a / np.linalg.norm(a))
    return t


def quaternion_xyzw(rot: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation matrix -> unit quaternion (x, y, z, w), w >= 0."""
    m = rot
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = (0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = ((m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s)
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s)
    w, x, y, z = q
    n = math.sqrt(w * w + x * x + y * y + z * z)
    sign = 1.0 if w >= 0 else -1.0
    return (float(sign * x / n), float(sign * y / n), float(sign * z / n), float(sign * w / n))


@dataclass(frozen=True)
class Transform:
    """One TF edge: parent -> child."""

    parent: str
    child: str
    xyz: tuple[float, float, float]
    quat_xyzw: tuple[float, float, float, float]


def _edge(j: UrdfJoint, q: float = 0.0) -> Transform:
    t = joint_transform(j, q)
    return Transform(
        j.parent, j.child, (float(t[0, 3]), float(t[1, 3]), float(t[2, 3])), quaternion_xyzw(t[:3, :3])
    )


class RobotState:
    """The TF of a URDF: static edges (fixed joints) and the moving edges for joint positions.
    Mimic joints follow their joint; a joint without a position yet sits at 0 (clamped into
    its limits)."""

    def __init__(self, urdf: str):
        self.urdf = urdf
        self.joints = parse_urdf(urdf)
        self.by_name = {j.name: j for j in self.joints}
        self.frames = {WORLD} | {j.child for j in self.joints} | {j.parent for j in self.joints}

    def static_transforms(self) -> list[Transform]:
        return [_edge(j) for j in self.joints if not j.moves]

    def positions(self, given: dict[str, float]) -> dict[str, float]:
        """Every moving joint's position: the given ones, mimics from their joint, others at rest."""
        out: dict[str, float] = {}
        for j in self.joints:
            if not j.moves or j.mimic is not None:
                continue
            q = given.get(j.name)
            out[j.name] = float(q) if q is not None and math.isfinite(q) else min(max(0.0, j.lower), j.upper)
        for j in self.joints:
            if j.mimic is not None:
                out[j.name] = j.mimic.multiplier * out.get(j.mimic.joint, 0.0) + j.mimic.offset
        return out

    def moving_transforms(self, given: dict[str, float], joints: set[str] | None = None) -> list[Transform]:
        """The moving edges (of `joints`, or all; mimics of those included) at the given positions."""
        q = self.positions(given)
        out = []
        for j in self.joints:
            if not j.moves:
                continue
            key = j.mimic.joint if j.mimic is not None else j.name
            if joints is None or key in joints:
                out.append(_edge(j, q[j.name]))
        return out

    def arm_transforms(self, arm: str, names, positions) -> list[Transform]:
        """The moving edges of one arm from its JointState (names as the arm publishes them)."""
        if len(names) != len(positions):
            raise ConfigError(
                f"arm {arm!r}: joint state has {len(positions)} positions for {len(names)} names"
            )
        given = {joint_name(arm, n): float(p) for n, p in zip(names, positions)}
        unknown = [n for n in names if joint_name(arm, n) not in self.by_name]
        if unknown:
            raise ConfigError(
                f"arm {arm!r}: joint {unknown[0]!r} is not in the robot description (is the rig the arm's?)"
            )
        return self.moving_transforms(given, set(given))

    def forward_kinematics(self, given: dict[str, float]) -> dict[str, np.ndarray]:
        """World pose (4x4) of every frame at the given joint positions."""
        q = self.positions(given)
        poses = {WORLD: np.eye(4)}
        pending = list(self.joints)
        while pending:
            rest = [j for j in pending if j.parent not in poses]
            for j in pending:
                if j.parent in poses:
                    poses[j.child] = poses[j.parent] @ joint_transform(j, q.get(j.name, 0.0))
            if len(rest) == len(pending):
                raise ConfigError(
                    f"URDF: frames {sorted({j.parent for j in rest})} are not connected to {WORLD}"
                )
            pending = rest
        return poses


# ---------------------------------------------------------------------- check against the sim

# Follower links compared with the MuJoCo bodies of the same name (vx300s_<side>/<link>).
SIM_LINKS = (
    "shoulder_link",
    "upper_arm_link",
    "upper_forearm_link",
    "lower_forearm_link",
    "wrist_link",
    "gripper_link",
    "gripper_prop_link",
    "left_finger_link",
    "right_finger_link",
)


@dataclass(frozen=True)
class SimComparison:
    configurations: int
    bodies: int  # body poses compared per configuration
    cameras: int  # camera frames compared per configuration
    max_position_error_m: float  # bodies and camera positions
    max_rotation_error_deg: float  # bodies (but gripper_prop_link, which the sim does not turn)
    max_camera_axis_error_deg: float  # the optical axis (MuJoCo cameras keep their own roll)


def compare_with_sim(rig: RigConfig, configurations: int = 100, seed: int = 0) -> SimComparison:
    """Forward kinematics of rig_urdf(rig) against the MuJoCo sim world at random joint
    configurations (within the arm model's limits, gripper 0..1): every follower link's
    world pose and every simulated camera's position and optical axis."""
    import mujoco

    from duet.hardware.sim.cameras import SCENE_CAMERAS
    from duet.hardware.sim.world import SimWorld, gripper_to_finger, side_of

    state = RobotState(rig_urdf(rig))
    world = SimWorld(rig.sim_task, name=f"{rig.name}-urdf-check")
    model, data = world.model, world.data
    rng = np.random.default_rng(seed)
    followers = [a for a in rig.arms if a.role == "follower"]
    cams = []
    for c in rig.cameras:
        cid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, SCENE_CAMERAS.get(c.name, c.name))
        if cid >= 0:
            cams.append((c.name, cid))
    pos_err = rot_err = axis_err = 0.0
    bodies = 0
    for _ in range(configurations):
        given: dict[str, float] = {}
        for slot in followers:
            arm = load_arm_model(slot.model)
            q = rng.uniform(arm.lower, arm.upper)
            b = world.arms[side_of(slot.name)]
            data.qpos[b.qpos] = q[:6]
            f = gripper_to_finger(q[6])
            data.qpos[b.finger_qpos] = (f, -f)
            given.update({joint_name(slot.name, n): float(v) for n, v in zip(arm.joint_names, q)})
        mujoco.mj_forward(model, data)
        poses = state.forward_kinematics(given)
        bodies = 0
        for slot in followers:
            for link in SIM_LINKS:
                bid = mujoco.mj_name2id(
                    model, mujoco.mjtObj.mjOBJ_BODY, f"vx300s_{side_of(slot.name)}/{link}"
                )
                t = poses[link_name(slot.name, link)]
                pos_err = max(pos_err, float(np.linalg.norm(t[:3, 3] - data.xpos[bid])))
                bodies += 1
                if link == "gripper_prop_link":  # turns with the gripper joint here; fixed in the sim
                    continue
                r = t[:3, :3].T @ data.xmat[bid].reshape(3, 3)
                rot_err = max(rot_err, math.degrees(math.acos(min(1.0, max(-1.0, (np.trace(r) - 1) / 2)))))
        for name, cid in cams:
            t = poses[optical_frame(name)]
            pos_err = max(pos_err, float(np.linalg.norm(t[:3, 3] - data.cam_xpos[cid])))
            forward = -data.cam_xmat[cid].reshape(3, 3)[:, 2]  # MuJoCo cameras look along -z
            cos = float(np.dot(t[:3, 2], forward))
            axis_err = max(axis_err, math.degrees(math.acos(min(1.0, max(-1.0, cos)))))
    return SimComparison(configurations, bodies, len(cams), pos_err, rot_err, axis_err)
