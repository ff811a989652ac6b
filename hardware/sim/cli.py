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
    c.set_defaults(func=_collect)


def _collect(args) -> int:
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
