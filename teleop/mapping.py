"""Leader -> follower joint mapping (joint space; the gripper is the last joint).

Arm joints are copied one to one with a per-joint scale and offset (calibration offsets and
signs are already applied inside the arm backends). The gripper follows the ALOHA
convention: the leader's gripper is normalized over its calibrated range and rescaled to
the follower's. Both backends report grippers normalized 0..1 (open = 1), so this reduces
to a per-pair affine map, clipped to 0..1.
"""

from __future__ import annotations

import numpy as np

from duet.errors import ConfigError
from duet.teleop.config import PairMapConfig


class PairMapping:
    """One leader -> one follower. ``n_joints`` counts the gripper."""

    def __init__(self, cfg: PairMapConfig, n_joints: int):
        if n_joints < 1:
            raise ConfigError(f"teleop pair {cfg.leader}->{cfg.follower}: arm has no joints")
        n_arm = n_joints - 1
        self.cfg = cfg
        self.n_joints = n_joints
        self.scale = self._vector(cfg.joint_scale, n_arm, 1.0, "joint_scale")
        self.offset = self._vector(cfg.joint_offset, n_arm, 0.0, "joint_offset")

    def _vector(self, values: list[float], n: int, default: float, what: str) -> np.ndarray:
        if not values:
            return np.full(n, default)
        if len(values) != n:
            raise ConfigError(
                f"teleop pair {self.cfg.leader}->{self.cfg.follower}: {what} has {len(values)} values, "
                f"the arm has {n} joints besides the gripper (give {n} or none)"
            )
        v = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ConfigError(f"teleop pair {self.cfg.leader}->{self.cfg.follower}: {what} must be finite")
        return v

    def __call__(self, leader_position: np.ndarray) -> np.ndarray:
        """Follower target (config order, gripper normalized) for a leader position."""
        q = np.asarray(leader_position, dtype=np.float64)
        if q.shape != (self.n_joints,):
            raise ValueError(
                f"{self.cfg.leader}: expected {self.n_joints} joint positions, got shape {q.shape}"
            )
        out = np.empty(self.n_joints)
        out[:-1] = self.offset + self.scale * q[:-1]
        out[-1] = np.clip(self.cfg.gripper_offset + self.cfg.gripper_scale * q[-1], 0.0, 1.0)
        return out

    def gripper(self, leader_gripper: float) -> float:
        return float(np.clip(self.cfg.gripper_offset + self.cfg.gripper_scale * leader_gripper, 0.0, 1.0))
