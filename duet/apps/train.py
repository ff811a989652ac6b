"""`duet train`: train ACT or Diffusion Policy on a recorded zarr store.

duet train --policy act --dataset data/fold.zarr --out runs/act-fold
duet train --policy diffusion --dataset data/fold.zarr --preset tiny --steps 2000
duet train --policy act --dataset d.zarr --set policy.chunk_size=50 --set train.batch_size=16
duet train --policy act --dataset d.zarr --resume runs/act-fold/checkpoints/step_0010000 --steps 200000
torchrun --nproc_per_node 4 -m duet.cli train --policy act --dataset d.zarr     (multi-GPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
from pathlib import Path

from duet.policy.factory import PRESETS, config_class, policy_names


def _help_config(name: str) -> str:
    from duet.config import help_of
    from duet.policy.train import TrainConfig

    lines = []
    for prefix, cls in (("policy", config_class(name)), ("train", TrainConfig)):
        for f in dataclasses.fields(cls):
            default = (
                f.default
                if f.default is not dataclasses.MISSING
                else (f.default_factory() if f.default_factory is not dataclasses.MISSING else "")
            )
            lines.append(f"  {prefix}.{f.name} = {default!r}   # {help_of(cls, f.name)}")
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    if args.help_config:
        print(f"settings for --set (policy {args.policy}; presets: {', '.join(PRESETS[args.policy])}):")
        print(_help_config(args.policy))
        return 0
    from duet.errors import ConfigError

    if not args.dataset:
        raise ConfigError("--dataset PATH is required (a zarr store recorded by duet)")
    overrides = list(args.set or [])
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    if args.device is not None:
        overrides.append(f"train.device={args.device}")
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.backbone_weights is not None:
        if not Path(args.backbone_weights).is_file():
            raise ConfigError(f"--backbone-weights {args.backbone_weights}: file not found")
        overrides.append(f"policy.backbone_weights={Path(args.backbone_weights).resolve()}")
    out = args.out or Path("runs") / f"{args.policy}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    cams = [c for c in args.cameras.split(",") if c] if args.cameras else None

    from duet.policy.train import train_on_store

    res = train_on_store(
        args.policy,
        args.dataset,
        out,
        preset=args.preset,
        overrides=overrides,
        resume=args.resume,
        progress=not args.no_progress,
        camera_names=cams,
    )
    if res.step and res.history.get("train"):
        last = res.history["train"][-1]
        print(
            f"trained {args.policy} to step {res.step}: loss {last.get('loss', float('nan')):.4g}, "
            f"{res.samples_per_s:.1f} samples/s"
        )
    if res.best_val_loss is not None:
        print(f"best validation loss {res.best_val_loss:.4g}: {res.best_checkpoint}")
    if res.last_checkpoint is not None:
        print(f"last checkpoint: {res.last_checkpoint}")
    print(f"loss curves: {Path(res.out_dir) / 'training.png'}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train ACT or Diffusion Policy on a recorded dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--policy", choices=policy_names(), required=True, help="which policy to train")
    p.add_argument("--dataset", help="zarr episode store (recorded by duet)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<policy>-<time>)")
    p.add_argument("--steps", type=int, help="total optimizer steps (train.steps)")
    p.add_argument(
        "--preset",
        default="paper",
        choices=sorted({k for v in PRESETS.values() for k in v}),
        help="paper: the papers' sizes (GPU); tiny: CPU-sized, images resized to 96x128; small (ACT): "
        "half-width ResNet18 at the recorded size, the CPU sim benchmark and make demo; micro: smoke tests only",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="config override, e.g. policy.chunk_size=50 or train.batch_size=16 (repeatable)",
    )
    p.add_argument("--resume", type=Path, help="checkpoint directory to resume from (optimizer, step, RNG)")
    p.add_argument(
        "--backbone-weights", help="torchvision resnet18 weights (.safetensors or .pth state dict)"
    )
    p.add_argument("--cameras", help="comma-separated cameras to use (default: all in the dataset)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, help="random seed (train.seed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--help-config", action="store_true", help="list every --set key with its default and exit"
    )
    p.set_defaults(func=cmd_train)
