"""Training loop for any policy over any map-style dataset whose items hold the policy batch keys
(see policy/interface.py; numpy arrays, images uint8 (n_obs, H, W, 3)).

- fixed seed; data order is a pure function of (seed, step), so a resumed run sees the same
  batches as an uninterrupted one; optimizer, LR schedule, step and RNG states are saved as
  safetensors/JSON beside the weights (training/ inside each checkpoint).
- periodic checkpoints (``step_NNNNNNN``, the newest ``keep_last`` kept) and ``best`` (lowest
  validation loss on held-out episodes), a ``history.json`` and a loss-curve PNG.
- device "auto" = cuda when available; bf16 autocast and torch.compile on GPU by default.
- multi-GPU / multi-process: launched by torchrun (env vars RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR/PORT), DistributedDataParallel over NCCL (GPU) or gloo (CPU); rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import numpy as np
import torch
import torch.distributed as dist

from duet.config import field, to_dict
from duet.errors import ConfigError, DuetError
from duet.policy.backbone import ResNet18, load_backbone_weights
from duet.policy.base import BasePolicy, PolicyConfigBase
from duet.policy.checkpoint import (
    EMA,
    MODEL,
    load_state_checked,
    load_tensors,
    read_training_state,
    save_checkpoint,
)
from duet.policy.factory import make_policy, resolve_device

if TYPE_CHECKING:
    from torch.utils.data import Dataset

log = logging.getLogger("duet.policy.train")


@dataclass
class TrainConfig:
    steps: int = field(100_000, "optimizer steps to train for (in total, counting resumed steps)")
    seed: int = field(0, "seed for weights, data order and augmentation")
    device: str = field("auto", "auto (cuda when available), cpu, cuda, cuda:1 ...")
    amp: Literal["auto", "bf16", "off"] = field("auto", "bf16 autocast: auto = on for cuda only")
    compile: Literal["auto", "on", "off"] = field(
        "auto", "torch.compile the training step: auto = on for cuda only"
    )
    num_workers: int = field(4, "data-loading worker processes (0: load in the training process)")
    val_fraction: float = field(
        0.1, "fraction of episodes held out for validation (at least one when >= 2 episodes)"
    )
    val_every: int = field(2000, "validate (and maybe write `best`) every this many steps")
    val_batches: int = field(50, "at most this many batches per validation pass")
    save_every: int = field(10_000, "write a periodic checkpoint every this many steps (and at the end)")
    keep_last: int = field(2, "periodic checkpoints to keep (best is kept separately)")
    log_every: int = field(50, "average and record the training losses every this many steps")
    grad_clip: float = field(10.0, "clip the gradient norm to this (0: off)")

    def __post_init__(self) -> None:
        for name in ("steps", "val_every", "val_batches", "save_every", "keep_last", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.grad_clip < 0:
            raise ConfigError("num_workers and grad_clip must be >= 0")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


def split_episodes(n_episodes: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Random (seeded) split of episode indices into train and validation lists."""
    if n_episodes < 1:
        raise DuetError("dataset has no episodes: record some before training")
    n_val = 0 if n_episodes < 2 or val_fraction <= 0 else max(1, round(n_episodes * val_fraction))
    perm = np.random.default_rng(seed).permutation(n_episodes)
    return sorted(int(i) for i in perm[n_val:]), sorted(int(i) for i in perm[:n_val])


# ---------------------------------------------------------------------------- distributed


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (env vars); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank, world, local)


class StepBatchSampler:
    """Infinite batch sampler whose batch at a step is a pure function of (seed, step):
    epoch e is a seeded permutation, sharded across ranks, cut into full batches."""

    def __init__(
        self, n: int, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world: int = 1
    ):
        per_rank = n // world
        if per_rank < batch_size:
            raise DuetError(
                f"training set has {n} samples: fewer than batch_size {batch_size} x {world} processes; "
                "record more data or lower policy.batch_size"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.step = rank, world, start_step
        self.per_epoch = per_rank // batch_size

    def batch_at(self, step: int) -> list[int]:
        epoch, i = divmod(step, self.per_epoch)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        perm = torch.randperm(self.n, generator=g)[self.rank :: self.world]
        return perm[i * self.batch_size : (i + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step = self.step
        while True:
            yield self.batch_at(step)
            step += 1

    def __len__(self) -> int:  # DataLoader asks; the sampler is infinite
        return 2**62


def _lr_lambda(kind: str, warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0

    return f


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {
        k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else torch.as_tensor(v).to(device))
        for k, v in batch.items()
    }


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    legacy = cast(
        tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True)
    )  # legacy: the tuple
    name, keys, pos, has_gauss, gauss = legacy
    py = random.getstate()
    return tensors, {
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [py[0], list(py[1]), py[2]],
    }


def _set_rng_state(tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    if "torch" in tensors:
        torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "python" in state:
        v, s, g = state["python"]
        random.setstate((v, tuple(s), g))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def plot_history(history: dict[str, list], path: Path, title: str = "") -> None:
    """Loss curves (train components and validation) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = history.get("train", []), history.get("val", [])
    keys = sorted({k for r in train for k in r if k not in ("step", "lr", "time_s")})
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(5 * max(1, len(keys)), 3.6), squeeze=False)
    for ax, k in zip(axes[0], keys or ["loss"]):
        ax.plot([r["step"] for r in train if k in r], [r[k] for r in train if k in r], label=f"train {k}")
        vv = [r for r in val if k in r]
        if vv:
            ax.plot([r["step"] for r in vv], [r[k] for r in vv], "o-", label=f"val {k}")
        ax.set_xlabel("step")
        ax.set_title(k)
        if all(r[k] > 0 for r in train if k in r) and len(train) > 1:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best_val_loss: float | None
    history: dict[str, list]
    samples_per_s: float


class MapDataset(Protocol):
    """A map-style dataset (data.sampler.EpisodeSampler): what DataLoader reads."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


def _for_loader(ds: MapDataset) -> Dataset[dict[str, Any]]:
    """DataLoader takes any map-style dataset; torch's annotations ask for a Dataset."""
    return cast("Dataset[dict[str, Any]]", ds)


class Trainer:
    def __init__(
        self,
        policy_name: str,
        policy_config: PolicyConfigBase,
        train_config: TrainConfig,
        train_dataset: MapDataset,
        val_dataset: MapDataset | None,
        stats: Any,
        out_dir: str | Path,
        resume: str | Path | None = None,
        progress: bool = True,
        extra_meta: dict[str, Any] | None = None,
    ):
        self.cfg = train_config
        self.policy_name = policy_name
        self.out = Path(out_dir)
        self.train_ds, self.val_ds = train_dataset, val_dataset
        self.progress = progress
        self.extra_meta = extra_meta or {}
        device = resolve_device(train_config.device)
        self.dist = init_distributed(device)
        if device.type == "cuda" and self.dist.enabled:
            device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        seed_everything(train_config.seed + self.dist.rank)
        self.policy: BasePolicy = make_policy(policy_name, policy_config, stats).to(device)
        pcfg = policy_config
        if pcfg.backbone_weights and resume is None:
            for m in self.policy.model.modules():
                if isinstance(m, ResNet18):
                    load_backbone_weights(m, pcfg.backbone_weights)
            ema = getattr(self.policy, "ema", None)
            if isinstance(ema, torch.nn.Module):
                ema.load_state_dict(self.policy.model.state_dict())
        elif pcfg.backbone_norm == "frozen_bn" and resume is None and self.dist.main:
            log.warning(
                "backbone_norm=frozen_bn with random initialization normalizes nothing: pass "
                "--backbone-weights (ImageNet resnet18) or set policy.backbone_norm=group_norm"
            )
        self.optimizer = torch.optim.AdamW(
            self.policy.optimizer_param_groups(),
            lr=pcfg.lr,
            betas=(pcfg.adam_betas[0], pcfg.adam_betas[1]),
            weight_decay=pcfg.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(pcfg.lr_schedule, pcfg.warmup_steps, train_config.steps)
        )
        self.step = 0
        self.best_val: float | None = None
        self.history: dict[str, list] = {"train": [], "val": []}
        self.elapsed_s = 0.0
        if resume is not None:
            self._resume(Path(resume))
        amp = train_config.amp
        self.autocast = amp == "bf16" or (amp == "auto" and device.type == "cuda")
        self.module: torch.nn.Module = self.policy
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.module = DDP(self.policy, device_ids=[device.index] if device.type == "cuda" else None)
        comp = train_config.compile
        self.step_fn: Callable[..., Any] = self.module
        if comp == "on" or (comp == "auto" and device.type == "cuda"):
            self.step_fn = torch.compile(self.module)

    # -------------------------------------------------------------------- resume / save
    def _resume(self, ckpt: Path) -> None:
        st = read_training_state(ckpt)
        if st["meta"].get("policy") != self.policy_name:
            raise DuetError(
                f"resume {ckpt}: it is a {st['meta'].get('policy')} checkpoint, not {self.policy_name}"
            )
        load_state_checked(self.policy.model, load_tensors(ckpt / MODEL, ckpt), MODEL, ckpt)
        ema = getattr(self.policy, "ema", None)
        if isinstance(ema, torch.nn.Module) and EMA in st["meta"]["files"]:
            load_state_checked(ema, load_tensors(ckpt / EMA, ckpt), EMA, ckpt)
        try:
            self.optimizer.load_state_dict(st["optimizer"])
        except (ValueError, KeyError) as e:
            raise DuetError(
                f"resume {ckpt}: optimizer state does not fit this model ({e}); "
                "resume with the same policy config"
            ) from None
        s = st["state"]
        self.step = int(s["step"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.best_val = s.get("best_val")
        self.history = s.get("history", self.history)
        self.elapsed_s = float(s.get("elapsed_s", 0.0))
        rng = s.get("rng", {})
        if self.dist.rank == 0:
            _set_rng_state(st["rng"], rng)
        else:  # other ranks re-derive their streams from the step
            seed_everything(self.cfg.seed + self.dist.rank + 7919 * self.step)

    def save(self, name: str) -> Path:
        rng_t, rng_s = _rng_state()
        state = {
            "step": self.step,
            "scheduler": self.scheduler.state_dict(),
            "best_val": self.best_val,
            "history": self.history,
            "rng": rng_s,
            "elapsed_s": self.elapsed_s,
            "train_config": to_dict(self.cfg),
        }
        meta = {"train_config": to_dict(self.cfg), "best_val_loss": self.best_val, **self.extra_meta}
        return save_checkpoint(
            self.out / "checkpoints" / name,
            self.policy,
            step=self.step,
            extra=meta,
            training={"optimizer": self.optimizer.state_dict(), "rng": rng_t, "state": state},
        )

    def _prune(self) -> None:
        ck = sorted((self.out / "checkpoints").glob("step_*"))
        ck = [p for p in ck if p.is_dir() and not p.name.endswith((".partial", ".old"))]
        import shutil

        for p in ck[: max(0, len(ck) - self.cfg.keep_last)]:
            shutil.rmtree(p, ignore_errors=True)

    # -------------------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        if not self.val_ds or len(self.val_ds) == 0:
            return None
        from torch.utils.data import DataLoader

        bs = self.policy.config.batch_size
        loader = DataLoader(
            _for_loader(self.val_ds),
            batch_size=bs,
            shuffle=False,
            num_workers=min(self.cfg.num_workers, 2),
            generator=torch.Generator().manual_seed(0),
        )
        self.policy.eval()
        sums: dict[str, float] = {}
        n = 0
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(12345)  # the same noise / latents each pass: comparable numbers
            for i, batch in enumerate(loader):
                if i >= self.cfg.val_batches:
                    break
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                    out = self.policy(_to_device(batch, self.device))
                b = len(batch["action"])
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * b
                n += b
        self.policy.train()
        return {k: v / n for k, v in sums.items()} if n else None

    # -------------------------------------------------------------------- train
    def fit(self) -> TrainResult:
        from torch.utils.data import DataLoader

        cfg, main = self.cfg, self.dist.main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(
                json.dumps(
                    {
                        "policy": self.policy_name,
                        "policy_config": to_dict(self.policy.config),
                        "train_config": to_dict(cfg),
                        **self.extra_meta,
                    },
                    indent=2,
                )
            )
        bs = self.policy.config.batch_size
        sampler = StepBatchSampler(
            len(self.train_ds), bs, cfg.seed, self.step, self.dist.rank, self.dist.world
        )
        # Its own generator: creating the iterator must not draw from the global RNG (resume
        # restores that RNG exactly, and the data order already depends on (seed, step) only).
        loader = DataLoader(
            _for_loader(self.train_ds),
            batch_sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            generator=torch.Generator().manual_seed(cfg.seed * 7 + self.step + self.dist.rank),
        )
        bar = None
        if main and self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=cfg.steps, initial=self.step, desc=f"train {self.policy_name}", dynamic_ncols=True
            )
        self.policy.train()
        acc: dict[str, float] = {}
        n_acc = 0
        last_ckpt: Path | None = None
        t0 = time.perf_counter()
        start_step = self.step
        it = iter(loader)
        try:
            while self.step < cfg.steps:
                batch = _to_device(next(it), self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                    out = self.step_fn(batch)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise DuetError(
                        f"training loss became {float(loss)} at step {self.step}: lower policy.lr "
                        "or check the dataset for NaNs"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.policy.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.policy.after_optimizer_step(self.step)
                self.step += 1
                for k, v in out.items():
                    acc[k] = acc.get(k, 0.0) + float(v.detach())
                n_acc += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    rec = {
                        "step": self.step,
                        "lr": self.scheduler.get_last_lr()[0],
                        **{k: v / n_acc for k, v in acc.items()},
                    }
                    self.history["train"].append(rec)
                    acc, n_acc = {}, 0
                    if bar is not None:
                        bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items() if k not in ("step", "lr")})
                if bar is not None:
                    bar.update(1)
                if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                    self._validate_and_maybe_save_best()
                if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                    self.elapsed_s += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    if main:
                        last_ckpt = self.save(f"step_{self.step:07d}")
                        self._prune()
                        self._write_summary()
                    self._barrier()
        finally:
            if bar is not None:
                bar.close()
        self.elapsed_s += time.perf_counter() - t0
        done = self.step - start_step
        sps = done * bs * self.dist.world / max(self.elapsed_s, 1e-9) if done else 0.0
        best = self.out / "checkpoints" / "best"
        return TrainResult(
            self.out, self.step, last_ckpt, best if best.is_dir() else None, self.best_val, self.history, sps
        )

    def _barrier(self) -> None:
        if self.dist.enabled:
            dist.barrier()

    def _validate_and_maybe_save_best(self) -> None:
        if self.dist.main:
            val = self.validate()
            if val is not None:
                self.history["val"].append({"step": self.step, **val})
                if self.best_val is None or val["loss"] < self.best_val:
                    self.best_val = val["loss"]
                    self.save("best")
        self._barrier()

    def _write_summary(self) -> None:
        (self.out / "history.json").write_text(json.dumps(self.history, indent=1))
        try:
            plot_history(self.history, self.out / "training.png", title=f"{self.policy_name} {self.out.name}")
        except Exception as e:  # noqa: BLE001 - a plot must never kill a training run
            log.warning("could not draw the training plot: %s", e)


def train(
    policy_name: str,
    policy_config: PolicyConfigBase,
    train_config: TrainConfig,
    train_dataset: MapDataset,
    val_dataset: MapDataset | None,
    stats: Any,
    out_dir: str | Path,
    resume: str | Path | None = None,
    progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train and return a summary; see the module docstring."""
    trainer = Trainer(
        policy_name,
        policy_config,
        train_config,
        train_dataset,
        val_dataset,
        stats,
        out_dir,
        resume=resume,
        progress=progress,
        extra_meta=extra_meta,
    )
    return trainer.fit()


# ---------------------------------------------------------------------------- from a zarr store


def split_overrides(overrides: Sequence[str], policy_cls: type) -> tuple[list[str], list[str]]:
    """'policy.x=1' / 'train.y=2' / bare 'x=1' (resolved by field name) -> (policy, train) lists."""
    import dataclasses

    pfields = {f.name for f in dataclasses.fields(policy_cls)}
    tfields = {f.name for f in dataclasses.fields(TrainConfig)}
    pol, tr = [], []
    for o in overrides:
        key = o.split("=", 1)[0].strip()
        if key.startswith("policy."):
            pol.append(o.strip()[len("policy.") :])
        elif key.startswith("train."):
            tr.append(o.strip()[len("train.") :])
        elif key.split(".")[0] in pfields:
            pol.append(o)
        elif key.split(".")[0] in tfields:
            tr.append(o)
        else:
            raise ConfigError(
                f"override {o!r}: {key!r} is neither a {policy_cls.__name__} nor a TrainConfig field "
                "(prefix with policy. or train.; see `duet train --help-config`)"
            )
    return pol, tr


def train_on_store(
    policy_name: str,
    dataset: str | Path,
    out_dir: str | Path,
    *,
    preset: str = "paper",
    overrides: Sequence[str] = (),
    resume: str | Path | None = None,
    progress: bool = True,
    camera_names: Sequence[str] | None = None,
) -> TrainResult:
    """`duet train`: split the store's episodes, compute statistics on the training episodes,
    build samplers and train. On resume, the policy config comes from the checkpoint and only
    train.* overrides (e.g. more steps) apply."""
    from duet.config import apply_overrides, from_dict
    from duet.data.sampler import EpisodeSampler, compute_stats
    from duet.data.store import EpisodeStore
    from duet.policy.checkpoint import read_meta
    from duet.policy.factory import checkpoint_config, config_class, make_config

    pcls = config_class(policy_name)
    pol_over, tr_over = split_overrides(overrides, pcls)
    store = EpisodeStore.open(dataset, "r")
    spec = store.spec
    if resume is not None:
        meta = read_meta(resume)
        if meta.get("policy") != policy_name:
            raise DuetError(f"resume {resume}: it is a {meta.get('policy')} checkpoint, not {policy_name}")
        if pol_over:
            raise ConfigError(
                f"resume {resume}: policy settings come from the checkpoint; drop {pol_over[0]!r}"
            )
        pcfg = checkpoint_config(policy_name, meta["config"], where=f"{resume}/config.json")
        tdict = apply_overrides(meta.get("train_config", {}), tr_over, TrainConfig)
        split = meta.get("episodes") or {}
    else:
        cams = list(camera_names) if camera_names else spec.camera_names
        base = {
            "camera_names": cams,
            "state_dim": spec.state_dim,
            "action_dim": spec.action_dim,
            "control_dt": 1.0 / spec.rate_hz,
        }
        pcfg = make_config(policy_name, preset, pol_over, base=base)
        tdict = apply_overrides({}, tr_over, TrainConfig)
        split = {}
    tcfg = from_dict(TrainConfig, tdict, where="train config")
    if split:
        train_eps, val_eps = list(split["train"]), list(split["val"])
    else:
        train_eps, val_eps = split_episodes(store.n_episodes, tcfg.val_fraction, tcfg.seed)
    n_obs = int(getattr(pcfg, "n_obs_steps", 1))
    horizon = int(getattr(pcfg, "chunk_size" if policy_name == "act" else "horizon"))
    cams = list(pcfg.camera_names)
    if resume is not None:
        from duet.policy.checkpoint import STATS
        from duet.policy.normalize import load_stats

        stats = load_stats(Path(resume) / STATS)
    else:
        from duet.data.keys import ACTION, STATE

        stats = compute_stats(store, (STATE, ACTION), episodes=train_eps)
    train_ds = EpisodeSampler(store, n_obs, horizon, camera_names=cams, episodes=train_eps)
    val_ds = EpisodeSampler(store, n_obs, horizon, camera_names=cams, episodes=val_eps) if val_eps else None
    if val_ds is None:
        log.warning("only %d episode(s): no held-out validation, `best` is not written", store.n_episodes)
    extra = {"dataset": str(dataset), "episodes": {"train": train_eps, "val": val_eps}}
    return train(
        policy_name,
        pcfg,
        tcfg,
        train_ds,
        val_ds,
        stats,
        out_dir,
        resume=resume,
        progress=progress,
        extra_meta=extra,
    )
