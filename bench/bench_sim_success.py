"""Success benchmark on the MuJoCo sim (issue 7): scripted demonstrations -> ACT -> closed-loop
evaluation through the policy server, success per stage with 95% Wilson intervals.

    python bench/bench_sim_success.py --quick                  # smoke size, a few minutes on 2 CPU cores
    python bench/bench_sim_success.py                          # GPU: the full benchmark (below); CPU: --quick size
    python bench/bench_sim_success.py --full --steps 30000     # CPU: ACT `small`, 120x160 (about 50 min on 2 cores)
    python bench/bench_sim_success.py --task insertion --steps 40000 --modes ensemble
    python bench/bench_sim_success.py --dataset runs/x/demos.zarr --checkpoint runs/x/train/checkpoints/best

Full size: 50 scripted demonstrations (seeds 0..; flagged demonstrations are not kept), ACT
trained for --steps (default 20000) on cam_high (on a GPU preset `paper` at 240x320; on a CPU
preset `small` at 120x160), then 50 evaluation episodes (seeds from 100000, disjoint from the demonstrations) of
the task's length (400 ticks at 50 Hz) in lockstep with zero-latency inference, per server mode
(--modes, default ensemble and async). --quick: 4 demonstrations, a micro ACT for 200 steps on
48x64 images, 4 evaluation episodes, async mode: checks the pipeline, not the success rate.

Reference targets for the full size: transfer_cube >= 95% (the ACT paper reports 86% from
scripted data), insertion >= 60% (paper: 32%). Everything (store, run, eval reports, videos)
is kept under --out.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

TARGETS = {"transfer_cube": (0.95, 0.86), "insertion": (0.60, 0.32)}  # (issue target, ACT paper, scripted)

FULL = {
    "demos": 50,
    "steps": 20000,
    "episodes": 50,
    "camera_size": None,
    "modes": "ensemble,async",
    "preset": None,
    "videos": 3,
}
CAMERA_SIZE = {
    "paper": "240x320",
    "small": "120x160",
    "tiny": "120x160",
    "micro": "48x64",
}  # full-size defaults
QUICK = {
    "demos": 4,
    "steps": 200,
    "episodes": 4,
    "camera_size": "48x64",
    "modes": "async",
    "preset": "micro",
    "videos": 1,
}


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("--task", default="transfer_cube", choices=sorted(TARGETS))
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke size (minutes on a CPU)")
    size.add_argument("--full", action="store_true", help="full size even without a GPU")
    p.add_argument("--demos", type=int, help="scripted demonstrations to keep (full 50, quick 4)")
    p.add_argument("--steps", type=int, help="ACT training steps (full 20000, quick 200)")
    p.add_argument("--episodes", type=int, help="evaluation episodes per mode (full 50, quick 4)")
    p.add_argument(
        "--preset",
        choices=("paper", "small", "tiny", "micro"),
        help="ACT size (default: paper on GPU, small on CPU; quick: micro)",
    )
    p.add_argument(
        "--camera", default="cam_high", help="the camera the policy sees (ACT sim: the top camera)"
    )
    p.add_argument(
        "--camera-size", help="HxW of the rendered camera (full: 240x320 paper, 120x160 small; quick 48x64)"
    )
    p.add_argument(
        "--modes", help="comma-separated server modes to evaluate (full ensemble,async; quick async)"
    )
    p.add_argument(
        "--latency", default="zero", help="evaluation latency: zero, measured or ms (see duet eval)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the preset's)")
    p.add_argument(
        "--workers", type=int, help="data-loading worker processes (default: quick 0, full min(4, cores))"
    )
    p.add_argument(
        "--backbone-weights", help="ImageNet resnet18 weights (.safetensors/.pth) for the paper preset"
    )
    p.add_argument(
        "--use-best", action="store_true", help="evaluate the best-validation checkpoint, not the last"
    )
    p.add_argument("--dataset", help="reuse this demonstration store (skip collection)")
    p.add_argument("--checkpoint", help="reuse this checkpoint (skip collection and training)")
    p.add_argument("--videos", type=int, help="MP4s of the first N evaluation episodes per mode")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training override on top of the preset, as duet train --set (policy.chunk_size=100, "
        "train.lr=...); repeatable",
    )
    p.add_argument("--out", type=Path, help="output directory (default runs/bench-sim-<task>-<time>)")
    return p.parse_args()


def _hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def collect(task: str, n: int, store_path: Path, camera: str, hw: tuple[int, int]) -> dict:
    """Scripted demonstrations until n are stored (flagged ones are discarded by the collector)."""
    from duet.apps.sim import open_store
    from duet.data.recorder import Recorder
    from duet.hardware.rig import load_rig
    from duet.hardware.sim.episode import ScriptedCollector
    from duet.hardware.sim.world import get_world

    rig = load_rig("aloha_sim", ["name=bench_success_collect", f"sim_task={task}"])
    slot = rig.camera(camera)
    slot.height, slot.width = hw
    rig.cameras = [slot]
    t0 = time.perf_counter()
    tried = 0
    with ScriptedCollector(rig, task=task, cameras=[camera]) as col:
        store = open_store(str(store_path), rig, [camera])
        rec = Recorder(store, clock=col.clock, rig=rig)
        try:
            from tqdm import tqdm

            bar = tqdm(total=n, desc=f"collect {task}", unit="demo", dynamic_ncols=True)
            have = store.n_episodes
            bar.update(have)
            seed = 0
            while have < n:
                if tried >= 3 * n:
                    sys.exit(f"only {have} of {tried} scripted demonstrations succeeded; giving up")
                r = col.run(seed=seed, recorder=rec)
                tried += 1
                seed += 1
                if r.stored_index is not None:
                    have += 1
                    bar.update(1)
            bar.close()
        finally:
            rec.close()
    w = get_world(rig.name)
    if w is not None:
        w.close()
    return {"kept": n, "tried": tried, "wall_s": time.perf_counter() - t0}


def main() -> int:
    args = _args()
    import torch

    gpu = torch.cuda.is_available() and args.device != "cpu"
    quick = args.quick or (not args.full and not gpu)
    size = dict(QUICK if quick else FULL)
    if not args.quick and quick:
        print("no GPU: running the --quick size (pass --full for the full benchmark on CPU: many hours)")
    elif not quick and not gpu:
        print(
            "full benchmark on CPU: ACT `small` at 120x160 trains at about 100 samples/s on 2 cores "
            "(30000 steps: about 40 min); use --quick to smoke-test"
        )
    for k in ("demos", "steps", "episodes", "camera_size", "modes", "preset", "videos"):
        v = getattr(args, k)
        if v is not None:
            size[k] = v
    preset = size["preset"] or ("paper" if gpu else "small")
    size["camera_size"] = size["camera_size"] or CAMERA_SIZE[preset]
    workers = args.workers if args.workers is not None else (0 if quick else min(4, os.cpu_count() or 1))
    hw = _hw(size["camera_size"])
    modes = [m for m in size["modes"].split(",") if m]
    out = args.out or Path("runs") / f"bench-sim-{args.task}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"task {args.task}: {size['demos']} demos, ACT {preset} {size['steps']} steps, {size['episodes']} "
        f"eval episodes x modes {','.join(modes)}, camera {args.camera} {hw[0]}x{hw[1]}, "
        f"device {'cuda' if gpu else 'cpu'}; output {out}"
    )

    summary: dict = {"task": args.task, "preset": preset, "overrides": args.set, "size": size, "quick": quick}
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    if ckpt is None:
        store = Path(args.dataset) if args.dataset else out / "demos.zarr"
        if not args.dataset:
            c = collect(args.task, size["demos"], store, args.camera, hw)
            summary["collect"] = c
            print(f"collected {c['kept']} demonstrations ({c['tried']} tried) in {c['wall_s']:.0f} s")
        from duet.policy.train import train_on_store

        over = [
            f"train.steps={size['steps']}",
            f"train.device={args.device}",
            f"train.num_workers={workers}",
            f"train.save_every={size['steps']}",
            f"train.val_every={max(1, size['steps'] // 10)}",
            f"train.log_every={max(1, min(100, size['steps'] // 20))}",
        ]
        over += args.set
        if args.batch_size:
            over.append(f"policy.batch_size={args.batch_size}")
        if args.backbone_weights:
            over.append(f"policy.backbone_weights={Path(args.backbone_weights).resolve()}")
        elif preset == "paper":
            over.append(
                "policy.backbone_norm=group_norm"
            )  # no ImageNet weights: frozen BN would normalize nothing
        if not gpu and preset == "paper":
            print("WARNING: the paper-size ACT on a CPU trains at a few samples per second")
        t0 = time.perf_counter()
        res = train_on_store(
            "act", store, out / "train", preset=preset, overrides=over, camera_names=[args.camera]
        )
        train_s = time.perf_counter() - t0
        last = res.history["train"][-1] if res.history.get("train") else {}
        summary["train"] = {
            "steps": res.step,
            "wall_s": train_s,
            "samples_per_s": res.samples_per_s,
            "final": last,
            "best_val_loss": res.best_val_loss,
        }
        print(
            f"trained ACT ({preset}) {res.step} steps in {train_s:.0f} s ({res.samples_per_s:.1f} samples/s), "
            f"final loss {last.get('loss', float('nan')):.4g} (l1 {last.get('l1', float('nan')):.4g})"
            + (f", best val loss {res.best_val_loss:.4g}" if res.best_val_loss is not None else "")
        )
        ckpt = res.best_checkpoint if args.use_best and res.best_checkpoint else res.last_checkpoint

    from duet.policy.evaluate import EvalConfig, evaluate
    from duet.policy.factory import load_policy

    lat = args.latency.lower()
    lat_kw = (
        {"latency": lat} if lat in ("zero", "measured") else {"latency": "fixed", "latency_ms": float(lat)}
    )
    policy = load_policy(ckpt, args.device)
    results = {}
    for mode in modes:
        cfg = EvalConfig(
            task=args.task,
            episodes=size["episodes"],
            mode=mode,
            device=args.device,
            videos=size["videos"],
            **lat_kw,
        )
        rep = evaluate(ckpt, cfg, out / f"eval-{mode}", policy=policy)
        results[mode] = rep
        summary.setdefault("eval", {})[mode] = {
            "report": str(rep.path),
            "stages": rep.stages,
            "wall_s": rep.wall_s,
        }

    goal, paper = TARGETS[args.task]
    print(
        f"\n== {args.task}: ACT {preset}, {summary.get('train', {}).get('steps', '?')} training steps, "
        f"checkpoint {ckpt}"
    )
    if "train" in summary:
        t = summary["train"]
        print(f"training: {t['steps']} steps, {t['wall_s']:.0f} s, {t['samples_per_s']:.1f} samples/s")
    for mode, rep in results.items():
        print(f"-- mode {mode}")
        for line in rep.lines():
            print(line)
        s = rep.stages[-1]
        verdict = "meets" if s["rate"] >= goal else "below"
        print(
            f"  success {100 * s['rate']:.1f}% (95% CI {100 * s['ci95'][0]:.1f}-{100 * s['ci95'][1]:.1f}): "
            f"{verdict} the {100 * goal:.0f}% target (ACT paper, scripted data: {100 * paper:.0f}%)"
            + ("  [quick size: not a meaningful success rate]" if quick else "")
        )
    from duet.jsonio import jsonable

    (out / "bench_summary.json").write_text(json.dumps(jsonable(summary, finite=True), indent=1))
    print(f"summary: {out / 'bench_summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
