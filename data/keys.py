"""The observation / batch key strings, defined once.

The training sampler (duet.data.sampler), the normalizer and policy wrapper (duet.policy)
and the policy server's observation builder (duet.policy.server.observation) all build or
read dicts with these keys (see duet.policy.interface for shapes and dtypes). This module
sits in data/ because data may not import policy; it imports nothing.
"""

from __future__ import annotations

STATE = "observation.state"  # follower joint positions, rig pair order
IMAGE_PREFIX = "observation.images."  # + camera name
OBS_IS_PAD = "observation.is_pad"  # True where an observation step was repeated (episode start)
ACTION = "action"  # follower commands, rig pair order
ACTION_IS_PAD = "action_is_pad"  # True where an action was repeated (episode end)


def image_key(camera: str) -> str:
    """The key of one camera's images, e.g. "observation.images.top"."""
    return IMAGE_PREFIX + camera
