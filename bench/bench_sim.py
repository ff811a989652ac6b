"""MuJoCo sim backend figures: lockstep control ticks per second (50 Hz ticks of 10 physics
substeps, the scripted operator driving leaders -> safety -> followers) without and with
rendering, per camera count, resolution and render quality; and the scripted demonstration
success rate per task.

    python bench/bench_sim.py                         # modest defaults (~1-2 min on 2 CPU cores)
    python bench/bench_sim.py --seeds 50 --render-ticks 50 --big
"""

from __future__ import annotations

import argparse
import time

from duet.hardware.rig import load_rig
from duet.hardware.sim.episode import ScriptedCollector
from duet.hardware.sim.operator import plan_episode
from duet.hardware.sim.world import get_world, world_for

CAMS3 = ["cam_high", "cam_left_wrist", "cam_right_wrist"]


def _rig(name: str, task: str, width: int = 320, height: int = 240):
    rig = load_rig("aloha_sim", [f"name={name}", f"sim_task={task}"])
    for c in rig.cameras:
        c.width, c.height = width, height
    return rig


def ticks_per_s(cams: list[str], width: int, height: int, ticks: int, quality: str = "fast") -> float:
    """Ticks per second of the lockstep scripted loop (planning excluded)."""
    rig = _rig(f"bench_{len(cams)}_{width}_{quality}", "transfer_cube", width, height)
    world_for(rig).render_quality = quality
    with ScriptedCollector(rig, cameras=cams, render=bool(cams)) as c:
        c.world.reset(seed=0)
        plan = plan_episode(c.world)
        plan.joints = {k: v[:ticks] for k, v in plan.joints.items()}
        c.run(seed=0, plan=plan, correct=False)  # warm-up: GL contexts, caches
        t0 = time.perf_counter()
        r = c.run(seed=0, plan=plan, correct=False)
        dt = time.perf_counter() - t0
    get_world(rig.name).close()
    return r.ticks / dt


def success_rate(task: str, seeds: int) -> str:
    rig = _rig(f"bench_success_{task}", task)
    res = []
    with ScriptedCollector(rig, render=False) as c:
        for s in range(seeds):
            res.append(c.run(seed=1000 + s))
    get_world(rig.name).close()
    n = len(res)
    ok = sum(r.success for r in res)
    done = sum(not r.flagged for r in res)
    wall = sum(r.wall_s for r in res) / max(n, 1)
    worst = [r.max_stage for r in res if not r.success]
    return (
        f"scripted {task:13s}: success {ok}/{n} ({100 * ok / max(n, 1):.0f}%), unflagged (done at the end) "
        f"{done}/{n}, failures' max stage {worst or '-'}, {wall:.2f} s wall per episode incl. planning"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=400, help="ticks for the physics-only figure")
    ap.add_argument("--render-ticks", type=int, default=40, help="ticks for each rendering figure")
    ap.add_argument("--seeds", type=int, default=5, help="scripted episodes per task")
    ap.add_argument(
        "--big", action="store_true", help="also 3 cameras at 480x640 and full quality at 480x640"
    )
    a = ap.parse_args()

    from duet.hardware.sim.cameras import gl_backend

    print(f"GL backend: {gl_backend()} (software unless a GPU is present)")
    base = ticks_per_s([], 320, 240, a.ticks)
    print(f"lockstep, no rendering              : {base:8.1f} ticks/s ({1e3 / base:7.2f} ms/tick)")
    configs = [(1, 240, 320, "fast"), (3, 240, 320, "fast"), (1, 480, 640, "fast"), (1, 240, 320, "full")]
    if a.big:
        configs += [(3, 480, 640, "fast"), (1, 480, 640, "full")]
    for n, h, w, q in configs:
        tps = ticks_per_s(CAMS3[:n], w, h, a.render_ticks, q)
        print(
            f"lockstep, {n} camera(s) {h}x{w} {q:4s}: {tps:8.1f} ticks/s ({1e3 / tps:7.2f} ms/tick, "
            f"x{base / tps:.0f} physics-only time)"
        )
    for task in ("transfer_cube", "insertion"):
        print(success_rate(task, a.seeds))


if __name__ == "__main__":
    main()
