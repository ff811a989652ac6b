"""`duet sim ...`: scripted demonstrations on the MuJoCo sim rig (lockstep)."""

from __future__ import annotations

import json
from pathlib import Path

from duet.errors import DuetError


def register(subparsers) -> None:
    p = subparsers.add_parser("sim", help="MuJoCo sim: scripted demonstrations")
    sub = p.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    sub.required = True
    c = sub.add_parser("collect", help="run scripted demonstrations in lockstep and report success per episode")
    c.add_argument("--task", default="transfer_cube", help="transfer_cube or insertion")
    c.add_argument("--episodes", type=int, default=1, help="number of episodes")
    c.add_argument("--seed", type=int, default=0, help="seed of the first episode (then seed+1, ...)")
    c.add_argument("--rig", default="aloha_sim", help="sim rig name or YAML path")
    c.add_argument("--render", action="store_true",
                   help="render cameras (always on with --out; slow on CPU: ~0.1 s per 240x320 frame)")
    c.add_argument("--out", default="", help="episode store (duet.data) to append the demonstrations to")
    c.add_argument("--cameras", default="", help="comma-separated cameras to render and record (default: the rig's)")
    c.add_argument("--render-quality", default="fast", choices=("fast", "full"),
                   help="fast: no shadows or multisampling (5-10x faster on CPU); full: as gym-aloha renders")
    c.add_argument("--keep-failed", action="store_true", help="also store flagged demonstrations (failed or not done at the end)")
    c.add_argument("--report", default="", help="write the per-episode results as JSON here")
    c.add_argument("--via-ros", action="store_true",
                   help="through the ROS graph in real time (duet up record --sim: sim host, teleop, recorder; "
                        "the operator drives the leaders, teleop the followers); needs --out")
    c.add_argument("--camera-size", default="", metavar="HxW",
                   help="--via-ros: render the cameras at this size (e.g. 120x160; real time on few cores)")
    c.add_argument("--camera-fps", type=int, default=0, help="--via-ros: camera frame rate (default: the rig's)")
    c.add_argument("--log-dir", default="", help="--via-ros: node logs (default OUT.logs/)")
    c.add_argument("--set", action="append", default=[], metavar="NODE:KEY=VALUE",
                   help="--via-ros: node parameter override, as duet up --set (repeatable)")
    c.set_defaults(func=_collect)
    d = sub.add_parser("deploy", help="a policy drives the sim rig through the ROS graph in real time "
                                      "(duet up deploy --sim): reset, /policy/start, run, /policy/stop")
    d.add_argument("--checkpoint", required=True, help="policy checkpoint directory (duet train output)")
    d.add_argument("--rig", default="aloha_sim", help="sim rig name or YAML path (the cameras the policy needs)")
    d.add_argument("--seconds", type=float, default=15.0, help="how long the policy commands the followers")
    d.add_argument("--seed", type=int, default=100000, help="seed of the scene (object placement)")
    d.add_argument("--log-dir", default="", help="node logs (default: CHECKPOINT/../deploy-logs)")
    d.add_argument("--set", action="append", default=[], metavar="NODE:KEY=VALUE",
                   help="node parameter override, as duet up --set (repeatable)")
    d.set_defaults(func=_deploy)


def _collect(args) -> int:
    if args.via_ros:
        return _collect_via_ros(args)
    from duet.hardware.rig import load_rig
    from duet.hardware.sim.episode import ScriptedCollector, open_store
    from duet.hardware.sim.tasks import make_task

    make_task(args.task)  # validate before loading anything heavy
    if args.episodes < 1:
        raise DuetError(f"--episodes {args.episodes}: must be >= 1")
    rig = load_rig(args.rig, [f"sim_task={args.task}"])
    cams = [c for c in args.cameras.split(",") if c] or None
    render = args.render or bool(args.out)
    results = []
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
                kept = f" -> episode {r.stored_index}" if r.stored_index is not None else (" (not stored)" if rec else "")
                print(r.summary() + kept, flush=True)
                results.append({
                    "task": r.task, "seed": r.seed, "success": r.success, "completed": r.completed,
                    "flagged": r.flagged,
                    "max_stage": r.max_stage, "final_stage": r.final_stage, "ticks": r.ticks,
                    "reachable": r.reachable, "ik_error_m": r.ik_error_m, "object_poses": r.object_poses,
                    "frames": r.frames, "wall_s": round(r.wall_s, 3), "stored_index": r.stored_index,
                })
        finally:
            if rec is not None:
                rec.close()
    ok = sum(r["success"] for r in results)
    good = sum(not r["flagged"] for r in results)
    print(f"{args.task}: {ok}/{len(results)} scripted demonstrations succeeded, {good} unflagged (task done at the end)")
    if args.out:
        print(f"store: {args.out}")
    if args.report:
        out = Path(args.report)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rig": rig.name, "episodes": results}, indent=1))
        print(f"report: {out}")
    return 0 if good == len(results) else 1


def _collect_via_ros(args) -> int:
    """The ROS-graph collection (duet_ros.orchestrate; ROS code stays out of hardware/)."""
    from duet.errors import DuetError

    if not args.out:
        raise DuetError("--via-ros records into a store: give --out DIR")
    if args.episodes < 1:
        raise DuetError(f"--episodes {args.episodes}: must be >= 1")
    try:
        from duet_ros.cli import parse_sets
        from duet_ros.orchestrate import CollectOptions, collect
    except ImportError as e:
        raise DuetError(f"--via-ros needs ROS 2 (rclpy) and the duet_ros package ({e}); run make setup") from None
    rig = args.rig
    if args.task != "transfer_cube" or args.cameras or args.camera_size or args.camera_fps:
        rig = _derived_rig(args)
    log_dir = Path(args.log_dir) if args.log_dir else Path(str(args.out).rstrip("/") + ".logs")
    opts = CollectOptions(dataset=args.out, episodes=args.episodes, seed=args.seed, rig=rig,
                          keep_failed=args.keep_failed, log_dir=log_dir, overrides=parse_sets(args.set))
    if args.render_quality != "fast":
        opts.overrides.setdefault("sim", {})["render_quality"] = args.render_quality
    outcomes = collect(opts)
    kept = sum(o.kept for o in outcomes)
    ok = sum(o.success for o in outcomes)
    print(f"{len(outcomes)} episodes through the ROS graph: {ok} succeeded, {kept} stored in {args.out}")
    if args.report:
        out = Path(args.report)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rig": rig, "via_ros": True, "episodes": [o.__dict__ for o in outcomes]}, indent=1))
        print(f"report: {out}")
    return 0 if kept == len(outcomes) else 1


def _derived_rig(args) -> str:
    """A rig YAML beside the store: the sim rig with --task and only --cameras."""
    import yaml

    from duet.config import to_dict
    from duet.hardware.rig import load_rig

    rig = load_rig(args.rig, [f"sim_task={args.task}"])
    cams = [c for c in args.cameras.split(",") if c]
    if cams:
        for c in cams:
            rig.camera(c)  # a one-line error for an unknown camera
        rig.cameras = [c for c in rig.cameras if c.name in cams]
    if args.camera_size:
        try:
            h, w = (int(x) for x in args.camera_size.lower().split("x"))
        except ValueError:
            raise DuetError(f"--camera-size {args.camera_size!r}: expected HxW, e.g. 120x160") from None
        for c in rig.cameras:
            c.height, c.width = h, w
    if args.camera_fps:
        for c in rig.cameras:
            c.fps = args.camera_fps
    path = Path(str(args.out).rstrip("/") + ".rig.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(rig), sort_keys=False))
    return str(path)


def _deploy(args) -> int:
    from duet.errors import DuetError

    if not Path(args.checkpoint).is_dir():
        raise DuetError(f"--checkpoint {args.checkpoint}: not a directory (a duet train checkpoint)")
    try:
        from duet_ros.cli import parse_sets
        from duet_ros.orchestrate import deploy
    except ImportError as e:
        raise DuetError(f"sim deploy needs ROS 2 (rclpy) and the duet_ros package ({e}); run make setup") from None
    log_dir = Path(args.log_dir) if args.log_dir else Path(args.checkpoint).resolve().parent / "deploy-logs"
    out = deploy(args.rig, args.checkpoint, seconds=args.seconds, seed=args.seed, log_dir=log_dir,
                 overrides=parse_sets(args.set))
    print(out.summary())
    for e in out.events:
        print(f"  policy event: {e}")
    if not all(out.commands.values()):
        print(f"no commands reached {', '.join(k for k, v in out.commands.items() if not v)}; see {log_dir}")
        return 1
    return 0
