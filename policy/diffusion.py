"""Diffusion Policy, CNN variant (Chi et al., "Diffusion Policy: Visuomotor Policy Learning via
Action Diffusion", 2023).

- Observation encoder: one ResNet18 per camera (GroupNorm), spatial softmax keypoints and a
  linear layer; their features and the joint state of the ``n_obs_steps`` latest observations
  form the global conditioning vector.
- Noise model: a 1D temporal U-Net over the action sequence (channels = action dims) whose
  residual blocks are FiLM-conditioned on [diffusion-step embedding, observation features].
- Training: DDPM with ``num_train_timesteps`` (100) noise levels, squared-cosine schedule,
  epsilon prediction, MSE loss. An EMA of the weights (power-law warm-up) is kept; it is what
  inference uses and what is saved as ``ema.safetensors``.
- Sampling: DDIM (deterministic, eta = 0) in ``num_inference_steps`` steps with trailing
  timestep spacing (the first step starts at the highest noise level even with 3 steps).

Time convention: the sampler gives the observations of ticks t-n_obs+1 .. t and the actions
of ticks t-n_obs+1 .. t-n_obs+horizon (the action window starts with the first observation, as
in the reference implementation; the network denoises all ``horizon`` actions). A predicted
chunk starts at the last observation step: ``predict_chunk`` drops the n_obs-1 actions for
past ticks and returns ``horizon - n_obs_steps + 1`` actions (the policy's ``horizon``
attribute) with ``t_rel[i] = i * control_dt``, action 0 being for the last observation's own
tick, exactly as for ACT. In receding-horizon mode the server executes ``n_action_steps`` of
them and then asks again.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from duet.config import field
from duet.errors import ConfigError, DuetError
from duet.policy.backbone import ResNet18
from duet.policy.base import BasePolicy, PolicyConfigBase


@dataclass
class DiffusionConfig(PolicyConfigBase):
    n_obs_steps: int = field(2, "observations the policy conditions on (the latest ones)")
    horizon: int = field(16, "actions per predicted chunk (divisible by 2**(len(down_dims)-1))")
    n_action_steps: int = field(
        8, "actions executed per chunk before predicting again (<= horizon - n_obs_steps + 1)"
    )
    down_dims: tuple[int, ...] = field((512, 1024, 2048), "U-Net channels per level")
    kernel_size: int = field(5, "U-Net temporal convolution kernel size")
    n_groups: int = field(8, "GroupNorm groups in the U-Net")
    diffusion_step_embed_dim: int = field(128, "size of the diffusion-step embedding")
    film_scale: bool = field(True, "FiLM predicts scale and bias (false: bias only)")
    spatial_softmax_keypoints: int = field(32, "keypoints per camera from the spatial softmax")
    image_feature_dim: int = field(64, "per-camera feature size after the keypoint projection")
    num_train_timesteps: int = field(100, "DDPM noise levels")
    beta_schedule: Literal["squaredcos_cap_v2", "linear"] = field("squaredcos_cap_v2", "noise schedule")
    beta_start: float = field(1e-4, "first beta of the linear schedule")
    beta_end: float = field(0.02, "last beta of the linear schedule")
    prediction_type: Literal["epsilon", "sample"] = field("epsilon", "what the network predicts")
    num_inference_steps: int = field(10, "DDIM sampling steps (3-16 are practical)")
    clip_sample: float | None = field(
        4.0, "clip the predicted clean actions to +-this (normalized units, std); null: off"
    )
    mask_padding_loss: bool = field(False, "exclude padded actions (past an episode's end) from the loss")
    use_ema: bool = field(True, "keep an exponential moving average of the weights for inference")
    ema_power: float = field(0.75, "EMA warm-up power: decay = 1 - (1 + step)^-power")
    ema_max_decay: float = field(0.9999, "EMA decay ceiling")
    # Paper defaults for the optimizer and images, replacing the shared (ACT) defaults.
    backbone_norm: Literal["frozen_bn", "bn", "group_norm"] = field(
        "group_norm", "ResNet18 normalization layers"
    )
    crop_ratio: float = field(
        0.9, "crop this fraction of H and W: random crop when training, center crop at inference (1: no crop)"
    )
    batch_size: int = field(64, "training batch size per process")
    lr: float = field(1e-4, "AdamW learning rate")
    lr_backbone: float = field(1e-4, "AdamW learning rate for the image backbones")
    weight_decay: float = field(1e-6, "AdamW weight decay")
    adam_betas: tuple[float, float] = field((0.95, 0.999), "AdamW betas")
    lr_schedule: Literal["constant", "cosine"] = field(
        "cosine", "learning-rate schedule over the training steps"
    )
    warmup_steps: int = field(500, "linear learning-rate warm-up steps")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "n_obs_steps",
            "horizon",
            "n_action_steps",
            "kernel_size",
            "n_groups",
            "diffusion_step_embed_dim",
            "spatial_softmax_keypoints",
            "image_feature_dim",
            "num_train_timesteps",
            "num_inference_steps",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.down_dims or min(self.down_dims) < 1:
            raise ConfigError(
                f"down_dims must be a non-empty list of positive ints, got {list(self.down_dims)}"
            )
        factor = 2 ** (len(self.down_dims) - 1)
        if self.horizon % factor:
            raise ConfigError(f"horizon {self.horizon} must be divisible by {factor} (2**(len(down_dims)-1))")
        if self.n_action_steps > self.horizon - self.n_obs_steps + 1:
            raise ConfigError(
                f"n_action_steps {self.n_action_steps} exceeds horizon - n_obs_steps + 1 = "
                f"{self.horizon - self.n_obs_steps + 1} (actions from the last observation on)"
            )
        if self.num_inference_steps > self.num_train_timesteps:
            raise ConfigError(
                f"num_inference_steps {self.num_inference_steps} exceeds num_train_timesteps "
                f"{self.num_train_timesteps}"
            )
        for d in self.down_dims:
            if d % self.n_groups:
                raise ConfigError(f"down_dims entry {d} is not divisible by n_groups {self.n_groups}")
        if self.clip_sample is not None and self.clip_sample <= 0:
            raise ConfigError(f"clip_sample must be > 0 or null, got {self.clip_sample}")
        if not 0 < self.ema_max_decay < 1 or self.ema_power <= 0:
            raise ConfigError("ema_max_decay must be in (0, 1) and ema_power > 0")


# ---------------------------------------------------------------------------- noise schedule


class NoiseSchedule(nn.Module):
    """DDPM forward process and DDIM (eta = 0) reverse steps."""

    alphas_cumprod: torch.Tensor  # buffer (registered in __init__), declared for the type checker

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        t = cfg.num_train_timesteps
        if cfg.beta_schedule == "squaredcos_cap_v2":

            def abar(x: float) -> float:
                return math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2

            betas = torch.tensor(
                [min(1 - abar((i + 1) / t) / abar(i / t), 0.999) for i in range(t)], dtype=torch.float64
            )
        else:
            betas = torch.linspace(cfg.beta_start, cfg.beta_end, t, dtype=torch.float64)
        self.num_train_timesteps = t
        self.prediction_type = cfg.prediction_type
        self.clip = cfg.clip_sample
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(), persistent=False)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod[t].reshape(-1, *([1] * (x0.ndim - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def inference_timesteps(self, steps: int) -> list[int]:
        """Trailing spacing: e.g. 100 levels, 3 steps -> [99, 66, 32]."""
        ratio = self.num_train_timesteps / steps
        return [int(round(self.num_train_timesteps - i * ratio)) - 1 for i in range(steps)]

    def ddim_step(self, model_out: torch.Tensor, t: int, t_prev: int, x: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod[t]
        ab_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else torch.ones((), device=x.device)
        if self.prediction_type == "epsilon":
            x0 = (x - (1 - ab).sqrt() * model_out) / ab.sqrt()
        else:
            x0 = model_out
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps


# ---------------------------------------------------------------------------- networks


class SpatialSoftmax(nn.Module):
    """Feature map (B, C, H, W) -> expected image coordinates of K learned keypoints (B, 2K)."""

    def __init__(self, channels: int, keypoints: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        b, k, h, w = x.shape
        if h * w == 1:
            raise DuetError(
                "images this small give a 1x1 feature map: the spatial softmax has nothing to "
                "locate (and the backbone gets no gradient); use images (or crops) of >= 64 px"
            )
        attn = x.flatten(2).float().softmax(-1)  # (B, K, H*W)
        ys = torch.linspace(-1, 1, h, device=x.device)
        xs = torch.linspace(-1, 1, w, device=x.device)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(h * w, 2)
        return (attn @ grid).reshape(b, 2 * k)


class ImageEncoder(nn.Module):
    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.backbone = ResNet18(norm=cfg.backbone_norm, width=cfg.backbone_width)
        self.pool = SpatialSoftmax(self.backbone.out_channels, cfg.spatial_softmax_keypoints)
        self.out = nn.Linear(2 * cfg.spatial_softmax_keypoints, cfg.image_feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.out(self.pool(self.backbone(x))))


class Conv1dBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, groups: int):
        super().__init__(nn.Conv1d(cin, cout, k, padding=k // 2), nn.GroupNorm(groups, cout), nn.Mish())


class CondResBlock1d(nn.Module):
    """Two conv blocks; FiLM (per-channel scale and bias from the conditioning) after the first."""

    def __init__(self, cin: int, cout: int, cond_dim: int, k: int, groups: int, film_scale: bool):
        super().__init__()
        self.block1 = Conv1dBlock(cin, cout, k, groups)
        self.block2 = Conv1dBlock(cout, cout, k, groups)
        self.film_scale = film_scale
        self.cond = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, cout * 2 if film_scale else cout))
        self.residual = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.block1(x)
        c = self.cond(cond)[..., None]
        if self.film_scale:
            scale, bias = c.chunk(2, dim=1)
            out = out * scale + bias
        else:
            out = out + c
        return self.block2(out) + self.residual(x)


class StepEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / max(half - 1, 1))
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([args.sin(), args.cos()], dim=-1)
        if self.dim % 2:
            emb = F.pad(emb, (0, 1))
        return self.mlp(emb)


class ConditionalUnet1D(nn.Module):
    """Noise model: (B, T, A) noisy actions, (B,) timesteps, (B, G) conditioning -> (B, T, A)."""

    def __init__(self, action_dim: int, global_cond_dim: int, cfg: DiffusionConfig):
        super().__init__()
        k, g, fs = cfg.kernel_size, cfg.n_groups, cfg.film_scale
        self.step_embed = StepEmbedding(cfg.diffusion_step_embed_dim)
        cond_dim = cfg.diffusion_step_embed_dim + global_cond_dim
        dims = [action_dim, *cfg.down_dims]
        pairs = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        CondResBlock1d(cin, cout, cond_dim, k, g, fs),
                        CondResBlock1d(cout, cout, cond_dim, k, g, fs),
                        nn.Conv1d(cout, cout, 3, 2, 1) if not last else nn.Identity(),
                    ]
                )
            )
        mid = cfg.down_dims[-1]
        self.mid = nn.ModuleList(
            [CondResBlock1d(mid, mid, cond_dim, k, g, fs), CondResBlock1d(mid, mid, cond_dim, k, g, fs)]
        )
        self.up = nn.ModuleList()
        for cin, cout in reversed(pairs[1:]):  # one upsampling per downsampling
            self.up.append(
                nn.ModuleList(
                    [
                        CondResBlock1d(cout * 2, cin, cond_dim, k, g, fs),
                        CondResBlock1d(cin, cin, cond_dim, k, g, fs),
                        nn.ConvTranspose1d(cin, cin, 4, 2, 1),
                    ]
                )
            )
        start = cfg.down_dims[0]
        self.final = nn.Sequential(Conv1dBlock(start, start, k, g), nn.Conv1d(start, action_dim, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        cond = torch.cat([self.step_embed(t).to(global_cond.dtype), global_cond], dim=-1)
        x = x.transpose(1, 2)
        skips = []
        for res1, res2, down in cast(Iterable[nn.ModuleList], self.down):
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = down(x)
        for res in self.mid:
            x = res(x, cond)
        for res1, res2, up in cast(Iterable[nn.ModuleList], self.up):
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(res2(res1(x, cond), cond))
        return self.final(x).transpose(1, 2)


class DiffusionModel(nn.Module):
    """Observation encoders + U-Net; works on normalized tensors."""

    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        n_cam = len(cfg.camera_names)
        self.encoders = nn.ModuleList(ImageEncoder(cfg) for _ in range(n_cam))
        cond_dim = cfg.n_obs_steps * (cfg.state_dim + n_cam * cfg.image_feature_dim)
        self.unet = ConditionalUnet1D(cfg.action_dim, cond_dim, cfg)

    def global_cond(self, state: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """state (B, n_obs, S), images (B, n_obs, n_cam, 3, h, w) -> (B, n_obs * (S + n_cam * F))."""
        b, t = state.shape[:2]
        feats = [enc(images[:, :, i].flatten(0, 1)).reshape(b, t, -1) for i, enc in enumerate(self.encoders)]
        return torch.cat([state.to(feats[0].dtype), *feats], dim=-1).flatten(1)

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(noisy, t, cond)


class DiffusionPolicy(BasePolicy):
    name = "diffusion"
    config: DiffusionConfig

    def __init__(self, config: DiffusionConfig, stats):
        super().__init__(config, stats)
        self.diffusion = DiffusionModel(config)
        self.schedule = NoiseSchedule(config)
        self.ema: DiffusionModel | None = None
        if config.use_ema:
            self.ema = copy.deepcopy(self.diffusion).requires_grad_(False).eval()

    @property
    def model(self) -> DiffusionModel:
        return self.diffusion

    @property
    def horizon(self) -> int:
        """Actions per returned chunk: from the last observation's tick on."""
        return int(self.config.horizon) - self.n_obs_steps + 1

    @property
    def sampler_horizon(self) -> int:
        return int(self.config.horizon)

    @property
    def n_action_steps(self) -> int:
        return int(self.config.n_action_steps)

    @property
    def chunk_start(self) -> int:
        return self.n_obs_steps - 1

    def train(self, mode: bool = True):
        super().train(mode)
        if self.ema is not None:
            self.ema.eval()
        return self

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for enc in self.diffusion.encoders for p in enc.get_submodule("backbone").parameters()]

    def _obs(self, nbatch: dict[str, torch.Tensor]):
        n = self.config.n_obs_steps
        state, images = nbatch["state"][:, -n:], nbatch["images"][:, -n:]
        if state.shape[1] < n:
            raise ConfigError(
                f"batches hold {state.shape[1]} observation steps but n_obs_steps is {n}: "
                f"sample the dataset with n_obs_steps={n}"
            )
        return state, images

    def compute_loss(self, nbatch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.config.horizon
        actions, pad = nbatch["action"][:, :h], nbatch["action_is_pad"][:, :h]
        if actions.shape[1] < h:
            raise ConfigError(
                f"batches hold {actions.shape[1]} actions but horizon is {h}: "
                f"sample the dataset with horizon >= {h}"
            )
        cond = self.diffusion.global_cond(*self._obs(nbatch))
        noise = torch.randn_like(actions)
        t = torch.randint(0, self.schedule.num_train_timesteps, (actions.shape[0],), device=actions.device)
        pred = self.diffusion(self.schedule.add_noise(actions, noise, t), t, cond).float()
        target = noise if self.config.prediction_type == "epsilon" else actions
        err = (pred - target).pow(2)
        if self.config.mask_padding_loss:
            valid = (~pad).unsqueeze(-1).to(err.dtype)
            loss = (err * valid).sum() / (valid.sum() * err.shape[-1]).clamp_min(1)
        else:
            loss = err.mean()
        return {"loss": loss, "mse": loss.detach()}

    def sample_actions(
        self,
        nbatch: dict[str, torch.Tensor],
        steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        net = self.ema if self.ema is not None else self.diffusion
        state, images = self._obs(nbatch)
        cond = net.global_cond(state, images)
        b = state.shape[0]
        x = torch.randn(
            b, self.config.horizon, self.config.action_dim, device=state.device, generator=generator
        )
        ts = self.schedule.inference_timesteps(steps or self.config.num_inference_steps)
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            out = net(x.to(cond.dtype), torch.full((b,), t, device=x.device, dtype=torch.long), cond).float()
            x = self.schedule.ddim_step(out, t, t_prev, x)
        return x

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        if self.ema is None:
            return
        decay = min(self.config.ema_max_decay, max(0.0, 1 - (1 + step) ** -self.config.ema_power))
        for pe, p in zip(self.ema.parameters(), self.diffusion.parameters()):
            pe.lerp_(p.detach(), 1 - decay)
        for be, b in zip(self.ema.buffers(), self.diffusion.buffers()):
            be.copy_(b)

    def inference_model_state(self) -> dict[str, torch.Tensor] | None:
        return None if self.ema is None else self.ema.state_dict()
