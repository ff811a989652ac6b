"""Sim arms behind the Arm interface: MuJoCo followers and virtual leader puppets.

- SimFollowerArm drives one arm of the shared world with joint position targets (the
  scene's position actuators); read() reports the simulated joint state, effort as the
  current (mA) the rig model's servos would draw for the simulated actuator forces.
- SimLeaderArm is a "virtual puppet": the leader a person would move. Its pose is set by
  whoever operates it (the scripted operator through world.set_operator, or set_puppet by
  hand); read() returns that pose. Like a real torque-off leader it ignores writes unless
  torque is enabled, in which case a write places the puppet.

Both run the command through duet.hardware.safety.safe_command (limits: the MJCF joint
ranges intersected with the arm model's, max step = the arm model's max velocity / rate),
and stamp every sample with the injected clock (a SimClock in lockstep).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from duet.errors import DuetError
from duet.hardware.interfaces import ArmFeatures, JointState
from duet.hardware.safety import SafetyLimits, UnsafeCommandError, safe_command
from duet.hardware.sim.world import (
    GRIPPER_CLOSED_M,
    GRIPPER_OPEN_M,
    JOINT_NAMES,
    SimWorld,
    gripper_to_finger,
    side_of,
)

# Used when the rig's arm model cannot describe the sim arm (its joints differ).
DEFAULT_MAX_VELOCITY = np.array([4.0, 4.0, 4.0, 6.0, 6.0, 6.0, 6.0])  # rad/s; gripper normalized/s


def _effort_scale(model_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(mA of servo current per unit of simulated actuator force, the servos' stall current in
    mA) per joint. The first is the motor current
    a real arm of the rig's model would draw to exert that force. Arm joints: N*m shared by the
    joint's servos (shadows included), through each servo's torque constant. Gripper: the
    two fingers' slide force (N) becomes servo torque through the linkage ratio (finger travel
    per radian of the gripper servo, from the model's open/closed angles). A real servo draws
    at most its stall current: the sim's position actuators are not force limited, so
    readings are clipped there. Zeros when the rig's arm model does not describe the sim
    arm (no servos to speak for)."""
    zeros = np.zeros(len(JOINT_NAMES))
    if not model_name:
        return zeros, zeros
    from duet.hardware.arm_model import load_arm_model
    from duet.hardware.dynamixel.control_table import MODELS

    m = load_arm_model(model_name)
    if tuple(m.joint_names) != JOINT_NAMES:
        return zeros, zeros
    scale = np.array([1000.0 / (len(j.ids) * MODELS[j.models[0]].torque_per_amp) for j in m.joints])
    g = m.config.gripper
    metres_per_rad = (GRIPPER_OPEN_M - GRIPPER_CLOSED_M) / abs(g.open - g.closed)
    scale[-1] *= 2.0 * metres_per_rad
    stall = np.array([1000.0 * MODELS[j.models[0]].stall_current_a for j in m.joints])
    return scale, stall


def _limits(world: SimWorld, side: str, model_name: str, rate_hz: float) -> SafetyLimits:
    b = world.arms[side]
    lower = np.concatenate([b.lower, [0.0]])
    upper = np.concatenate([b.upper, [1.0]])
    vel = DEFAULT_MAX_VELOCITY
    if model_name:
        from duet.hardware.arm_model import load_arm_model

        m = load_arm_model(model_name)
        if tuple(m.joint_names) == JOINT_NAMES:
            lower = np.maximum(lower, m.lower)
            upper = np.minimum(upper, m.upper)
            vel = m.max_step(1.0)
    return SafetyLimits(lower=lower, upper=upper, max_step=vel / rate_hz)


class _SimArmBase:
    role = ""

    def __init__(self, world: SimWorld, name: str, clock: Any, model: str = "", rate_hz: float | None = None):
        self.world = world
        self.name = name
        self.side = side_of(name)
        self.clock = clock
        rate = float(rate_hz or world.control_rate_hz)
        self.limits = _limits(world, self.side, model, rate)
        self.features = ArmFeatures(
            name=name,
            role=self.role,
            joint_names=JOINT_NAMES,
            lower=self.limits.lower.copy(),
            upper=self.limits.upper.copy(),
            max_step=self.limits.max_step.copy(),
        )
        self._connected = False
        self._mode = ""
        self._last_sent: np.ndarray | None = None
        self._episode = -1  # world episode the last command belongs to
        self._last_stamp = -np.inf
        self._counts = {"reads": 0, "writes": 0, "clamped": 0, "rejected": 0}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        if self._connected:
            return
        self._mode = self.world.attach(self, self.clock)
        self._connected = True
        self._on_connect()

    def _on_connect(self) -> None:
        pass

    def disconnect(self) -> None:
        if not self._connected:
            return
        self._connected = False
        self.world.detach(self)

    def _require(self) -> None:
        if not self._connected:
            raise DuetError(f"sim arm {self.name!r}: not connected; call connect() first")

    def _stamp(self) -> float:
        # One clock for every sample; never step back even if the caller's clock is coarse.
        t = max(float(self.clock.now()), self._last_stamp)
        self._last_stamp = t
        return t

    def _safe(self, position: np.ndarray) -> np.ndarray:
        try:
            sent = safe_command(position, self._last_sent, self.limits, names=JOINT_NAMES)
        except UnsafeCommandError:
            self._counts["rejected"] += 1
            raise
        self._counts["writes"] += 1
        if not np.array_equal(sent, np.asarray(position, dtype=np.float64)):
            self._counts["clamped"] += 1
        return sent

    def health(self) -> dict[str, Any]:
        return {
            "backend": "sim",
            "arm": self.name,
            "role": self.role,
            "connected": self._connected,
            "mode": self._mode,
            **self._counts,
            **{k: v for k, v in self.world.health().items() if k in ("world", "task", "sim_time_s", "stage")},
        }


class SimFollowerArm(_SimArmBase):
    """One follower arm of the shared MuJoCo world, joint position controlled."""

    role = "follower"

    def __init__(self, world: SimWorld, name: str, clock: Any, model: str = "", rate_hz: float | None = None):
        super().__init__(world, name, clock, model, rate_hz)
        self._effort_scale, self._stall_ma = _effort_scale(model)

    def _resync(self) -> None:
        # The next write is step-limited from where the arm is now.
        pos, *_ = self.world.read_arm(self.side)
        self._last_sent = np.clip(pos, self.limits.lower, self.limits.upper)
        self._episode = self.world.episode

    def _on_connect(self) -> None:
        self._torque = True
        self.world.set_arm_torque(self.side, True)
        self._resync()

    def read(self) -> JointState:
        self._require()
        pos, vel, tau, finger = self.world.read_arm(self.side)
        self._counts["reads"] += 1
        return JointState(
            stamp=self._stamp(),
            names=JOINT_NAMES,
            position=pos,
            velocity=vel,
            effort=np.clip(tau * self._effort_scale, -self._stall_ma, self._stall_ma),  # mA, as real servos
            gripper_raw=finger,  # sim: finger slide position (m), not an angle
        )

    def write(self, position: np.ndarray) -> np.ndarray:
        self._require()
        if self._episode != self.world.episode:
            # The world was reset under us: step-limit from where the arm is now.
            self._resync()
        sent = self._safe(position)
        if self._torque:
            self.world.command_arm(self.side, sent)
        self._last_sent = sent
        return sent.copy()

    def set_torque(self, enabled: bool) -> None:
        self._require()
        self._torque = bool(enabled)
        self.world.set_arm_torque(self.side, enabled)
        if enabled:
            self._resync()

    def disconnect(self) -> None:
        if self._connected:
            # Safe state: hold the present pose (the sim arm has nowhere to fall to).
            pos, *_ = self.world.read_arm(self.side)
            self.world.command_arm(self.side, np.clip(pos, self.limits.lower, self.limits.upper))
        super().disconnect()

    def health(self) -> dict[str, Any]:
        h = super().health()
        if self._connected:
            _, _, tau, finger = self.world.read_arm(self.side)
            h["actuator_force"] = [round(float(x), 4) for x in tau]
            h["finger_m"] = round(finger, 5)
            h["torque"] = self._torque
        return h


class SimLeaderArm(_SimArmBase):
    """A virtual leader puppet: read() returns the pose its operator holds it in."""

    role = "leader"

    def _on_connect(self) -> None:
        self._torque = False  # leaders are moved by hand: torque off

    def read(self) -> JointState:
        self._require()
        t0 = self.world.episode_time()
        pos = np.clip(self.world.puppet_pose(self.side), self.limits.lower, self.limits.upper)
        prev = getattr(self, "_prev", None)
        vel = np.zeros(len(JOINT_NAMES))
        if prev is not None and t0 > prev[0]:
            vel = (pos - prev[1]) / (t0 - prev[0])
        self._prev = (t0, pos)
        self._counts["reads"] += 1
        return JointState(
            stamp=self._stamp(),
            names=JOINT_NAMES,
            position=pos,
            velocity=vel,
            effort=np.zeros(len(JOINT_NAMES)),
            gripper_raw=gripper_to_finger(pos[6]),
        )

    def write(self, position: np.ndarray) -> np.ndarray:
        """With torque on, place the puppet (this detaches the operator); with torque off
        the command has no effect, as on a real leader. Returns what was sent."""
        self._require()
        if self._last_sent is None or self._episode != self.world.episode:
            self._last_sent = self.world.puppet_pose(self.side)
            self._episode = self.world.episode
        sent = self._safe(position)
        if self._torque:
            self.world.set_puppet(self.side, sent)
        self._last_sent = sent
        return sent.copy()

    def set_torque(self, enabled: bool) -> None:
        self._require()
        self._torque = bool(enabled)
        self._last_sent = self.world.puppet_pose(self.side)
