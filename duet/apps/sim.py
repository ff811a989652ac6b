"""`duet sim ...`: scripted demonstrations on the MuJoCo sim rig, and policies deployed on it.

    duet sim collect --episodes 10 --out demos.zarr           lockstep, here: ScriptedCollector
                                                              (hardware.sim) -> Recorder (data)
    duet sim collect --via-ros --episodes 10 --out demos.zarr through the ROS graph in real time
    duet sim deploy --checkpoint CKPT                         a policy drives the sim through the graph

The commands, their flags and their checks are all here. What drives the ROS graph lives in
duet_ros, the layer above the applications (duet.apps imports no duet_ros): duet_ros.cli's
register() hands `duet sim` its runners with use_ros_graph() (duet/cli.py registers
duet_ros.cli after this module). Without duet_ros nobody does, and --via-ros / deploy end in
one line that says what to install.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from duet.errors import DuetError


def register(subparsers) -> None:
    p = subparsers.add_parser("sim", help="MuJoCo sim: scripted demonstrations")
    sub = p.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    sub.required = True
    c = sub.add_parser(
        "collect", help="run scripted demonstrations in lockstep and report success per episode"
    )
    c.add_argument("--task", default="transfer_cube", help="transfer_cube or insertion")
    c.add_argument("--episodes", type=int, default=1, help="number of episodes")
    c.add_argument("--seed", type=int, default=0, help="seed of the first episode (then seed+1, ...)")
    c.add_argument("--rig", default="aloha_sim", help="sim rig name or YAML path")
    c.add_argument(
        "--render",
        action="store_true",
        help="render cameras (always on with --out; slow on CPU: ~0.1 s per 240x320 frame)",
    )
    c.add_argument("--out", default="", help="episode store (duet.data) to append the demonstrations to")
    c.add_argument(
        "--cameras", default="", help="comma-separated cameras to render and record (default: the rig's)"
    )
    c.add_argument(
        "--render-quality",
        default="fast",
        choices=("fast", "full"),
        help="fast: no shadows or multisampling (5-10x faster on CPU); full: as gym-aloha renders",
    )
    c.add_argument(
        "--keep-failed",
        action="store_true",
        help="also store flagged demonstrations (failed or not done at the end)",
    )
    c.add_argument("--report", default="", help="write the per-episode results as JSON here")
    c.add_argument(
        "--via-ros",
        action="store_true",
        help="through the ROS graph in real time (duet up record --sim: sim host, teleop, recorder; "
        "the operator drives the leaders, teleop the followers); needs --out",
    )
    c.add_argument(
        "--camera-size",
        default="",
        metavar="HxW",
        help="--via-ros: render the cameras at this size (e.g. 120x160; real time on few cores)",
    )
    c.add_argument(
        "--camera-fps", type=int, default=0, help="--via-ros: camera frame rate (default: the rig's)"
    )
    c.add_argument("--log-dir", default="", help="--via-ros: node logs (default OUT.logs/)")
    c.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE:KEY=VALUE",
        help="--via-ros: node parameter override, as duet up --set (repeatable)",
    )
    c.set_defaults(func=_collect)
    d = sub.add_parser(
        "deploy",
        help="a policy drives the sim rig through the ROS graph in real time "
        "(duet up deploy --sim): reset, /policy/start, run, /policy/stop",
    )
    d.add_argument("--checkpoint", required=True, help="policy checkpoint directory (duet train output)")
    d.add_argument(
        "--rig", default="aloha_sim", help="sim rig name or YAML path (the cameras the policy needs)"
    )
    d.add_argument("--seconds", type=float, default=15.0, help="how long the policy commands the followers")
    d.add_argument("--seed", type=int, default=100000, help="seed of the scene (object placement)")
    d.add_argument("--log-dir", default="", help="node logs (default: CHECKPOINT/../deploy-logs)")
    d.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE:KEY=VALUE",
        help="node parameter override, as duet up --set (repeatable)",
    )
    d.set_defaults(func=_deploy)


def _collect(args) -> int:
    if args.via_ros:
        return _collect_via_ros(args)
    from duet.hardware.rig import load_rig
    from duet.hardware.sim.episode import ScriptedCollector
    from duet.hardware.sim.tasks import make_task

    make_task(args.task)  # validate before loading anything heavy
    if args.episodes < 1:
        raise DuetError(f"--episodes {args.episodes}: must be >= 1")
    rig = load_rig(args.rig, [f"sim_task={args.task}"])
    cams = [c for c in args.cameras.split(",") if c] or None
    render = args.render or bool(args.out)
    results: list[dict[str, Any]] = []
    from duet.hardware.sim.world import world_for

    world_for(rig, args.task).render_quality = args.render_quality
    with ScriptedCollector(rig, task=args.task, cameras=cams, render=render) as col:
        rec = None
        if args.out:
            from duet.data.recorder import Recorder

            store = open_store(args.out, rig, [c.name for c in col.cameras])
            rec = Recorder(store, clock=col.clock, rig=rig)
        try:
            for i in range(args.episodes):
                r = col.run(seed=args.seed + i, recorder=rec, keep_failed=args.keep_failed)
                kept = (
                    f" -> episode {r.stored_index}"
                    if r.stored_index is not None
                    else (" (not stored)" if rec else "")
                )
                print(r.summary() + kept, flush=True)
                results.append(
                    {
                        "task": r.task,
                        "seed": r.seed,
                        "success": r.success,
                        "completed": r.completed,
                        "flagged": r.flagged,
                        "max_stage": r.max_stage,
                        "final_stage": r.final_stage,
                        "ticks": r.ticks,
                        "reachable": r.reachable,
                        "ik_error_m": r.ik_error_m,
                        "object_poses": r.object_poses,
                        "frames": r.frames,
                        "wall_s": round(r.wall_s, 3),
                        "stored_index": r.stored_index,
                    }
                )
        finally:
            if rec is not None:
                rec.close()
    ok = sum(r["success"] for r in results)
    good = sum(not r["flagged"] for r in results)
    print(
        f"{args.task}: {ok}/{len(results)} scripted demonstrations succeeded, {good} unflagged (task done at the end)"
    )
    if args.out:
        print(f"store: {args.out}")
    if args.report:
        out = Path(args.report)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rig": rig.name, "episodes": results}, indent=1))
        print(f"report: {out}")
    return 0 if good == len(results) else 1


def _collect_via_ros(args) -> int:
    if not args.out:
        raise DuetError("--via-ros records into a store: give --out DIR")
    if args.episodes < 1:
        raise DuetError(f"--episodes {args.episodes}: must be >= 1")
    return _ros_runner(args, "ros_collect", "--via-ros")(args)


def _deploy(args) -> int:
    if not Path(args.checkpoint).is_dir():
        raise DuetError(f"--checkpoint {args.checkpoint}: not a directory (a duet train checkpoint)")
    return _ros_runner(args, "ros_deploy", "sim deploy")(args)


def use_ros_graph(subparsers, collect: Callable[[Any], int], deploy: Callable[[Any], int]) -> None:
    """Hand `duet sim` (registered on `subparsers`) the runners that drive the ROS graph:
    collect(args) for `collect --via-ros`, deploy(args) for `deploy`. Called by
    duet_ros.cli.register, the layer above (the arrow runs duet_ros -> duet.apps)."""
    subparsers.choices["sim"].set_defaults(ros_collect=collect, ros_deploy=deploy)


def _ros_runner(args, name: str, what: str) -> Callable[[Any], int]:
    run = getattr(args, name, None)
    if run is None:
        raise DuetError(f"{what} needs ROS 2 (rclpy) and the duet_ros package; run make setup")
    return run


def open_store(path: str, rig: Any, cameras: list[str] | tuple[str, ...] | None = None):
    """An episode store (duet.data) for a sim rig's arms and the given cameras (default: all)."""
    import copy

    from duet.data.layout import DatasetSpec
    from duet.data.store import EpisodeStore

    r = copy.deepcopy(rig)
    if cameras is not None:
        r.cameras = [c for c in rig.cameras if c.name in set(cameras)]
    return EpisodeStore.open_or_create(path, DatasetSpec.from_rig(r))
