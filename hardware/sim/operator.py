"""The scripted puppet operator: moves the sim leader arms through a task, as a person would.

For each task and episode the operator plans end-effector waypoints from the objects' initial
poses (a pick, a meet point in the air, a hand-over or an insertion, after the scripted
policies of the ACT paper's simulated tasks), then turns them into leader joint trajectories
with damped-least-squares inverse kinematics on the world's MuJoCo model (mj_jac on a private
MjData, so the shared world is never touched). The resulting joint trajectory is what a
person would have put the leader puppets through; the followers only ever see it through the
normal leader -> teleop -> follower path.

The tool centre point (TCP) is a point between the finger pads, TCP_OFFSET in the
gripper_link frame; orientations are built from a heading (the direction the gripper points,
in the horizontal plane), a pitch (down from horizontal) and a roll about the gripper axis.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from duet.errors import ConfigError
from duet.hardware.sim.world import ARM_JOINTS, GRIPPER_OPEN_M, SIDES, START_ARM_POSE, START_GRIPPER, SimWorld

TCP_OFFSET = np.array([0.12, 0.0, 0.0])  # m, in the gripper_link frame: middle of the finger plates
CONTROL_RATE_HZ = 50.0
TAKE_DEPTH = 0.01  # m: where the receiving gripper's TCP stops relative to the cube centre (x)
# TCP above an object's centre when grasping it from the table (m): the finger plates reach
# 2-3 cm below the TCP when the gripper is tilted down, and must not dig into the table.
GRASP_LIFT = 0.01
TABLE_CLEARANCE = 0.002  # m: finger plates above the table at the grasp
INSERTION_PITCH_DEG = 80.0  # grasp pitch for peg and socket: steep, so the pads reach the thin peg
# Null-space pull of the IK towards its starting pose, for forearm_roll and wrist_rotate.
POSTURE_WEIGHT = np.array([0.0, 0.0, 0.0, 0.5, 0.0, 0.5])


# ---------------------------------------------------------------------------- rotations


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def gripper_frame(heading: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """World rotation of a gripper pointing along `heading` (rad about world z, 0 = +x),
    tilted down by `pitch` (rad) and rolled by `roll` (rad) about its own axis."""
    return rot_z(heading) @ rot_y(pitch) @ rot_x(roll)


def mat_to_quat(R: np.ndarray) -> np.ndarray:
    import mujoco

    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R, dtype=np.float64).ravel())
    return q


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    import mujoco

    m = np.empty(9)
    mujoco.mju_quat2Mat(m, np.asarray(q, dtype=np.float64))
    return m.reshape(3, 3)


def slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    q0 = q0 / np.linalg.norm(q0)
    q1 = q1 / np.linalg.norm(q1)
    d = float(np.dot(q0, q1))
    if d < 0.0:
        q1, d = -q1, -d
    if d > 0.9995:
        q = q0 + s * (q1 - q0)
        return q / np.linalg.norm(q)
    th = np.arccos(d)
    return (np.sin((1 - s) * th) * q0 + np.sin(s * th) * q1) / np.sin(th)


# ---------------------------------------------------------------------------- kinematics


class Kinematics:
    """FK and damped-least-squares IK of the world's arms on a private MjData."""

    def __init__(self, world: SimWorld, tcp_offset: np.ndarray = TCP_OFFSET):
        import mujoco

        self.model = world.model
        self.data = mujoco.MjData(self.model)
        self.arms = world.arms
        for b in self.arms.values():  # fingers open: the widest the gripper gets
            self.data.qpos[b.finger_qpos] = (GRIPPER_OPEN_M, -GRIPPER_OPEN_M)
        self.tcp = np.asarray(tcp_offset, dtype=np.float64)
        self._fingers: dict[str, list[tuple[int, np.ndarray]]] = {}
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))

    def _finger_vertices(self, side: str) -> list[tuple[int, np.ndarray]]:
        import mujoco

        out = []
        for n in ("10_left_gripper_finger", "10_right_gripper_finger"):
            g = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, f"vx300s_{side}/{n}")
            mesh = self.model.geom_dataid[g]
            if g < 0 or mesh < 0:
                continue
            a, k = self.model.mesh_vertadr[mesh], self.model.mesh_vertnum[mesh]
            out.append((g, self.model.mesh_vert[a : a + k].astype(np.float64)))
        return out

    def lowest_finger_z(self, side: str, q: np.ndarray) -> float:
        """Lowest point (world z, m) of the finger plates with arm joints q (fingers open)."""
        self._set(side, q)
        if side not in self._fingers:
            self._fingers[side] = self._finger_vertices(side)
        low = np.inf
        for g, V in self._fingers[side]:
            R = self.data.geom_xmat[g].reshape(3, 3)
            low = min(low, float(self.data.geom_xpos[g][2] + (V @ R[2]).min()))
        return low

    def _set(self, side: str, q: np.ndarray) -> None:
        import mujoco

        self.data.qpos[self.arms[side].qpos] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def fk(self, side: str, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP world position (3,) and gripper rotation (3, 3) for arm joints q (6,)."""
        self._set(side, q)
        b = self.arms[side].body
        R = self.data.xmat[b].reshape(3, 3).copy()
        return self.data.xpos[b] + R @ self.tcp, R

    def ik(
        self,
        side: str,
        pos: np.ndarray,
        R: np.ndarray,
        q0: np.ndarray,
        *,
        iters: int = 100,
        tol_pos: float = 1e-4,
        tol_rot: float = 1e-3,
        damping: float = 0.02,
        rot_weight: float = 0.3,
    ) -> tuple[np.ndarray, float, float]:
        """Joints (6,) placing the TCP at pos with rotation R, starting from q0.
        Returns (q, position error m, rotation error rad)."""
        import mujoco

        b = self.arms[side]
        q = np.array(q0, dtype=np.float64)
        q_start = q.copy()
        qt = mat_to_quat(R)
        err_p = err_r = np.inf
        for _ in range(iters):
            p, Rc = self.fk(side, q)
            e_p = pos - p
            # Rotation error as a world-frame rotation vector taking Rc to R.
            e_loc = np.empty(3)
            mujoco.mju_subQuat(e_loc, qt, mat_to_quat(Rc))
            e_r = Rc @ e_loc
            err_p, err_r = float(np.linalg.norm(e_p)), float(np.linalg.norm(e_r))
            if err_p < tol_pos and err_r < tol_rot:
                break
            mujoco.mj_jac(self.model, self.data, self._jacp, self._jacr, p, b.body)
            J = np.vstack([self._jacp[:, b.dof], rot_weight * self._jacr[:, b.dof]])
            e = np.concatenate([e_p, rot_weight * e_r])
            Jd = J.T @ np.linalg.inv(J @ J.T + damping**2 * np.eye(6))
            # Near the wrist singularity (wrist_angle ~ 0) forearm_roll and wrist_rotate can
            # trade off freely: hold them where they started in what J leaves undetermined,
            # so the solution never wanders into the flipped-wrist branch.
            posture = POSTURE_WEIGHT * (q_start - q)
            dq = Jd @ e + (np.eye(6) - Jd @ J) @ posture
            step = np.max(np.abs(dq))
            if step > 0.2:
                dq *= 0.2 / step
            q = np.clip(q + dq, b.lower, b.upper)
        return q, err_p, err_r


# ---------------------------------------------------------------------------- waypoints


@dataclass
class Waypoint:
    tick: int  # control tick (50 Hz) at which the TCP reaches this pose
    pos: np.ndarray  # TCP world position, m
    R: np.ndarray  # gripper world rotation
    gripper: float  # normalized opening (1 open)


def start_waypoint(kin: Kinematics, side: str) -> Waypoint:
    p, R = kin.fk(side, START_ARM_POSE)
    return Waypoint(0, p, R, START_GRIPPER)


def _wp(tick: int, pos, R, gripper: float) -> Waypoint:
    return Waypoint(tick, np.asarray(pos, dtype=np.float64), np.asarray(R, dtype=np.float64), float(gripper))


def grasp_point(world: SimWorld, kin: Kinematics, side: str, obj: np.ndarray, R: np.ndarray) -> np.ndarray:
    """TCP target for grasping an object on the table: GRASP_LIFT above its centre, raised
    further if the finger plates would dig into the table (they reach below the TCP when
    the gripper is tilted down), so they close freely just above it."""
    target = obj + [0.0, 0.0, GRASP_LIFT]
    q = START_ARM_POSE
    for _ in range(3):
        q, _, _ = kin.ik(side, target, R, q)
        dig = world.table_top + TABLE_CLEARANCE - kin.lowest_finger_z(side, q)
        if dig <= 1e-4:
            break
        target = target + [0.0, 0.0, dig]
    return target


def heading_to(world: SimWorld, side: str, target: np.ndarray) -> float:
    """Heading (rad about world z) from an arm's base to a point: a gripper pointing this
    way needs no forearm roll / wrist rotate (no wrist flip near the singular wrist_angle 0)."""
    base = world.data.xpos[world.model.body(f"vx300s_{side}").id]
    return float(np.arctan2(target[1] - base[1], target[0] - base[0]))


def plan_transfer_cube(world: SimWorld, kin: Kinematics) -> dict[str, list[Waypoint]]:
    """Right arm picks the cube and holds it up at the meet point; the left arm takes it
    from the side, the right lets go and both back off."""
    box = world.object_poses["box"][:3]
    meet = np.array([0.0, 0.5, 0.25])
    pick = gripper_frame(heading_to(world, "right", box), pitch=np.deg2rad(60))  # tilted down at the cube
    hold = gripper_frame(np.pi, pitch=np.deg2rad(60))  # the same, pointing -x at the meet point
    take = gripper_frame(0.0, pitch=0.0, roll=np.pi / 2)  # left: level, fingers close vertically
    grasp = grasp_point(world, kin, "right", box, pick)
    # Where the cube will sit once the right gripper holds it at the meet point: its offset
    # from the TCP at the grasp, carried along with the gripper's rotation.
    cube_at_meet = meet + hold @ pick.T @ (box - grasp)
    right = [
        start_waypoint(kin, "right"),
        _wp(90, box + [0.0, 0.0, 0.10], pick, 1.0),  # above the cube, open
        _wp(130, grasp, pick, 1.0),  # down around it
        _wp(170, grasp, pick, 0.0),  # close
        _wp(200, meet + [0.05, 0.0, 0.0], hold, 0.0),  # lift towards the meet point
        _wp(220, meet, hold, 0.0),
        _wp(310, meet, hold, 0.0),  # hold while the left arm takes it
        _wp(330, meet, hold, 1.0),  # let go
        _wp(370, meet + [0.10, 0.0, 0.0], hold, 1.0),  # back off
        _wp(400, meet + [0.10, 0.0, 0.0], hold, 1.0),
    ]
    left = [
        start_waypoint(kin, "left"),
        # Beside the meet point, open, easing closer while the right arm brings the cube: never
        # both arms still mid-task (a still scene says nothing about when to go on, and a policy
        # learning from it cannot tell; the ACT paper's scripts keep moving too).
        _wp(100, cube_at_meet + [-0.20, 0.0, 0.0], take, 1.0),
        _wp(250, cube_at_meet + [-0.12, 0.0, 0.0], take, 1.0),
        _wp(280, cube_at_meet + [TAKE_DEPTH, 0.0, 0.0], take, 1.0),  # move in around the cube
        _wp(310, cube_at_meet + [TAKE_DEPTH, 0.0, 0.0], take, 0.0),  # close
        _wp(360, cube_at_meet + [-0.10, 0.0, 0.0], take, 0.0),  # pull it away
        _wp(400, cube_at_meet + [-0.10, 0.0, 0.0], take, 0.0),
    ]
    return {"left": left, "right": right}


def plan_insertion(world: SimWorld, kin: Kinematics) -> dict[str, list[Waypoint]]:
    """Left arm picks the socket, right arm the peg; they meet in the air and the peg
    slides into the socket until it touches the pin."""
    peg = world.object_poses["peg"][:3]
    socket = world.object_poses["socket"][:3]
    meet = np.array([0.0, 0.5, 0.20])  # peg tip meets socket mouth here
    # Each arm keeps its pitch from grasp to meet, so peg and socket stay level.
    pitch = np.deg2rad(INSERTION_PITCH_DEG)
    r_pick = gripper_frame(heading_to(world, "right", peg), pitch=pitch)
    l_pick = gripper_frame(heading_to(world, "left", socket), pitch=pitch)
    r_hold = gripper_frame(np.pi, pitch=pitch)
    l_hold = gripper_frame(0.0, pitch=pitch)
    peg_grasp = grasp_point(world, kin, "right", peg, r_pick)
    socket_grasp = grasp_point(world, kin, "left", socket, l_pick)
    right = [
        start_waypoint(kin, "right"),
        _wp(110, peg + [0.0, 0.0, 0.10], r_pick, 1.0),
        _wp(160, peg_grasp, r_pick, 1.0),
        _wp(200, peg_grasp, r_pick, 0.0),
        _wp(260, meet + [0.16, 0.0, 0.0], r_hold, 0.0),  # peg held a few cm from the socket,
        _wp(300, meet + [0.12, 0.0, 0.0], r_hold, 0.0),  # easing closer (never both arms still)
        _wp(360, meet + [0.05, 0.0, 0.0], r_hold, 0.0),  # insert (re-planned by the corrections)
        _wp(400, meet + [0.05, 0.0, 0.0], r_hold, 0.0),
    ]
    left = [
        start_waypoint(kin, "left"),
        _wp(110, socket + [0.0, 0.0, 0.10], l_pick, 1.0),
        _wp(160, socket_grasp, l_pick, 1.0),
        _wp(200, socket_grasp, l_pick, 0.0),
        _wp(260, meet + [-0.05, 0.0, 0.0], l_hold, 0.0),  # hold the socket still at the meet point
        _wp(400, meet + [-0.05, 0.0, 0.0], l_hold, 0.0),
    ]
    return {"left": left, "right": right}


PLANNERS = {"transfer_cube": plan_transfer_cube, "insertion": plan_insertion}


# ---------------------------------------------------------------------------- corrections
# A person operating the leaders watches the scene and corrects on the way. The scripted
# operator does the same at fixed ticks: it looks at where the objects really are and
# re-plans the rest of one arm's path (through the leaders, like everything else).


def correct_transfer_cube(world: SimWorld, kin: Kinematics, plan: Plan, tick: int, row: int) -> set[str]:
    """Before the hand-over: aim the left gripper at where the cube really is."""
    box = world.body_pose("box")[:3]
    left = plan.waypoints["left"]
    planned = next(w for w in left if w.tick == 280).pos - [TAKE_DEPTH, 0.0, 0.0]
    delta = box - planned
    for w in left:
        if w.tick > tick:
            w.pos = w.pos + delta
    return {"left"}


def correct_insertion(world: SimWorld, kin: Kinematics, plan: Plan, tick: int, row: int) -> set[str]:
    """Both objects held up: line the peg up with the socket's axis (first look), then, at
    the mouth of the socket, line it up again and push it in until its tip meets the pin."""
    peg = world.body_pose("peg")[:3]
    socket = world.body_pose("socket")[:3]
    right = plan.waypoints["right"]
    tcp, R = kin.fk("right", plan.joints["right"][row, :6])  # where the leader holds it now
    lined_up = socket + [PRE_INSERT_GAP, 0.0, 0.0]  # peg tip just outside the socket
    inserted = socket + [INSERT_DEPTH, 0.0, 0.0]  # peg tip against the pin
    keep = [w for w in right if w.tick <= tick] + [_wp(tick, tcp, R, 0.0)]
    if tick < 330:
        across = tcp + (lined_up - peg) * [0.0, 1.0, 1.0]
        right[:] = keep + [
            _wp(tick + 20, across, R, 0.0),
            _wp(tick + 40, tcp + (lined_up - peg), R, 0.0),
            _wp(400, tcp + (lined_up - peg), R, 0.0),
        ]
    else:
        right[:] = keep + [
            _wp(tick + 10, tcp + (lined_up - peg), R, 0.0),
            _wp(tick + 40, tcp + (inserted - peg), R, 0.0),
            _wp(400, tcp + (inserted - peg), R, 0.0),
        ]
    return {"right"}


PRE_INSERT_GAP = 0.13  # m: peg centre ahead of the socket centre before pushing in (tip 1 cm out)
INSERT_DEPTH = 0.09  # m: peg centre ahead of the socket centre when inserted (pressed 1 cm onto the pin)
# Ticks (50 Hz) at which the operator looks at the scene and corrects, per task.
CORRECTIONS = {
    "transfer_cube": ((250, correct_transfer_cube),),
    "insertion": ((300, correct_insertion), (345, correct_insertion)),
}


# ---------------------------------------------------------------------------- operator


@dataclass
class Plan:
    """Leader joint trajectories of one scripted episode (one row per control tick)."""

    task: str
    rate_hz: float
    joints: dict[str, np.ndarray]  # side -> (T, 7): 6 joints (rad) + gripper (normalized)
    ik_error: dict[str, float] = field(default_factory=dict)  # side -> worst TCP error at a waypoint (m)
    waypoints: dict[str, list[Waypoint]] = field(default_factory=dict)

    @property
    def ticks(self) -> int:
        return int(next(iter(self.joints.values())).shape[0])

    @property
    def duration(self) -> float:
        return self.ticks / self.rate_hz

    @property
    def reachable(self) -> bool:
        """Every waypoint pose was reached by the IK within 5 mm."""
        return all(e < 5e-3 for e in self.ik_error.values())


def _track(
    kin: Kinematics,
    side: str,
    pts: list[Waypoint],
    rows: range,
    q0: np.ndarray,
    scale: float,
    out: np.ndarray,
) -> float:
    """Fill out[rows] with joints following the waypoints (IK warm-started from q0).
    Returns the worst TCP position error at the waypoints themselves (in between, the path
    may cut a corner near the wrist singularity without harm)."""
    q = np.array(q0, dtype=np.float64)
    quats = [mat_to_quat(w.R) for w in pts]
    at = {round(w.tick * scale) for w in pts}
    worst, k = 0.0, 0
    for t in rows:
        tick = t / scale
        while k + 1 < len(pts) - 1 and tick > pts[k + 1].tick:
            k += 1
        a, b = pts[k], pts[k + 1]
        u = 1.0 if b.tick == a.tick else float(np.clip((tick - a.tick) / (b.tick - a.tick), 0.0, 1.0))
        u = u * u * (3.0 - 2.0 * u)  # smoothstep: start and stop each segment at rest
        pos = (1 - u) * a.pos + u * b.pos
        R = quat_to_mat(slerp(quats[k], quats[k + 1], u))
        q, ep, _er = kin.ik(side, pos, R, q)
        if t in at:
            worst = max(worst, ep)
        out[t, :6] = q
        out[t, 6] = (1 - u) * a.gripper + u * b.gripper
    return worst


def plan_episode(world: SimWorld, rate_hz: float = CONTROL_RATE_HZ) -> Plan:
    """Plan the scripted demonstration for the world's task and current object poses."""
    task = world.task.name
    if task not in PLANNERS:
        raise ConfigError(f"scripted operator: no script for task {task!r} (have {', '.join(PLANNERS)})")
    kin = Kinematics(world)
    wps = PLANNERS[task](world, kin)
    scale = rate_hz / CONTROL_RATE_HZ  # waypoints are written in 50 Hz ticks
    joints, errs = {}, {}
    for side in SIDES:
        T = int(round(wps[side][-1].tick * scale)) + 1
        out = np.empty((T, len(ARM_JOINTS) + 1))
        errs[side] = _track(kin, side, wps[side], range(T), START_ARM_POSE, scale, out)
        joints[side] = out
    return Plan(task=task, rate_hz=rate_hz, joints=joints, ik_error=errs, waypoints=wps)


class ScriptedOperator:
    """Holds the leader puppets along a Plan: pose(side, t) at episode time t (s).
    Before the start and after the end it holds the first / last pose.

    With `world`, the operator also looks at the scene at its task's correction ticks and
    re-plans the rest of the path from where the objects really are (as a person does).
    """

    def __init__(self, plan: Plan, world: SimWorld | None = None):
        self.plan = plan
        self.world = world
        self.corrections = 0
        self._pending = list(CORRECTIONS.get(plan.task, ())) if world is not None else []
        # Both leaders ask for poses, from their own threads in real time: one of them makes
        # a due correction while the other goes on with the plan as it is.
        self._correcting = threading.Lock()

    def _correct(self, row: int) -> None:
        tick, fn = self._pending.pop(0)
        assert self.world is not None
        kin = Kinematics(self.world)
        scale = self.plan.rate_hz / CONTROL_RATE_HZ
        for side in fn(self.world, kin, self.plan, tick, row):
            # Re-plan into a copy and swap it in whole: a reader never sees half a correction.
            traj = self.plan.joints[side].copy()
            start = min(row, len(traj) - 1)
            err = _track(
                kin, side, self.plan.waypoints[side], range(start, len(traj)), traj[start, :6], scale, traj
            )
            self.plan.joints[side] = traj
            self.plan.ik_error[side] = max(self.plan.ik_error.get(side, 0.0), err)
        self.corrections += 1

    def pose(self, side: str, t: float) -> np.ndarray:
        x = t * self.plan.rate_hz
        i = int(np.floor(x + 1e-6))
        if self._pending and self._correcting.acquire(blocking=False):
            try:
                last = len(self.plan.joints[side]) - 1
                while self._pending and i >= self._pending[0][0] * self.plan.rate_hz / CONTROL_RATE_HZ:
                    self._correct(min(i, last))
            finally:
                self._correcting.release()
        traj = self.plan.joints[side]
        if i <= 0:
            return traj[0].copy()
        if i >= len(traj) - 1:
            return traj[-1].copy()
        s = x - i
        return (1 - s) * traj[i] + s * traj[i + 1] if s > 1e-6 else traj[i].copy()
