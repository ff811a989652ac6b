"""Build policies by name, presets, and ``load_policy(dir, device)`` for inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from duet.config import ConfigError, apply_overrides, from_dict
from duet.policy.act import ACTConfig, ACTPolicy
from duet.policy.base import BasePolicy, PolicyConfigBase
from duet.policy.checkpoint import (
    EMA,
    MODEL,
    STATS,
    CheckpointError,
    load_state_checked,
    load_tensors,
    read_meta,
)
from duet.policy.diffusion import DiffusionConfig, DiffusionPolicy

POLICIES: dict[str, tuple[type[PolicyConfigBase], type[BasePolicy]]] = {
    "act": (ACTConfig, ACTPolicy),
    "diffusion": (DiffusionConfig, DiffusionPolicy),
}

# Presets are override lists on top of the config defaults (which are the papers' values).
PRESETS: dict[str, dict[str, list[str]]] = {
    "act": {
        "paper": [],
        # CPU-sized: for laptops and training benchmarks. Images are resized to 96x128.
        "tiny": [
            "hidden_dim=64",
            "dim_feedforward=256",
            "n_heads=4",
            "n_encoder_layers=1",
            "n_decoder_layers=1",
            "n_vae_encoder_layers=1",
            "chunk_size=20",
            "n_action_steps=20",
            "image_size=[96, 128]",
            "backbone_norm=group_norm",
            "lr=1.0e-4",
            "lr_backbone=1.0e-4",
        ],
        # The sim benchmark without a GPU, and `make demo` (3000 steps there): ResNet18 at half
        # width, the paper's 100-action chunks, images as recorded (collect them at 120x160).
        # About 100 samples/s on 2 CPU cores;
        # 30000 steps (41 min there) reached 100% transfer_cube success, temporally ensembled
        # (bench/bench_sim_success.py --full --steps 30000).
        "small": [
            "hidden_dim=128",
            "dim_feedforward=512",
            "n_heads=4",
            "n_encoder_layers=1",
            "n_decoder_layers=1",
            "n_vae_encoder_layers=1",
            "backbone_width=32",
            "image_size=null",
            "backbone_norm=group_norm",
            "lr=1.0e-4",
            "lr_backbone=1.0e-4",
        ],
        # Smoke tests and CI only (a narrow ResNet): trains in seconds, not a useful model.
        "micro": [
            "hidden_dim=32",
            "dim_feedforward=64",
            "n_heads=2",
            "n_encoder_layers=1",
            "n_decoder_layers=1",
            "n_vae_encoder_layers=1",
            "chunk_size=10",
            "n_action_steps=10",
            "backbone_width=8",
            "backbone_norm=group_norm",
            "dropout=0.0",
            "kl_weight=1.0",
            "lr=1.0e-3",
            "lr_backbone=1.0e-3",
            "batch_size=16",
        ],
    },
    "diffusion": {
        "paper": [],
        "tiny": [
            "down_dims=[64, 128]",
            "diffusion_step_embed_dim=32",
            "spatial_softmax_keypoints=16",
            "image_feature_dim=32",
            "horizon=16",
            "n_action_steps=8",
            "image_size=[96, 128]",
            "batch_size=16",
            "warmup_steps=50",
            "num_inference_steps=8",
        ],
        "micro": [
            "backbone_width=8",
            "down_dims=[32, 64]",
            "diffusion_step_embed_dim=16",
            "spatial_softmax_keypoints=8",
            "image_feature_dim=16",
            "horizon=8",
            "n_action_steps=4",
            "crop_ratio=1.0",
            "batch_size=16",
            "lr=1.0e-3",
            "lr_backbone=1.0e-3",
            "lr_schedule=constant",
            "warmup_steps=10",
            "num_inference_steps=4",
        ],
    },
}


def policy_names() -> tuple[str, ...]:
    return tuple(POLICIES)


def config_class(name: str) -> type[PolicyConfigBase]:
    if name not in POLICIES:
        raise ConfigError(f"unknown policy {name!r} (choose one of: {', '.join(POLICIES)})")
    return POLICIES[name][0]


def checkpoint_config(name: str, data: dict[str, Any], where: str) -> PolicyConfigBase:
    """The config of a checkpoint's config.json: keys the config class has retired since
    (its RETIRED_KEYS) are dropped, every other key is checked as usual."""
    cls = config_class(name)
    retired = getattr(cls, "RETIRED_KEYS", ())
    return from_dict(cls, {k: v for k, v in (data or {}).items() if k not in retired}, where=where)


def make_config(
    name: str,
    preset: str = "paper",
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> PolicyConfigBase:
    """Config for policy ``name``: defaults, then the preset, then ``base`` values, then overrides."""
    cls = config_class(name)
    if preset not in PRESETS[name]:
        raise ConfigError(f"unknown preset {preset!r} for {name} (choose one of: {', '.join(PRESETS[name])})")
    data = apply_overrides(dict(base or {}), PRESETS[name][preset], cls)
    data = apply_overrides(data, list(overrides), cls)
    return from_dict(cls, data, where=f"{name} config")


def make_policy(name: str, config: PolicyConfigBase, stats: Any) -> BasePolicy:
    cls = POLICIES[name][1] if name in POLICIES else None
    if cls is None:
        raise ConfigError(f"unknown policy {name!r} (choose one of: {', '.join(POLICIES)})")
    return cls(config, stats)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available here (use device=cpu or auto)")
    return dev


def policy_from_checkpoint(directory: str | Path, verify: bool = True) -> tuple[BasePolicy, dict[str, Any]]:
    """Rebuild the policy of a checkpoint on the CPU, with weights, EMA and stats checked."""
    from duet.policy.normalize import coerce_stats

    d = Path(directory)
    meta = read_meta(d, verify=verify)
    name = meta.get("policy")
    if name not in POLICIES:
        raise CheckpointError(
            f"checkpoint {d}: config.json names unknown policy {name!r}; "
            f"this duet knows {', '.join(POLICIES)}"
        )
    try:
        cfg = checkpoint_config(name, meta.get("config") or {}, where=f"checkpoint {d}: config.json")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    try:
        stats = coerce_stats(load_tensors(d / STATS, d))
        policy = make_policy(name, cfg, stats)
    except CheckpointError:
        raise
    except Exception as e:  # DuetError for stats/shape mismatches
        raise CheckpointError(f"checkpoint {d}: {STATS} does not fit config.json ({e})") from None
    load_state_checked(policy.model, load_tensors(d / MODEL, d), MODEL, d)
    ema = getattr(policy, "ema", None)
    if ema is not None:
        if EMA in meta["files"]:
            load_state_checked(ema, load_tensors(d / EMA, d), EMA, d)
        else:
            ema.load_state_dict(policy.model.state_dict())
    return policy, meta


def load_policy(
    directory: str | Path,
    device: str | torch.device = "auto",
    *,
    bf16: bool = False,
    channels_last: bool = False,
) -> BasePolicy:
    """Load a checkpoint for inference (see for_inference)."""
    policy, _ = policy_from_checkpoint(directory)
    return for_inference(policy, device, bf16=bf16, channels_last=channels_last)


def for_inference(
    policy: BasePolicy,
    device: str | torch.device = "auto",
    *,
    bf16: bool = False,
    channels_last: bool = False,
) -> BasePolicy:
    """`policy` ready for predict_chunk: eval mode, on ``device`` ("auto": cuda when available).

    ``bf16`` runs predict_chunk under bfloat16 autocast; ``channels_last`` stores conv weights
    in channels-last layout (both are faster on recent CPUs and GPUs)."""
    dev = resolve_device(device)
    policy.to(dev)
    if channels_last:
        policy.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs lack memory_format
    policy.autocast_dtype = torch.bfloat16 if bf16 else None
    policy.eval()
    return policy
