"""The one policy interface the trainer, the policy server and evaluation use.

A policy is config / model / normalizer: the model never normalizes; the policy wraps
model + normalizer statistics and speaks in raw units (radians, normalized gripper,
uint8 images). Observation and batch keys follow the dataset sampler (the strings are
defined once, in duet.data.keys):

    "observation.state"          float32 (n_obs, S)   follower joint positions, rig pair order
    "observation.images.<cam>"   uint8   (n_obs, H, W, 3)
    "action"                     float32 (horizon, A) follower commands, rig pair order
    "action_is_pad"              bool    (horizon,)
    "observation.is_pad"         bool    (n_obs,)

(batched with a leading batch dimension for training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ActionChunk:
    actions: np.ndarray  # (horizon, A) float32, raw units
    t_rel: np.ndarray  # (horizon,) seconds after the observation's capture time at which each action is due


@runtime_checkable
class Policy(Protocol):
    # Read-only: an attribute or a property satisfies each.
    @property
    def n_obs_steps(self) -> int:  # observations the policy consumes (1 for ACT, 2 for Diffusion Policy)
        ...

    @property
    def horizon(self) -> int:  # actions per predicted chunk
        ...

    @property
    def n_action_steps(self) -> int:  # actions to execute from each chunk in receding-horizon mode
        ...

    @property
    def control_dt(self) -> float:  # seconds between consecutive actions of a chunk (1/50)
        ...

    @property
    def camera_names(self) -> tuple[str, ...]: ...

    @property
    def action_dim(self) -> int: ...

    def reset(self) -> None:
        """Forget history (observation queue, ensembling buffers) at an episode start."""

    def predict_chunk(self, obs: dict[str, np.ndarray]) -> ActionChunk:
        """obs holds the n_obs_steps latest observations, keys as above without the batch
        dim (a single step may omit the n_obs dim). Returns the whole chunk."""

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Training: a batched dict of torch tensors -> {"loss": scalar tensor, ...}."""
