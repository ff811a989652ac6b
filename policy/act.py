"""ACT: Action Chunking with Transformers (Zhao et al., "Learning Fine-Grained Bimanual
Manipulation with Low-Cost Hardware", 2023).

- CVAE encoder (training only): a transformer encoder over [CLS, joint state, action_1..k]
  whose CLS output gives the latent's mean and log-variance (a style variable z).
- Policy: ResNet18 features of every camera (1x1-projected to ``hidden_dim`` tokens with 2D
  sinusoidal position embeddings), plus a token for z and one for the joint state, go through a
  transformer encoder; a transformer decoder with ``chunk_size`` learned queries cross-attends
  to them and a linear head gives the action chunk.
- Loss: L1 on the chunk (masked by action_is_pad) + kl_weight * KL(q(z|s,a) || N(0, I)).
- Inference: z = 0, one whole chunk per call. Action i of a chunk is for the tick i control
  periods after the observation (action 0 is for the observation's own tick), so
  ``t_rel[i] = i * control_dt``.

Beyond the paper: an optional learned per-camera embedding is added to the image tokens'
position embeddings (the paper's embeddings are identical for every camera).

The paper's temporal ensembling (w_i = exp(-k i), i = 0 the oldest prediction) is the policy
server's `ensemble` mode (duet.policy.server, ServerConfig.ensemble_k), for every policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from duet.config import field
from duet.errors import ConfigError
from duet.policy.backbone import ResNet18
from duet.policy.base import BasePolicy, PolicyConfigBase


@dataclass
class ACTConfig(PolicyConfigBase):
    chunk_size: int = field(100, "actions per predicted chunk (the paper's k)")
    n_action_steps: int = field(100, "actions executed per chunk without temporal ensembling (<= chunk_size)")
    hidden_dim: int = field(512, "transformer width")
    dim_feedforward: int = field(3200, "transformer feed-forward width")
    n_heads: int = field(8, "attention heads")
    n_encoder_layers: int = field(4, "transformer encoder layers")
    n_decoder_layers: int = field(
        1, "transformer decoder layers (the reference code configured 7 but used only the first)"
    )
    n_vae_encoder_layers: int = field(4, "CVAE encoder layers")
    latent_dim: int = field(32, "CVAE latent (style variable) size")
    use_vae: bool = field(True, "train with the CVAE encoder (false: deterministic, z = 0)")
    kl_weight: float = field(10.0, "weight of the KL term (the paper's beta)")
    dropout: float = field(0.1, "transformer dropout")
    camera_embedding: bool = field(True, "add a learned per-camera embedding to image token positions")

    # Keys an older duet wrote to a checkpoint's config.json, ignored when one is loaded
    # (policy.factory.checkpoint_config). temporal_ensemble_k was never read: the server's
    # ServerConfig.ensemble_k sets the ensembling rate.
    RETIRED_KEYS: ClassVar[tuple[str, ...]] = ("temporal_ensemble_k",)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "chunk_size",
            "n_action_steps",
            "hidden_dim",
            "dim_feedforward",
            "n_heads",
            "n_encoder_layers",
            "n_decoder_layers",
            "latent_dim",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_vae_encoder_layers < 1 and self.use_vae:
            raise ConfigError("n_vae_encoder_layers must be >= 1 when use_vae is true")
        if self.n_action_steps > self.chunk_size:
            raise ConfigError(f"n_action_steps {self.n_action_steps} exceeds chunk_size {self.chunk_size}")
        if self.hidden_dim % self.n_heads or self.hidden_dim % 2:
            raise ConfigError(
                f"hidden_dim {self.hidden_dim} must be even and divisible by n_heads {self.n_heads}"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.kl_weight < 0:
            raise ConfigError(f"kl_weight must be >= 0, got {self.kl_weight}")

    @property
    def n_obs_steps(self) -> int:
        return 1


# ---------------------------------------------------------------------------- building blocks


def sine_position_2d(
    h: int, w: int, dim: int, device: torch.device, temperature: float = 10000.0
) -> torch.Tensor:
    """DETR-style normalized 2D sinusoidal embedding: (h*w, dim), first half y, second half x."""
    npf = dim // 2
    y = torch.arange(1, h + 1, device=device, dtype=torch.float32)[:, None].expand(h, w)
    x = torch.arange(1, w + 1, device=device, dtype=torch.float32)[None, :].expand(h, w)
    scale, eps = 2 * math.pi, 1e-6
    y = y / (h + eps) * scale
    x = x / (w + eps) * scale
    dim_t = temperature ** (2 * (torch.arange(npf, device=device) // 2) / npf)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=-1).flatten(2)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=-1).flatten(2)
    return torch.cat((py, px), dim=-1).reshape(h * w, dim)


def sine_position_1d(n: int, dim: int) -> torch.Tensor:
    """Fixed 1D sinusoid table (n, dim) (Transformer-style)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return table


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer; positions are added to queries and keys only."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        q = x + pos
        x = self.norm1(x + self.drop(self.self_attn(q, q, x, key_padding_mask=pad, need_weights=False)[0]))
        return self.norm2(x + self.drop(self.linear2(self.drop(F.relu(self.linear1(x))))))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d, ff), nn.Linear(ff, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mem: torch.Tensor, mem_pos: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        q = x + query_pos
        x = self.norm1(x + self.drop(self.self_attn(q, q, x, need_weights=False)[0]))
        x = self.norm2(
            x + self.drop(self.cross_attn(x + query_pos, mem + mem_pos, mem, need_weights=False)[0])
        )
        return self.norm3(x + self.drop(self.linear2(self.drop(F.relu(self.linear1(x))))))


# ---------------------------------------------------------------------------- model


class ACTModel(nn.Module):
    """Works on normalized tensors: state (B, S), images (B, n_cam, 3, h, w), actions (B, k, A)."""

    vae_pos: torch.Tensor  # buffer (registered in __init__ when use_vae), declared for the type checker

    def __init__(self, cfg: ACTConfig):
        super().__init__()
        d = cfg.hidden_dim
        self.cfg = cfg
        self.backbone = ResNet18(norm=cfg.backbone_norm, width=cfg.backbone_width)
        self.input_proj = nn.Conv2d(self.backbone.out_channels, d, 1)
        self.state_proj = nn.Linear(cfg.state_dim, d)
        self.latent_out_proj = nn.Linear(cfg.latent_dim, d)
        self.extra_pos = nn.Embedding(2, d)  # positions of the latent and state tokens
        self.camera_embed = nn.Embedding(len(cfg.camera_names), d) if cfg.camera_embedding else None
        self.encoder = nn.ModuleList(
            EncoderLayer(d, cfg.n_heads, cfg.dim_feedforward, cfg.dropout)
            for _ in range(cfg.n_encoder_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(d, cfg.n_heads, cfg.dim_feedforward, cfg.dropout)
            for _ in range(cfg.n_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(d)
        self.query_embed = nn.Embedding(cfg.chunk_size, d)
        self.action_head = nn.Linear(d, cfg.action_dim)
        if cfg.use_vae:
            self.vae_cls = nn.Embedding(1, d)
            self.vae_state_proj = nn.Linear(cfg.state_dim, d)
            self.vae_action_proj = nn.Linear(cfg.action_dim, d)
            self.vae_encoder = nn.ModuleList(
                EncoderLayer(d, cfg.n_heads, cfg.dim_feedforward, cfg.dropout)
                for _ in range(cfg.n_vae_encoder_layers)
            )
            self.vae_latent_proj = nn.Linear(d, 2 * cfg.latent_dim)
            self.register_buffer("vae_pos", sine_position_1d(cfg.chunk_size + 2, d)[None], persistent=False)
        for name, p in self.named_parameters():
            if p.dim() > 1 and not name.startswith("backbone."):
                nn.init.xavier_uniform_(p)

    def encode_latent(self, state: torch.Tensor, actions: torch.Tensor, is_pad: torch.Tensor):
        b = state.shape[0]
        tokens = torch.cat(
            [
                self.vae_cls.weight[None].expand(b, -1, -1),
                self.vae_state_proj(state)[:, None],
                self.vae_action_proj(actions),
            ],
            dim=1,
        )
        pad = torch.cat([torch.zeros(b, 2, dtype=torch.bool, device=state.device), is_pad], dim=1)
        x = tokens
        pos = self.vae_pos[:, : x.shape[1]].to(x.dtype)
        for layer in self.vae_encoder:
            x = layer(x, pos, pad)
        mu, logvar = self.vae_latent_proj(x[:, 0]).chunk(2, dim=-1)
        return mu, logvar

    def forward(
        self,
        state: torch.Tensor,
        images: torch.Tensor,
        actions: torch.Tensor | None = None,
        is_pad: torch.Tensor | None = None,
    ):
        b, n_cam = images.shape[:2]
        d = self.cfg.hidden_dim
        mu = logvar = None
        if self.cfg.use_vae and actions is not None:
            if is_pad is None:
                is_pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
            mu, logvar = self.encode_latent(state, actions, is_pad)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        else:
            z = torch.zeros(b, self.cfg.latent_dim, device=state.device, dtype=state.dtype)

        feats = self.input_proj(self.backbone(images.flatten(0, 1)))  # (B*n_cam, d, fh, fw)
        fh, fw = feats.shape[-2:]
        img_tokens = feats.flatten(2).transpose(1, 2).reshape(b, n_cam * fh * fw, d)
        pos = sine_position_2d(fh, fw, d, feats.device)[None].expand(n_cam, -1, -1)  # (n_cam, fh*fw, d)
        if self.camera_embed is not None:
            pos = pos + self.camera_embed.weight[:, None, :]
        pos = torch.cat([self.extra_pos.weight, pos.reshape(n_cam * fh * fw, d)], dim=0)[None].to(
            img_tokens.dtype
        )

        x = torch.cat([self.latent_out_proj(z)[:, None], self.state_proj(state)[:, None], img_tokens], dim=1)
        for layer in self.encoder:
            x = layer(x, pos)
        q = torch.zeros(b, self.cfg.chunk_size, d, device=x.device, dtype=x.dtype)
        qpos = self.query_embed.weight[None].to(x.dtype)
        for layer in self.decoder:
            q = layer(q, x, pos, qpos)
        return self.action_head(self.decoder_norm(q)), mu, logvar


class ACTPolicy(BasePolicy):
    name = "act"
    config: ACTConfig

    def __init__(self, config: ACTConfig, stats):
        super().__init__(config, stats)
        self.act = ACTModel(config)

    @property
    def model(self) -> ACTModel:
        return self.act

    @property
    def horizon(self) -> int:
        return int(self.config.chunk_size)

    @property
    def sampler_horizon(self) -> int:
        return int(self.config.chunk_size)

    @property
    def n_action_steps(self) -> int:
        return int(self.config.n_action_steps)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.act.backbone.parameters())

    def compute_loss(self, nbatch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        k = self.config.chunk_size
        actions, pad = nbatch["action"][:, :k], nbatch["action_is_pad"][:, :k]
        if actions.shape[1] < k:
            raise ConfigError(
                f"batches hold {actions.shape[1]} actions but chunk_size is {k}: "
                f"sample the dataset with horizon >= {k}"
            )
        pred, mu, logvar = self.act(nbatch["state"][:, -1], nbatch["images"][:, -1], actions, pad)
        valid = (~pad).unsqueeze(-1).to(pred.dtype)
        l1 = ((pred.float() - actions).abs() * valid).sum() / (valid.sum() * actions.shape[-1]).clamp_min(1)
        out = {"l1": l1}
        if mu is not None:
            kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(-1).mean()
            out["kl"] = kl.float()
            out["loss"] = l1 + self.config.kl_weight * out["kl"]
        else:
            out["loss"] = l1
        return out

    def sample_actions(self, nbatch: dict[str, torch.Tensor]) -> torch.Tensor:
        pred, _, _ = self.act(nbatch["state"][:, -1], nbatch["images"][:, -1])
        return pred
