"""`duet demo` (`make demo`): the whole loop on the MuJoCo sim rig, on a laptop CPU.

  1. collect  the sim rig through the ROS graph (sim host, teleop, recorder; real time): the
              scripted operator moves the leaders, teleop mirrors them onto the followers,
              the recorder writes a zarr dataset; a health line per episode
  2. train    a small ACT on that dataset for a few minutes on the CPU
  3. eval     the checkpoint through the policy server in the sim, lockstep: report + MP4s
  4. deploy   the checkpoint through the ROS graph in real time (duet up deploy --sim):
              the policy node commands the sim followers
Each step is a `duet ...` command, printed before it runs so it can be rerun by hand; its
output goes to the terminal and to <out>/logs/<step>.log. Everything lands in
./runs/demo-<time> (or --out).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from duet.errors import DuetError


@dataclass
class Plan:
    episodes: int = 6  # scripted teleop demonstrations (each ~8 s of real time)
    camera: str = "cam_high"
    camera_size: str = "120x160"  # HxW rendered in real time on 2 cores beside the whole graph
    camera_fps: int = 25
    preset: str = "small"  # the CPU preset of the sim success benchmark
    train_steps: int = 3000  # ~12 steps/s on 2 idle CPU cores: ~4 minutes
    eval_episodes: int = 5
    eval_ticks: int = 0  # 0: the task's episode length
    videos: int = 2
    deploy_seconds: float = 15.0
    keep_failed: bool = (
        False  # quick: keep an episode whose task failed (it checks the pipeline, not the data)
    )


QUICK = Plan(
    episodes=1,
    preset="micro",
    train_steps=20,
    eval_episodes=1,
    eval_ticks=100,
    videos=1,
    deploy_seconds=4.0,
    keep_failed=True,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the whole loop in sim: collect through ROS, train, evaluate, deploy",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--out", type=Path, default=None, help="output directory (default runs/demo-<time>)")
    p.add_argument(
        "--quick", action="store_true", help="a much faster smoke variant (1 episode, micro model)"
    )
    p.add_argument(
        "--episodes", type=int, default=None, help="demonstrations to collect (default 6; quick 1)"
    )
    p.add_argument("--train-steps", type=int, default=None, help="training steps (default 3000; quick 20)")
    p.add_argument("--eval-episodes", type=int, default=None, help="evaluation episodes (default 5; quick 1)")
    p.add_argument(
        "--deploy-seconds", type=float, default=None, help="real-time deploy run length (default 15 s)"
    )
    p.add_argument("--skip-deploy", action="store_true", help="skip step 4 (deploy through the ROS graph)")
    p.set_defaults(func=cmd_demo)


def _plan(args) -> Plan:
    plan = Plan(**vars(QUICK)) if args.quick else Plan()
    if args.episodes is not None:
        plan.episodes = args.episodes
    if args.train_steps is not None:
        plan.train_steps = args.train_steps
    if args.eval_episodes is not None:
        plan.eval_episodes = args.eval_episodes
    if args.deploy_seconds is not None:
        plan.deploy_seconds = args.deploy_seconds
    if plan.episodes < 1 or plan.train_steps < 1 or plan.eval_episodes < 1:
        raise DuetError("--episodes, --train-steps and --eval-episodes must be >= 1")
    return plan


def _fmt(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


class Runner:
    """Runs the steps: prints each command, streams its output (progress bars included) to
    the terminal and to its log, stops at the first failure with a one-line error."""

    def __init__(self, out: Path, total: int):
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.total = total
        self.t0 = time.monotonic()
        self.timings: dict[str, float] = {}

    def step(self, n: int, name: str, title: str, argv: list[str], ok_codes: tuple[int, ...] = (0,)) -> int:
        log = self.logs / f"{n}-{name}.log"
        shown = "duet " + shlex.join(argv)
        bar = "=" * 78
        print(
            f"\n{bar}\n[demo {n}/{self.total}] {title}   (demo time {_fmt(time.monotonic() - self.t0)})\n"
            f"$ {shown}\n  log: {log}\n{bar}",
            flush=True,
        )
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        t = time.monotonic()
        with open(log, "wb") as f:
            f.write(f"$ {shown}\n".encode())
            proc = subprocess.Popen(
                [sys.executable, "-m", "duet.cli", *argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            )
            assert proc.stdout is not None
            out = sys.stdout.buffer
            while True:
                chunk = os.read(proc.stdout.fileno(), 65536)  # as it comes: progress bars stay live
                if not chunk:
                    break
                out.write(chunk)
                out.flush()
                f.write(chunk)
            rc = proc.wait()
        self.timings[name] = time.monotonic() - t
        if rc not in ok_codes:
            raise DuetError(f"step {n} ({name}) failed with status {rc}; see {log}")
        print(f"[demo {n}/{self.total}] {name} done in {_fmt(self.timings[name])}", flush=True)
        return rc


def cmd_demo(args) -> int:
    plan = _plan(args)
    out = (args.out or Path("runs") / f"demo-{_dt.datetime.now():%Y%m%d-%H%M%S}").resolve()
    if out.exists() and any(out.iterdir()):
        raise DuetError(f"--out {out}: exists and is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    dataset = out / "data" / "sim_transfer_cube.zarr"
    rig_file = Path(str(dataset) + ".rig.yaml")  # written by step 1: the rig the data was recorded on
    train_dir = out / "train"
    eval_dir = out / "eval"
    steps = 3 if args.skip_deploy else 4
    print(
        f"duet demo{' --quick' if args.quick else ''}: {out}\n"
        f"  {plan.episodes} scripted teleop episodes through the ROS graph (sim, {plan.camera} "
        f"{plan.camera_size} @ {plan.camera_fps} fps), ACT preset {plan.preset!r} for {plan.train_steps} steps "
        f"on the CPU (a few minutes on a few demonstrations: some successes, not the benchmark's), "
        f"{plan.eval_episodes} eval episodes"
        + ("" if args.skip_deploy else f", {plan.deploy_seconds:g} s real-time deploy"),
        flush=True,
    )
    run = Runner(out, steps)

    # 1. demonstrations through the ROS graph
    report = out / "collect.json"
    run.step(
        1,
        "collect",
        "collect scripted teleop demonstrations through the ROS graph (duet up record --sim)",
        [
            "sim",
            "collect",
            "--via-ros",
            "--episodes",
            str(plan.episodes),
            "--seed",
            "0",
            "--out",
            str(dataset),
            "--cameras",
            plan.camera,
            "--camera-size",
            plan.camera_size,
            "--camera-fps",
            str(plan.camera_fps),
            "--log-dir",
            str(out / "logs" / "collect-nodes"),
            "--report",
            str(report),
            *(["--keep-failed"] if plan.keep_failed else []),
        ],
        ok_codes=(0, 1),
    )  # 1: some episodes failed the task and were discarded
    kept = [e for e in json.loads(report.read_text())["episodes"] if e.get("kept")]
    if not kept:
        raise DuetError(f"step 1 (collect) stored no episode (every scripted episode failed); see {run.logs}")
    print(f"[demo 1/{steps}] {len(kept)} episodes stored in {dataset}", flush=True)

    # 2. training
    run.step(
        2,
        "train",
        f"train a small ACT ({plan.preset} preset, {plan.train_steps} steps) on the CPU",
        [
            "train",
            "--policy",
            "act",
            "--preset",
            plan.preset,
            "--dataset",
            str(dataset),
            "--out",
            str(train_dir),
            "--steps",
            str(plan.train_steps),
            "--device",
            "cpu",
            "--seed",
            "0",
            "--set",
            "train.num_workers=1",
            "--set",
            f"train.val_every={max(10, plan.train_steps // 3)}",
            "--set",
            f"train.save_every={plan.train_steps}",
        ],
    )
    ckpt = _checkpoint(train_dir)

    # 3. closed-loop evaluation in the sim (lockstep, through the policy server)
    argv = [
        "eval",
        "--checkpoint",
        str(ckpt),
        "--task",
        "transfer_cube",
        "--episodes",
        str(plan.eval_episodes),
        "--rig",
        str(rig_file),
        "--videos",
        str(plan.videos),
        "--device",
        "cpu",
        "--out",
        str(eval_dir),
    ]
    if plan.eval_ticks:
        argv += ["--ticks", str(plan.eval_ticks)]
    run.step(
        3, "eval", "evaluate the policy through the policy server in the sim (lockstep; report + MP4s)", argv
    )

    # 4. real-time deploy through the ROS graph
    if not args.skip_deploy:
        run.step(
            4,
            "deploy",
            "deploy through the ROS graph in real time (duet up deploy --sim: policy node -> sim followers)",
            [
                "sim",
                "deploy",
                "--checkpoint",
                str(ckpt),
                "--rig",
                str(rig_file),
                "--seconds",
                f"{plan.deploy_seconds:g}",
                "--log-dir",
                str(out / "logs" / "deploy-nodes"),
            ],
        )

    videos = sorted(eval_dir.glob("**/*.mp4"))
    total = time.monotonic() - run.t0
    print("\n" + "=" * 78)
    print(
        f"duet demo done in {_fmt(total)} ("
        + ", ".join(f"{k} {_fmt(v)}" for k, v in run.timings.items())
        + ")"
    )
    print(f"  dataset     {dataset}   (duet data info {dataset})")
    print(f"  checkpoint  {ckpt}")
    print(f"  eval report {eval_dir / 'report.json'}")
    for v in videos:
        print(f"  video       {v}")
    print(f"  logs        {run.logs}")
    (out / "demo.json").write_text(
        json.dumps(
            {
                "dataset": str(dataset),
                "checkpoint": str(ckpt),
                "eval": str(eval_dir),
                "videos": [str(v) for v in videos],
                "timings_s": {k: round(v, 1) for k, v in run.timings.items()},
                "plan": vars(plan),
            },
            indent=1,
        )
    )
    return 0


def _checkpoint(train_dir: Path) -> Path:
    """The checkpoint `duet train` wrote: best (lowest validation loss), else the last one."""
    ck = train_dir / "checkpoints"
    best = ck / "best"
    if best.is_dir():
        return best
    found = sorted(p for p in ck.glob("*") if p.is_dir()) if ck.is_dir() else []
    if not found:
        raise DuetError(f"step 2 (train) wrote no checkpoint under {ck}")
    return found[-1]
