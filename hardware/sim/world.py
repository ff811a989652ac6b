"""One simulated ALOHA station: a MuJoCo model and data shared by every sim device of a rig.

The world loads the ALOHA scene shipped inside the gym-aloha package and drives MuJoCo
directly (no gym env: it would render three cameras every step). Both follower arms, the
two virtual leader puppets and every sim camera of one rig share one SimWorld, found through
a registry keyed by the rig name (`world_for(rig)`).

Two ways to advance time, chosen by the clock the devices are given:

- lockstep: devices get `world.clock` (a SimClock). Simulated time only moves when someone
  calls `clock.sleep_until(t)`, which steps physics up to t: a 50 Hz control loop paced by a
  duet.clock.Pacer runs as fast as the machine allows. For data generation and evaluation.
- real time: devices get a wall clock (MonotonicClock). The first device to connect starts a
  physics thread that keeps simulated time up with that clock; the last one to disconnect
  stops it. The ROS graph runs as on a robot.

Arm conventions follow gym-aloha / ACT: joint order waist, shoulder, elbow, forearm_roll,
wrist_angle, wrist_rotate, gripper; the gripper is two mirrored slide fingers commanded and
reported normalized (0 closed .. 1 open) over ACT's puppet finger range
(GRIPPER_CLOSED_M .. GRIPPER_OPEN_M), so datasets and actions match gym-aloha's.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from duet.errors import ConfigError, DuetError
from duet.hardware.sim.tasks import Contacts, Task, make_task

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
JOINT_NAMES = (*ARM_JOINTS, "gripper")
SIDES = ("left", "right")
# The arms' rest pose at the start of every episode (rad), as in gym-aloha / ACT.
START_ARM_POSE = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])
# Finger slide position (m) at normalized gripper 0 (closed) and 1 (open): ACT's puppet range.
GRIPPER_CLOSED_M = 0.01844
GRIPPER_OPEN_M = 0.05800
START_GRIPPER = 0.0  # normalized gripper opening at the start of an episode


def gripper_to_finger(g: float) -> float:
    return GRIPPER_CLOSED_M + float(g) * (GRIPPER_OPEN_M - GRIPPER_CLOSED_M)


def finger_to_gripper(x: float) -> float:
    return (float(x) - GRIPPER_CLOSED_M) / (GRIPPER_OPEN_M - GRIPPER_CLOSED_M)


def start_pose() -> np.ndarray:
    """The 7-joint pose (gripper normalized) every arm starts an episode in."""
    return np.concatenate([START_ARM_POSE, [START_GRIPPER]])


def assets_dir() -> Path:
    """gym-aloha's MJCF and meshes, located without importing gym_aloha (which pulls gym)."""
    spec = importlib.util.find_spec("gym_aloha")
    if spec is None or not spec.submodule_search_locations:
        raise DuetError("MuJoCo sim: the ALOHA model comes with gym-aloha; pip install gym-aloha==0.1.5")
    d = Path(list(spec.submodule_search_locations)[0]) / "assets"
    if not d.is_dir():
        raise DuetError(f"MuJoCo sim: {d} is missing; reinstall gym-aloha==0.1.5")
    return d


def side_of(arm_name: str) -> str:
    """'left_follower' -> 'left'. Sim arms are mapped to the model's arms by name prefix."""
    for s in SIDES:
        if arm_name.startswith(s):
            return s
    raise ConfigError(f"sim arm {arm_name!r}: name must start with left or right (e.g. left_follower)")


class Operator(Protocol):
    """Whoever moves the virtual leader puppets: a pose per side at episode time t (s)."""

    def pose(self, side: str, t: float) -> np.ndarray: ...


class ArmBinding:
    """Indices of one model arm (6 revolute joints + 2 finger slides) and its actuators."""

    def __init__(self, model, side: str):
        import mujoco

        self.side = side
        prefix = f"vx300s_{side}/"
        jid = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, prefix + n) for n in ARM_JOINTS]
        fid = [
            mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, prefix + n)
            for n in ("left_finger", "right_finger")
        ]
        if min(jid + fid) < 0:
            raise DuetError(f"MuJoCo sim: the scene has no arm {prefix!r}; reinstall gym-aloha==0.1.5")
        self.qpos = np.array([model.jnt_qposadr[j] for j in jid])
        self.dof = np.array([model.jnt_dofadr[j] for j in jid])
        self.finger_qpos = np.array([model.jnt_qposadr[j] for j in fid])
        self.finger_dof = np.array([model.jnt_dofadr[j] for j in fid])
        by_joint = {int(model.actuator_trnid[a][0]): a for a in range(model.nu)}
        self.act = np.array([by_joint[j] for j in jid])
        self.finger_act = np.array([by_joint[j] for j in fid])
        self.lower = np.array([model.jnt_range[j][0] for j in jid])
        self.upper = np.array([model.jnt_range[j][1] for j in jid])
        self.body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, prefix + "gripper_link")
        # Position-actuator gains, kept to restore torque after set_torque(False).
        acts = np.concatenate([self.act, self.finger_act])
        self.gain = model.actuator_gainprm[acts, 0].copy()
        self.bias = model.actuator_biasprm[acts, :3].copy()


class SimClock:
    """Simulated time of one world, as a duet.clock.Clock: now() is simulated seconds
    (monotonic across episode resets); sleep_until(t) steps physics up to t."""

    def __init__(self, world: SimWorld):
        self.world = world

    def now(self) -> float:
        return self.world.sim_time()

    def sleep_until(self, t: float) -> None:
        self.world.advance_to(t)


class SimWorld:
    """The shared MuJoCo model/data of one sim rig, with its task and puppet leaders."""

    def __init__(self, task: str | Task = "transfer_cube", name: str = "sim", control_rate_hz: float = 50.0):
        import mujoco

        self.name = name
        self.task = make_task(task) if isinstance(task, str) else task
        path = assets_dir() / self.task.xml
        try:
            self.model = mujoco.MjModel.from_xml_path(str(path))
        except Exception as e:  # mujoco raises ValueError with a multi-line message
            raise DuetError(
                f"MuJoCo sim: cannot load {path} ({str(e).splitlines()[0]}); reinstall gym-aloha==0.1.5"
            ) from None
        self.data = mujoco.MjData(self.model)
        self.task.bind(self.model)
        self.arms = {s: ArmBinding(self.model, s) for s in SIDES}
        self.control_rate_hz = float(control_rate_hz)
        self.timestep = float(self.model.opt.timestep)
        self.lock = threading.RLock()
        self.clock = SimClock(self)
        self._time_base = 0.0
        self._episode_start = 0.0
        self.seed: int | None = None
        self.render_quality = "fast"  # sim cameras: "fast" (no shadows/multisampling) or "full"
        self.rest_on_table = True  # objects start resting on the table (False: at the sampled height)
        self.episode = 0  # incremented by every reset(); devices resync their last command
        self.object_poses: dict[str, np.ndarray] = {}
        self.stage = 0
        self.max_stage_reached = 0
        self.steps = 0
        self._torque = dict.fromkeys(SIDES, True)
        self._puppet = {s: start_pose() for s in SIDES}
        self.operator: Operator | None = None
        # real-time mode
        self._users: set[int] = set()
        self._rt_clock: Any = None
        self._rt_thread: threading.Thread | None = None
        self._rt_stop = threading.Event()
        self.rt_lag_resets = 0
        self.reset(seed=0)

    # ------------------------------------------------------------------ time

    def sim_time(self) -> float:
        """Simulated seconds since the world was made (never goes back, even on reset)."""
        return self._time_base + float(self.data.time)

    def episode_time(self) -> float:
        return self.sim_time() - self._episode_start

    @property
    def substeps(self) -> int:
        """Physics steps per control tick."""
        return max(1, round(1.0 / (self.control_rate_hz * self.timestep)))

    def advance_to(self, t: float) -> int:
        """Step physics until sim_time() reaches t (lockstep). Returns the steps taken."""
        if self._rt_thread is not None:
            raise DuetError(
                f"sim world {self.name!r}: runs in real time; give the devices its SimClock for lockstep"
            )
        import mujoco

        n = 0
        with self.lock:
            half = 0.5 * self.timestep
            while self._time_base + self.data.time + half < t:
                mujoco.mj_step(self.model, self.data)
                n += 1
            if n:
                self.steps += n
                self._update_stage()
        return n

    def step(self, n: int = 1) -> None:
        """Step physics n times (lockstep, or before any device runs in real time)."""
        self.advance_to(self.sim_time() + (n - 0.5) * self.timestep)

    # ------------------------------------------------------------------ episodes

    def reset(
        self, seed: int | None = None, object_poses: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """Start an episode: arms at the start pose, objects at seeded random poses (or the
        given ones), stage 0. Simulated time keeps running forward."""
        import mujoco

        with self.lock:
            self._time_base += float(self.data.time)
            mujoco.mj_resetData(self.model, self.data)
            rng = np.random.default_rng(seed)
            poses = object_poses if object_poses is not None else self.task.sample(rng)
            poses = {k: np.asarray(v, dtype=float).copy() for k, v in poses.items()}
            for body, pose in poses.items():
                bid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, body)
                if bid < 0 or self.model.body_jntnum[bid] < 1:
                    raise ConfigError(f"sim task {self.task.name!r}: no free object {body!r} in the scene")
                if self.rest_on_table:
                    # Place the object resting on the table (not dropped from the sampled height),
                    # so the poses the operator plans from are the poses the objects keep.
                    pose[2] = self.table_top - self._lowest_point(bid, pose[3:7])
                adr = self.model.jnt_qposadr[self.model.body_jntadr[bid]]
                self.data.qpos[adr : adr + 7] = pose
            for b in self.arms.values():
                self.data.qpos[b.qpos] = START_ARM_POSE
                f = gripper_to_finger(START_GRIPPER)
                self.data.qpos[b.finger_qpos] = (f, -f)
                self.data.ctrl[b.act] = START_ARM_POSE
                self.data.ctrl[b.finger_act] = (f, -f)
            mujoco.mj_forward(self.model, self.data)
            self.seed = seed
            self.episode += 1
            self.object_poses = {k: v.copy() for k, v in poses.items()}
            self._episode_start = self._time_base
            self.stage = 0
            self.max_stage_reached = 0
            self._puppet = {s: start_pose() for s in SIDES}
            self._update_stage()
        return self.object_poses

    @property
    def table_top(self) -> float:
        """Height of the table surface (m): the top of the table geom's bounding box."""
        import mujoco

        g = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "table")
        if g < 0:
            return 0.0
        b = self.model.geom_bodyid[g]  # a static body placed in the world frame
        return float(self.model.body_pos[b][2]) - self._lowest_point(b, self.model.body_quat[b], top=True)

    def _lowest_point(self, body: int, quat: np.ndarray, top: bool = False) -> float:
        """Lowest point (z, m) of a body's geoms relative to its origin in orientation quat
        (top=True: minus the highest point)."""
        import mujoco

        R9 = np.empty(9)
        mujoco.mju_quat2Mat(R9, np.asarray(quat, dtype=np.float64))
        R = R9.reshape(3, 3)
        low = np.inf
        for g in range(self.model.ngeom):
            if self.model.geom_bodyid[g] != body:
                continue
            Rg = np.empty(9)
            mujoco.mju_quat2Mat(Rg, self.model.geom_quat[g])
            Rw = R @ Rg.reshape(3, 3)
            c, h = self.model.geom_aabb[g][:3], self.model.geom_aabb[g][3:]
            center = R @ self.model.geom_pos[g] + Rw @ c
            z = -center[2] if top else center[2]
            low = min(low, z - float(np.abs(Rw[2]) @ h))
        return 0.0 if not np.isfinite(low) else low

    def contacts(self) -> Contacts:
        with self.lock:
            g = self.data.contact.geom[: self.data.ncon]
            pairs = {(int(min(a, b)), int(max(a, b))) for a, b in g}
        return Contacts(pairs)

    def _update_stage(self) -> None:
        self.stage = self.task.stage(self.contacts())
        self.max_stage_reached = max(self.max_stage_reached, self.stage)

    @property
    def success(self) -> bool:
        return self.max_stage_reached >= self.task.max_stage

    def body_pose(self, body: str) -> np.ndarray:
        """World position and quaternion (w, x, y, z) of a body, shape (7,)."""
        with self.lock:
            b = self.data.body(body)
            return np.concatenate([b.xpos, b.xquat])

    # ------------------------------------------------------------------ arms

    def read_arm(self, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(position (7,), velocity (7,), actuator force (7,), finger slide m) of a model arm."""
        b = self.arms[side]
        with self.lock:
            q = self.data.qpos[b.qpos].copy()
            v = self.data.qvel[b.dof].copy()
            f = float(self.data.qpos[b.finger_qpos[0]])
            fv = float(self.data.qvel[b.finger_dof[0]])
            tau = self.data.actuator_force[np.concatenate([b.act, b.finger_act[:1]])].copy()
        pos = np.concatenate([q, [finger_to_gripper(f)]])
        vel = np.concatenate([v, [fv / (GRIPPER_OPEN_M - GRIPPER_CLOSED_M)]])
        return pos, vel, tau, f

    def command_arm(self, side: str, position: np.ndarray) -> None:
        """Set a model arm's position targets (7 values, gripper normalized)."""
        b = self.arms[side]
        f = gripper_to_finger(position[6])
        with self.lock:
            self.data.ctrl[b.act] = position[:6]
            self.data.ctrl[b.finger_act] = (f, -f)

    def set_arm_torque(self, side: str, enabled: bool) -> None:
        """Torque off: the position actuators exert nothing (joint friction still holds)."""
        b = self.arms[side]
        acts = np.concatenate([b.act, b.finger_act])
        with self.lock:
            if enabled:
                # Hold where the arm is now, not at a stale target.
                self.data.ctrl[b.act] = self.data.qpos[b.qpos]
                self.data.ctrl[b.finger_act] = self.data.qpos[b.finger_qpos]
                self.model.actuator_gainprm[acts, 0] = b.gain
                self.model.actuator_biasprm[acts, :3] = b.bias
            else:
                self.model.actuator_gainprm[acts, 0] = 0.0
                self.model.actuator_biasprm[acts, :3] = 0.0
            self._torque[side] = bool(enabled)

    # ------------------------------------------------------------------ puppet leaders

    def set_operator(self, operator: Operator | None) -> None:
        """Let `operator` move the leader puppets (pose per side at episode time)."""
        with self.lock:
            self.operator = operator

    def set_puppet(self, side: str, position: np.ndarray) -> None:
        """Place a leader puppet by hand (detaches the operator)."""
        with self.lock:
            self.operator = None
            self._puppet[side] = np.asarray(position, dtype=float).copy()

    def puppet_pose(self, side: str) -> np.ndarray:
        with self.lock:
            op, t = self.operator, self.episode_time()
        if op is not None:
            # Outside the world lock: the operator may re-plan here (IK, up to ~0.2 s), and
            # physics, the other arms and the cameras must not wait for it.
            pose = np.asarray(op.pose(side, t), dtype=float)
            with self.lock:
                if self.operator is op:  # not detached or replaced meanwhile
                    self._puppet[side] = pose
        with self.lock:
            return self._puppet[side].copy()

    # ------------------------------------------------------------------ devices, real time

    def attach(self, device: object, clock: Any) -> str:
        """A device connects with its clock; returns the mode ('lockstep' or 'realtime')."""
        with self.lock:
            if isinstance(clock, SimClock):
                if clock.world is not self:
                    raise DuetError(f"sim world {self.name!r}: device got another world's SimClock")
                if self._rt_thread is not None:
                    raise DuetError(
                        f"sim world {self.name!r}: already runs in real time; give every device the same clock"
                    )
                self._users.add(id(device))
                return "lockstep"
            if self._rt_clock is not None and not _same_clock(self._rt_clock, clock):
                raise DuetError(
                    f"sim world {self.name!r}: devices were given different clocks; use one clock per rig"
                )
            if self._users and self._rt_thread is None:
                raise DuetError(
                    f"sim world {self.name!r}: already runs in lockstep; give every device world.clock"
                )
            self._users.add(id(device))
            if self._rt_thread is None:
                self._rt_clock = clock
                self._rt_stop.clear()
                self._rt_thread = threading.Thread(
                    target=self._run_realtime, name=f"sim-physics-{self.name}", daemon=True
                )
                self._rt_thread.start()
            return "realtime"

    def detach(self, device: object) -> None:
        thread = None
        with self.lock:
            self._users.discard(id(device))
            if not self._users and self._rt_thread is not None:
                thread = self._rt_thread
                self._rt_stop.set()
        if thread is not None:
            thread.join(timeout=5.0)
            with self.lock:
                self._rt_thread = None
                self._rt_clock = None

    @property
    def mode(self) -> str:
        return "realtime" if self._rt_thread is not None else "lockstep"

    # Simulated time may fall this far behind the wall clock before it is dropped.
    max_lag_s: float = 0.25

    def _run_realtime(self) -> None:
        import mujoco

        clock = self._rt_clock
        wall0 = clock.now()
        sim0 = self.sim_time()
        period = 1.0 / self.control_rate_hz
        while not self._rt_stop.is_set():
            target = sim0 + (clock.now() - wall0)
            behind = target - self.sim_time()
            if behind > self.max_lag_s:
                # The machine cannot keep up: drop the lost time instead of spiralling.
                self.rt_lag_resets += 1
                sim0 -= behind - self.timestep
                continue
            # Catch up in slices of at most one control tick (a fraction of a millisecond of
            # physics), releasing the lock between slices so the arms and cameras get in
            # even while a long stretch is being made up.
            half, slice_steps = 0.5 * self.timestep, self.substeps
            while not self._rt_stop.is_set():
                with self.lock:
                    k = 0
                    while k < slice_steps and self._time_base + self.data.time + half < target:
                        mujoco.mj_step(self.model, self.data)
                        k += 1
                    if k:
                        self.steps += k
                        self._update_stage()
                if k < slice_steps:
                    break
            # Step in control-tick sized batches; wake early enough to stay within a tick.
            self._rt_stop.wait(min(period / 4, 0.005))

    def health(self) -> dict[str, Any]:
        return {
            "world": self.name,
            "task": self.task.name,
            "mode": self.mode,
            "sim_time_s": round(self.sim_time(), 6),
            "episode_time_s": round(self.episode_time(), 6),
            "physics_steps": int(self.steps),
            "stage": int(self.stage),
            "max_stage_reached": int(self.max_stage_reached),
            "realtime_lag_resets": int(self.rt_lag_resets),
        }

    def close(self) -> None:
        """Forget this world (stops real-time physics); devices must reconnect to a new one."""
        with self.lock:
            self._users.clear()
        self.detach(None)
        with _REGISTRY_LOCK:
            if _WORLDS.get(self.name) is self:
                del _WORLDS[self.name]


def _same_clock(a: Any, b: Any) -> bool:
    """Two clocks tell the same time: the same object, or both the process monotonic clock."""
    from duet.clock import MonotonicClock

    return a is b or (isinstance(a, MonotonicClock) and isinstance(b, MonotonicClock))


# ---------------------------------------------------------------------------- registry

_WORLDS: dict[str, SimWorld] = {}
_REGISTRY_LOCK = threading.Lock()


def world_for(rig: Any, task: str | None = None) -> SimWorld:
    """The one world of a rig (made on first use). `task` defaults to the rig's sim_task
    (transfer_cube when the rig has none); asking for another task than the world's is an
    error (close the world first)."""
    want = task or getattr(rig, "sim_task", "") or "transfer_cube"
    with _REGISTRY_LOCK:
        w = _WORLDS.get(rig.name)
        if w is None:
            w = SimWorld(want, name=rig.name, control_rate_hz=rig.control_rate_hz)
            _WORLDS[rig.name] = w
        elif w.task.name != want:
            raise DuetError(
                f"sim world {rig.name!r} runs task {w.task.name!r}, not {want!r}; close it first (world.close())"
            )
        return w


def get_world(name: str) -> SimWorld | None:
    with _REGISTRY_LOCK:
        return _WORLDS.get(name)
