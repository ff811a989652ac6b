"""What ACT and Diffusion Policy share: the config fields common to both, the image pipeline
(normalize, resize, crop, shift) and the policy wrapper that speaks raw units.

A policy is config / model / normalizer. ``BasePolicy`` owns the three: the model (an
nn.Module working on normalized tensors only) is ``self.model``; the statistics are
``self.normalizer``. Subclasses implement ``compute_loss`` and ``sample_actions`` on normalized
tensors; everything that touches raw units lives here.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from duet.config import field
from duet.data.keys import ACTION, ACTION_IS_PAD, IMAGE_PREFIX, STATE, image_key
from duet.errors import ConfigError, DuetError
from duet.policy.interface import ActionChunk
from duet.policy.normalize import Normalizer


@dataclass
class PolicyConfigBase:
    camera_names: tuple[str, ...] = field(
        (), "cameras the policy looks at, in order (empty: all cameras of the dataset)"
    )
    state_dim: int = field(0, "length of observation.state (0: taken from the dataset)")
    action_dim: int = field(0, "length of an action (0: taken from the dataset)")
    control_dt: float = field(0.02, "seconds between consecutive actions of a chunk (1/50 Hz)")
    image_size: tuple[int, int] | None = field(
        None, "resize camera images to [H, W] before the backbone (null: as recorded)"
    )
    crop_ratio: float = field(
        1.0, "crop this fraction of H and W: random crop when training, center crop at inference (1: no crop)"
    )
    random_shift: int = field(
        0, "training augmentation: shift images by up to this many pixels (replicate padding; 0: off)"
    )
    backbone_norm: Literal["frozen_bn", "bn", "group_norm"] = field(
        "frozen_bn", "ResNet18 normalization layers"
    )
    backbone_width: int = field(64, "ResNet18 base width (64: the standard ResNet18; smaller only for tests)")
    backbone_weights: str | None = field(
        None, "torchvision-format resnet18 weights (.safetensors or .pth) to start from (null: random init)"
    )
    batch_size: int = field(8, "training batch size per process")
    lr: float = field(1e-5, "AdamW learning rate")
    lr_backbone: float = field(1e-5, "AdamW learning rate for the image backbone")
    weight_decay: float = field(1e-4, "AdamW weight decay")
    adam_betas: tuple[float, float] = field((0.9, 0.999), "AdamW betas")
    lr_schedule: Literal["constant", "cosine"] = field(
        "constant", "learning-rate schedule over the training steps"
    )
    warmup_steps: int = field(0, "linear learning-rate warm-up steps")

    def __post_init__(self) -> None:
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ConfigError(f"camera_names {list(self.camera_names)} has duplicates")
        for name in ("state_dim", "action_dim", "random_shift", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.control_dt <= 0:
            raise ConfigError(f"control_dt must be > 0 seconds, got {self.control_dt}")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 8):
            raise ConfigError(f"image_size must be [H, W] with H, W >= 8, got {self.image_size}")
        if not 0.1 <= self.crop_ratio <= 1.0:
            raise ConfigError(f"crop_ratio must be in [0.1, 1], got {self.crop_ratio}")
        if self.backbone_width < 1:
            raise ConfigError(f"backbone_width must be >= 1 (64 is ResNet18), got {self.backbone_width}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in ("lr", "lr_backbone"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not all(0 <= b < 1 for b in self.adam_betas):
            raise ConfigError(f"adam_betas must be in [0, 1), got {list(self.adam_betas)}")

    def require_shapes(self) -> None:
        """Raise unless the data-dependent fields were filled (by the trainer, from the dataset)."""
        if not self.camera_names or self.state_dim < 1 or self.action_dim < 1:
            raise ConfigError(
                "policy config needs camera_names, state_dim and action_dim "
                "(the trainer fills them from the dataset; set them when building by hand)"
            )


class ImagePipeline(nn.Module):
    """uint8 (N, H, W, 3) -> normalized float (N, 3, h, w): ImageNet normalization, resize,
    crop (random in training, centered otherwise) and random shift (training only)."""

    def __init__(self, cfg: PolicyConfigBase):
        super().__init__()
        self.image_size = tuple(cfg.image_size) if cfg.image_size else None
        self.crop_ratio = cfg.crop_ratio
        self.random_shift = cfg.random_shift

    def forward(self, images: torch.Tensor, normalizer: Normalizer) -> torch.Tensor:
        x = normalizer.image(images)
        if self.image_size is not None and tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        h, w = x.shape[-2:]
        if self.crop_ratio < 1.0:
            ch, cw = max(1, round(h * self.crop_ratio)), max(1, round(w * self.crop_ratio))
            if self.training:
                x = _batched_crop(
                    x,
                    ch,
                    cw,
                    torch.randint(0, h - ch + 1, (x.shape[0],)),
                    torch.randint(0, w - cw + 1, (x.shape[0],)),
                )
            else:
                top, left = (h - ch) // 2, (w - cw) // 2
                x = x[..., top : top + ch, left : left + cw]
        if self.training and self.random_shift > 0:
            s = self.random_shift
            h, w = x.shape[-2:]
            x = F.pad(x, (s, s, s, s), mode="replicate")
            x = _batched_crop(
                x,
                h,
                w,
                torch.randint(0, 2 * s + 1, (x.shape[0],)),
                torch.randint(0, 2 * s + 1, (x.shape[0],)),
            )
        return x


def _batched_crop(x: torch.Tensor, h: int, w: int, tops: torch.Tensor, lefts: torch.Tensor) -> torch.Tensor:
    rows = tops.to(x.device)[:, None] + torch.arange(h, device=x.device)[None]  # (N, h)
    cols = lefts.to(x.device)[:, None] + torch.arange(w, device=x.device)[None]  # (N, w)
    n = torch.arange(x.shape[0], device=x.device)[:, None, None]
    # (N, C, H, W) -> (N, H, W, C) so advanced indexing keeps channels last, then back.
    out = x.permute(0, 2, 3, 1)[n, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


class BasePolicy(nn.Module):
    """The Policy protocol over a model + normalizer. Subclasses set ``name`` and implement
    ``compute_loss(nbatch)`` and ``sample_actions(nbatch)`` on normalized tensors:

    nbatch: "state" (B, n_obs, S), "images" (B, n_obs, n_cam, 3, h, w), "action" (B, T, A),
    "action_is_pad" (B, T) — the last two only when training.
    """

    name: str = ""

    def __init__(self, config: PolicyConfigBase, stats: Any):
        super().__init__()
        config.require_shapes()
        self.config = config
        self.normalizer = Normalizer(stats)
        if self.normalizer.state_dim != config.state_dim or self.normalizer.action_dim != config.action_dim:
            raise DuetError(
                f"statistics are for state {self.normalizer.state_dim} / action {self.normalizer.action_dim} dims, "
                f"config says {config.state_dim} / {config.action_dim}: recompute stats for this dataset"
            )
        self.images = ImagePipeline(config)
        self._obs_queue: deque[dict[str, np.ndarray]] = deque(maxlen=self.n_obs_steps)
        self.autocast_dtype: torch.dtype | None = None  # e.g. torch.bfloat16 for inference

    # ------------------------------------------------------------------ Policy protocol fields
    @property
    def n_obs_steps(self) -> int:
        return int(getattr(self.config, "n_obs_steps", 1))

    @property
    def horizon(self) -> int:
        """Actions per chunk returned by predict_chunk (action 0: the last observation's tick)."""
        raise NotImplementedError

    @property
    def sampler_horizon(self) -> int:
        """Actions per training sample (the sampler's horizon; its window starts at the
        first observation step)."""
        raise NotImplementedError

    @property
    def chunk_start(self) -> int:
        """Index, in the model's action window, of the action for the last observation's tick."""
        return 0

    @property
    def n_action_steps(self) -> int:
        """Actions executed per chunk (the config's n_action_steps)."""
        raise NotImplementedError

    @property
    def control_dt(self) -> float:
        return float(self.config.control_dt)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(self.config.camera_names)

    @property
    def action_dim(self) -> int:
        return int(self.config.action_dim)

    @property
    def device(self) -> torch.device:
        return self.normalizer.state_mean.device

    @property
    def model(self) -> nn.Module:
        raise NotImplementedError

    # ------------------------------------------------------------------ to be implemented
    def compute_loss(self, nbatch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample_actions(self, nbatch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def action_times(self) -> np.ndarray:
        """t_rel of each chunk action, seconds after the (last) observation's capture time."""
        return (np.arange(self.horizon) * self.control_dt).astype(np.float64)

    # ------------------------------------------------------------------ raw units <-> model
    def normalize_batch(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Batched raw tensors (sampler keys) -> normalized model inputs."""
        state = torch.as_tensor(batch[STATE], device=self.device).float()
        if state.ndim == 2:  # (B, S): one observation step
            state = state[:, None]
        b, t = state.shape[:2]
        cams = []
        for cam in self.camera_names:
            key = image_key(cam)
            if key not in batch:
                raise DuetError(
                    f"observation lacks {key!r}: the policy was trained on cameras {list(self.camera_names)}"
                )
            img = torch.as_tensor(batch[key], device=self.device)
            if img.ndim == 4:  # (B, H, W, 3)
                img = img[:, None]
            img = img[:, -t:]
            cams.append(self.images(img.reshape(-1, *img.shape[2:]), self.normalizer))
        images = torch.stack(cams, dim=1)  # (B*t, n_cam, 3, h, w)
        out = {"state": self.normalizer.state(state), "images": images.reshape(b, t, *images.shape[1:])}
        if ACTION in batch:
            out["action"] = self.normalizer.action(torch.as_tensor(batch[ACTION], device=self.device).float())
            pad = batch.get(ACTION_IS_PAD)
            out["action_is_pad"] = (
                torch.zeros(out["action"].shape[:2], dtype=torch.bool, device=self.device)
                if pad is None
                else torch.as_tensor(pad, device=self.device).bool()
            )
        return out

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Training: batched raw tensors -> {"loss": scalar, ...}."""
        return self.compute_loss(self.normalize_batch(batch))

    def reset(self) -> None:
        self._obs_queue.clear()

    def _stack_obs(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Accept the n_obs_steps latest observations, or one step (queued; at an episode
        start the first observation is repeated), and return arrays with the n_obs dim."""
        state = np.asarray(obs[STATE])
        if state.ndim == 2 and state.shape[0] >= self.n_obs_steps:
            return {
                k: np.asarray(v)[-self.n_obs_steps :]
                for k, v in obs.items()
                if k == STATE or k.startswith(IMAGE_PREFIX)
            }
        step = {
            k: (np.asarray(v)[-1] if np.asarray(v).ndim == (2 if k == STATE else 4) else np.asarray(v))
            for k, v in obs.items()
            if k == STATE or k.startswith(IMAGE_PREFIX)
        }
        if not self._obs_queue:
            self._obs_queue.extend([step] * self.n_obs_steps)
        else:
            self._obs_queue.append(step)
        return {k: np.stack([o[k] for o in self._obs_queue]) for k in step}

    @torch.no_grad()
    def predict_chunk(self, obs: dict[str, np.ndarray]) -> ActionChunk:
        if STATE not in obs:
            raise DuetError(f"observation lacks {STATE!r}")
        stacked = self._stack_obs(obs)
        batch = {k: torch.from_numpy(np.ascontiguousarray(v))[None] for k, v in stacked.items()}
        was_training = self.training
        self.eval()
        try:
            dev = self.device.type
            ctx = (
                torch.autocast(dev, dtype=self.autocast_dtype)
                if self.autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with ctx:
                nbatch = self.normalize_batch(batch)
                actions = self.sample_actions(nbatch)
            actions = self.normalizer.unaction(actions.float())[0, self.chunk_start :]
        finally:
            self.train(was_training)
        return ActionChunk(actions=actions.cpu().numpy().astype(np.float32), t_rel=self.action_times())

    # ------------------------------------------------------------------ training helpers
    def backbone_parameters(self) -> list[nn.Parameter]:
        return []

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        bb = {id(p) for p in self.backbone_parameters()}
        rest = [p for p in self.model.parameters() if p.requires_grad and id(p) not in bb]
        groups = [{"params": rest, "lr": self.config.lr}]
        bbp = [p for p in self.backbone_parameters() if p.requires_grad]
        if bbp:
            groups.append({"params": bbp, "lr": self.config.lr_backbone})
        return groups

    def after_optimizer_step(self, step: int) -> None:
        """Hook run after every optimizer step (EMA update)."""

    def inference_model_state(self) -> dict[str, torch.Tensor] | None:
        """Extra weights saved beside the model (EMA), or None."""
        return None
