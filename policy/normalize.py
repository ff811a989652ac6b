"""Normalization: statistics from the dataset, applied by the policy wrapper (models never normalize).

- state and action: ``(x - mean) / std`` with per-dimension mean/std from the training data
  (std floored at ``min_std`` so a joint that never moved does not blow up).
- images: uint8 (..., H, W, 3) -> float in [0, 1] -> ImageNet mean/std, channels first.

Statistics travel with the weights as ``stats.safetensors`` (keys ``<feature>.<stat>``, e.g.
``observation.state.mean``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from duet.data.keys import ACTION, ACTION_IS_PAD, STATE
from duet.errors import DuetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Stats = dict[str, dict[str, np.ndarray]]


def compute_stats(
    dataset: Sequence[Mapping[str, Any]] | Any, max_items: int | None = 2000, seed: int = 0
) -> Stats:
    """Mean/std/min/max of observation.state and action over (a random subset of) a map-style
    dataset whose items hold the policy batch keys. Padded actions are excluded."""
    n = len(dataset)
    if n == 0:
        raise DuetError("dataset is empty: record some episodes before training")
    idx = np.arange(n)
    if max_items is not None and n > max_items:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_items, replace=False))
    states, actions = [], []
    for i in idx:
        item = dataset[int(i)]
        s = np.asarray(item[STATE], dtype=np.float64)
        states.append(s.reshape(-1, s.shape[-1]) if s.ndim > 1 else s[None])
        a = np.asarray(item[ACTION], dtype=np.float64)
        pad = np.asarray(item.get(ACTION_IS_PAD, np.zeros(len(a), bool)), dtype=bool)
        actions.append(a[~pad])
    return {STATE: _moments(np.concatenate(states)), ACTION: _moments(np.concatenate(actions))}


def _moments(x: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "mean": x.mean(0).astype(np.float32),
        "std": x.std(0).astype(np.float32),
        "min": x.min(0).astype(np.float32),
        "max": x.max(0).astype(np.float32),
    }


def coerce_stats(stats: Mapping[str, Any]) -> Stats:
    """Accept {feature: {stat: array-like}} (also a flat {"feature.stat": array}) and return
    float32 numpy arrays; mean and std are required for state and action."""
    out: Stats = {}
    flat = {k: v for k, v in stats.items() if not isinstance(v, Mapping)}
    nested = {k: v for k, v in stats.items() if isinstance(v, Mapping)}
    for k, v in flat.items():
        feat, _, stat = k.rpartition(".")
        nested.setdefault(feat, {})
        nested[feat] = {**nested[feat], stat: v}
    for feat in (STATE, ACTION):
        if feat not in nested:
            raise DuetError(f"normalization statistics lack {feat!r}: recompute them from the dataset")
        d = {}
        for stat, v in nested[feat].items():
            d[stat] = np.asarray(
                v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=np.float32
            ).reshape(-1)
        for req in ("mean", "std"):
            if req not in d:
                raise DuetError(
                    f"normalization statistics lack {feat}.{req}: recompute them from the dataset"
                )
        out[feat] = d
    return out


class Normalizer(nn.Module):
    """Holds the statistics as buffers (so they move with .to(device) and live in the state
    dict) and maps between raw units and the model's normalized space."""

    # Buffers (registered in __init__), declared for the type checker.
    state_mean: torch.Tensor
    state_std: torch.Tensor
    action_mean: torch.Tensor
    action_std: torch.Tensor
    image_mean: torch.Tensor
    image_std: torch.Tensor

    def __init__(self, stats: Mapping[str, Any], min_std: float = 1e-2):
        super().__init__()
        st = coerce_stats(stats)
        self.min_std = float(min_std)
        self.register_buffer("state_mean", torch.as_tensor(st[STATE]["mean"]))
        self.register_buffer("state_std", torch.as_tensor(st[STATE]["std"]).clamp_min(min_std))
        self.register_buffer("action_mean", torch.as_tensor(st[ACTION]["mean"]))
        self.register_buffer("action_std", torch.as_tensor(st[ACTION]["std"]).clamp_min(min_std))
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1))
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).reshape(3, 1, 1))
        self.raw_stats = st

    @property
    def state_dim(self) -> int:
        return int(self.state_mean.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.action_mean.shape[0])

    def state(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.state_mean) / self.state_std

    def action(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.action_mean) / self.action_std

    def unaction(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.action_std + self.action_mean

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (..., H, W, 3) -> float (..., 3, H, W), ImageNet-normalized."""
        if x.shape[-1] != 3:
            raise DuetError(f"images must be (..., H, W, 3) uint8, got shape {tuple(x.shape)}")
        x = x.movedim(-1, -3).float().div_(255.0)
        return (x - self.image_mean) / self.image_std


def save_stats(path: str | Path, stats: Mapping[str, Any]) -> None:
    from safetensors.numpy import save_file

    st = coerce_stats(stats)
    flat = {f"{feat}.{k}": np.ascontiguousarray(v) for feat, d in st.items() for k, v in d.items()}
    save_file(flat, str(path))


def load_stats(path: str | Path) -> Stats:
    from safetensors.numpy import load_file

    return coerce_stats(load_file(str(path)))
