"""Policy checkpoints: a directory of safetensors + JSON, no pickle.

    <dir>/config.json          {"format": "duet-policy", "format_version": 1, "policy": "act",
                                 "config": {...}, "files": {name: sha256}, "step": N, ...}
    <dir>/model.safetensors    model weights (the nn.Module that works on normalized tensors)
    <dir>/ema.safetensors      EMA weights (Diffusion Policy; what inference uses)
    <dir>/stats.safetensors    normalization statistics (<feature>.<stat>)
    <dir>/training/            only for resuming: optimizer.safetensors, rng.safetensors,
                               state.json (step, schedulers, RNG of numpy/python, history)

Every file's SHA-256 is listed in config.json; loading verifies presence, checksums, tensor
names and shapes and fails with one line naming the file and the fix. Directories are written
to ``<dir>.partial`` and renamed into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from duet.clock import utc_now_iso
from duet.errors import DuetError

FORMAT = "duet-policy"
FORMAT_VERSION = 1
CONFIG = "config.json"
MODEL = "model.safetensors"
EMA = "ema.safetensors"
STATS = "stats.safetensors"
TRAINING = "training"


class CheckpointError(DuetError):
    """A checkpoint directory is missing, incomplete, modified or incompatible."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _contiguous(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def save_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    from safetensors.torch import save_file

    save_file(_contiguous(tensors), str(path), metadata=metadata)


def load_tensors(path: Path, ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {ckpt}: {path.name} is missing (copy the whole checkpoint directory)"
        )
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged file
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"checkpoint {ckpt}: {path.name} is not a valid safetensors file ({first}); "
            "re-copy the checkpoint or re-run training"
        ) from None


# ---------------------------------------------------------------------------- optimizer <-> safetensors


def optimizer_to_tensors(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch optimizer state_dict -> (tensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in state["state"].items():
        for name, v in pstate.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = v
            else:
                scalars.setdefault(str(idx), {})[name] = v
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: Mapping[str, torch.Tensor], rest: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    for idx, d in rest.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(d)
    return {"state": state, "param_groups": rest["param_groups"]}


# ---------------------------------------------------------------------------- save / load


def save_checkpoint(
    directory: str | Path,
    policy: Any,
    *,
    step: int = 0,
    extra: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``policy`` (a BasePolicy) to ``directory``. ``training`` (optional) holds
    {"optimizer": state_dict, "rng": {name: uint8 tensor}, "state": JSON-able dict}."""
    from duet.config import to_dict

    out = Path(directory)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_tensors(tmp / MODEL, policy.model.state_dict())
    ema = policy.inference_model_state()
    if ema is not None:
        save_tensors(tmp / EMA, ema)
    from duet.policy.normalize import save_stats

    save_stats(tmp / STATS, policy.normalizer.raw_stats)
    files = [MODEL, STATS] + ([EMA] if ema is not None else [])
    if training is not None:
        (tmp / TRAINING).mkdir()
        opt_tensors, opt_rest = optimizer_to_tensors(training["optimizer"])
        save_tensors(tmp / TRAINING / "optimizer.safetensors", opt_tensors)
        save_tensors(tmp / TRAINING / "rng.safetensors", training.get("rng", {}))
        state = {**training.get("state", {}), "optimizer": opt_rest}
        (tmp / TRAINING / "state.json").write_text(json.dumps(state, indent=1))
        files += [
            f"{TRAINING}/optimizer.safetensors",
            f"{TRAINING}/rng.safetensors",
            f"{TRAINING}/state.json",
        ]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "policy": policy.name,
        "config": to_dict(policy.config),
        "step": int(step),
        "created_utc": utc_now_iso(),
        "torch_version": torch.__version__,
        **(extra or {}),
        "files": {name: sha256(tmp / name) for name in files},
    }
    (tmp / CONFIG).write_text(json.dumps(meta, indent=2))
    old = out.with_name(out.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)
    return out


def read_meta(directory: str | Path, verify: bool = True) -> dict[str, Any]:
    """config.json of a checkpoint, with every listed file's presence and checksum verified."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint {d}: not a directory (pass the directory that holds {CONFIG})")
    cfg = d / CONFIG
    if not cfg.is_file():
        raise CheckpointError(f"checkpoint {d}: {CONFIG} is missing (copy the whole checkpoint directory)")
    try:
        meta = json.loads(cfg.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"checkpoint {d}: {CONFIG} is not valid JSON ({e}); re-copy the checkpoint"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f'checkpoint {d}: {CONFIG} is not a duet policy checkpoint (no "format": "{FORMAT}")'
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {d}: format_version {meta.get('format_version')!r} is not supported "
            f"(this duet reads {FORMAT_VERSION}); upgrade duet or re-train"
        )
    files = meta.get("files")
    if not isinstance(files, dict) or MODEL not in files or STATS not in files:
        raise CheckpointError(f"checkpoint {d}: {CONFIG} lacks the file list; re-save the checkpoint")
    if verify:
        for name, digest in files.items():
            p = d / name
            if not p.is_file():
                raise CheckpointError(
                    f"checkpoint {d}: {name} is missing (copy the whole checkpoint directory)"
                )
            if sha256(p) != digest:
                raise CheckpointError(
                    f"checkpoint {d}: {name} does not match its checksum in {CONFIG} "
                    "(modified or truncated); re-copy the checkpoint or re-run training"
                )
    return meta


def state_dict_mismatch(
    own: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], unexpected: bool = True
) -> str:
    """The first way `sd` does not fit a module whose state dict is `own`, in words ("" when
    it fits): a key of `own` that `sd` lacks, a key `own` lacks (when `unexpected`), a shape."""
    missing = [k for k in own if k not in sd]
    if missing:
        return f"missing key {missing[0]!r} ({len(missing)} missing)"
    extra = [k for k in sd if k not in own] if unexpected else []
    if extra:
        return f"unexpected key {extra[0]!r} ({len(extra)} unexpected)"
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            return f"{k!r} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}"
    return ""


def load_state_checked(
    module: torch.nn.Module, sd: Mapping[str, torch.Tensor], file: str, ckpt: Path
) -> None:
    """Strict load with one-line errors naming the first missing / unexpected / mis-shaped tensor."""
    why = state_dict_mismatch(module.state_dict(), sd)
    if why:
        raise CheckpointError(
            f"checkpoint {ckpt}: {file}: {why}; the file does not match config.json: re-save or re-train"
        )
    module.load_state_dict(dict(sd), strict=True)


def read_training_state(directory: str | Path) -> dict[str, Any]:
    """The resume state of a checkpoint: {"optimizer": state_dict, "rng": tensors, "state": dict}."""
    d = Path(directory)
    meta = read_meta(d)
    t = d / TRAINING
    if f"{TRAINING}/state.json" not in meta["files"]:
        raise CheckpointError(
            f"checkpoint {d}: has no {TRAINING}/ state (an inference-only export); "
            "resume from a checkpoint written by `duet train`"
        )
    state = json.loads((t / "state.json").read_text())
    opt_rest = state.pop("optimizer")
    opt = optimizer_from_tensors(load_tensors(t / "optimizer.safetensors", d), opt_rest)
    return {"optimizer": opt, "rng": load_tensors(t / "rng.safetensors", d), "state": state, "meta": meta}
