"""`duet eval`: closed-loop evaluation of a policy checkpoint on the MuJoCo sim (lockstep).

    duet eval --checkpoint runs/act/checkpoints/best --task transfer_cube --episodes 50
    duet eval --checkpoint CKPT --task insertion --mode ensemble --videos 5 --out runs/eval-ins
    duet eval --checkpoint CKPT --latency measured          # the sim runs on while the model computes
    duet eval --checkpoint CKPT --latency 60 --set server.blend_ticks=8

Seeds start at 100000 by default (`duet sim collect` numbers its demonstrations from 0), so
evaluation scenes are not training scenes; the overlap is checked when the checkpoint's
dataset is readable. Writes <out>/report.json and MP4s of the first --videos episodes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

from duet.errors import ConfigError


def _latency(text: str) -> tuple[str, float]:
    t = text.strip().lower()
    if t in ("zero", "measured"):
        return t, 0.0
    try:
        ms = float(t.removesuffix("ms"))
    except ValueError:
        raise ConfigError(f"--latency {text!r}: use zero, measured or a latency in ms (e.g. 40)") from None
    if not ms > 0:
        raise ConfigError(f"--latency {text!r}: a fixed latency must be > 0 ms")
    return "fixed", ms


def _server_overrides(items: list[str] | None) -> dict:
    from duet.config import apply_overrides
    from duet.policy.server.config import ServerConfig

    data: dict = {}
    for item in items or []:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("server."):
            raise ConfigError(
                f"--set {item!r}: only server.* settings can be set here (e.g. server.blend_ticks=8)"
            )
        data = apply_overrides(data, [item.strip()[len("server.") :]], ServerConfig)
    return data


def cmd_eval(args: argparse.Namespace) -> int:
    from duet.policy.evaluate import config_from_args, evaluate
    from duet.policy.factory import load_policy

    latency, ms = _latency(args.latency)
    size = []
    if args.camera_size:
        try:
            h, w = (int(v) for v in args.camera_size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--camera-size {args.camera_size!r}: use HxW, e.g. 240x320") from None
        size = [h, w]
    cfg = config_from_args(
        task=args.task,
        episodes=args.episodes,
        seed=args.seed,
        ticks=args.ticks,
        mode=args.mode,
        latency=latency,
        latency_ms=ms,
        device=args.device,
        rig=args.rig,
        camera_size=size,
        render_quality=args.render_quality,
        videos=args.videos,
        stop_on_success=args.stop_on_success,
        server=_server_overrides(args.set),
    )
    ckpt = Path(args.checkpoint)
    policy = load_policy(ckpt, cfg.device)  # fails in one line on a bad checkpoint, before the sim loads
    out = args.out or Path("runs") / f"eval-{cfg.task}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    report = evaluate(
        ckpt,
        cfg,
        out,
        policy=policy,
        progress=not args.no_progress,
        echo=None if not args.no_progress else print,
    )
    for line in report.lines():
        print(line)
    return 0


def register(subparsers) -> None:
    from duet.hardware.sim.tasks import TASKS

    p = subparsers.add_parser(
        "eval",
        help="evaluate a policy checkpoint on the MuJoCo sim (success per stage)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint", required=True, help="checkpoint directory (e.g. runs/act/checkpoints/best)"
    )
    p.add_argument("--task", default="transfer_cube", choices=sorted(TASKS), help="sim task")
    p.add_argument("--episodes", type=int, default=50, help="episodes to run (default 50)")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the first episode, then +1 each (default 100000: disjoint from collection seeds)",
    )
    p.add_argument(
        "--ticks", type=int, default=None, help="ticks per episode (default: the task's, 400 at 50 Hz)"
    )
    p.add_argument("--out", type=Path, help="output directory (default runs/eval-<task>-<time>)")
    p.add_argument("--videos", type=int, default=3, help="MP4s of the first N episodes (default 3; 0: none)")
    p.add_argument(
        "--mode",
        default="async",
        choices=("async", "ensemble", "receding"),
        help="policy-server execution mode (default async)",
    )
    p.add_argument(
        "--latency",
        default="zero",
        help="zero (default: the sim waits for inference, deterministic), measured (the sim runs on "
        "for the measured inference time), or a fixed latency in ms",
    )
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--rig", default="aloha_sim", help="sim rig name or YAML (default aloha_sim)")
    p.add_argument(
        "--camera-size", help="HxW of the sim cameras (default: the training dataset's, else the rig's)"
    )
    p.add_argument(
        "--render-quality",
        default="fast",
        choices=("fast", "full"),
        help="sim rendering; match the demonstrations (duet sim collect default: fast)",
    )
    p.add_argument(
        "--stop-on-success", action="store_true", help="end an episode when the final stage is reached"
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="server.KEY=VALUE",
        help="policy-server setting, e.g. server.blend_ticks=8 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar; one line per episode")
    p.set_defaults(func=cmd_eval)
