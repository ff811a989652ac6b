"""Training throughput (samples/s) of one optimizer step: forward + backward + AdamW (+ EMA).

CPU by default with the "tiny" presets (images 96x128; `make demo` trains ACT "small"); with
--device cuda (or auto on a GPU machine) also the paper-size configs at 480x640, fp32 vs bf16
autocast. Batches come from the in-memory synthetic dataset, so data loading is excluded;
--e2e adds a run through the Trainer (DataLoader, checkpoints off) for comparison.

    python bench/bench_policy_train.py
    python bench/bench_policy_train.py --steps 20 --batch 16 --e2e
    python bench/bench_policy_train.py --device cuda --steps 50
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from duet.policy.factory import make_config, make_policy, resolve_device
from duet.policy.normalize import compute_stats
from duet.policy.synthetic import SyntheticEpisodes

STATE_DIM = 14


def _dataset(cfg, name, cams, hw):
    horizon = cfg.chunk_size if name == "act" else cfg.horizon
    return SyntheticEpisodes(
        n_episodes=2,
        episode_len=max(64, horizon + 4),
        n_obs_steps=cfg.n_obs_steps,
        horizon=horizon,
        state_dim=STATE_DIM,
        camera_names=cams,
        image_hw=hw,
    )


def bench_step(
    name: str, preset: str, cams: list[str], hw, batch: int, steps: int, device, bf16: bool
) -> float:
    base = {"camera_names": cams, "state_dim": STATE_DIM, "action_dim": STATE_DIM, "batch_size": batch}
    cfg = make_config(name, preset, base=base)
    ds = _dataset(cfg, name, cams, hw)
    torch.manual_seed(0)
    policy = make_policy(name, cfg, compute_stats(ds, max_items=64)).to(device).train()
    opt = torch.optim.AdamW(policy.optimizer_param_groups(), lr=cfg.lr)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(ds), batch, replace=len(ds) < batch)
    items = [ds[int(i)] for i in idx]
    b = {k: torch.as_tensor(np.stack([it[k] for it in items])).to(device) for k in items[0]}

    def step(i: int) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = policy(b)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        policy.after_optimizer_step(i)

    for i in range(2):  # warm-up
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def bench_e2e(name: str, cams, hw, batch: int, steps: int, device) -> float:
    from duet.policy.train import TrainConfig, train

    base = {"camera_names": cams, "state_dim": STATE_DIM, "action_dim": STATE_DIM, "batch_size": batch}
    cfg = make_config(name, "tiny", base=base)
    ds = _dataset(cfg, name, cams, hw)
    tc = TrainConfig(
        steps=steps, num_workers=2, val_every=10**9, save_every=10**9, device=str(device), compile="off"
    )
    with tempfile.TemporaryDirectory() as d:
        res = train(name, cfg, tc, ds, None, compute_stats(ds, max_items=64), d, progress=False)
    return res.samples_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per configuration")
    ap.add_argument("--batch", type=int, default=8, help="batch size")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    ap.add_argument("--e2e", action="store_true", help="also time the Trainer with DataLoader workers")
    args = ap.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = resolve_device(args.device)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.steps} timed steps"
    )
    cams = ["cam_high", "cam_left_wrist"]
    runs = [("act", "tiny", (96, 128)), ("diffusion", "tiny", (96, 128))]
    if device.type == "cuda":
        runs += [("act", "paper", (480, 640)), ("diffusion", "paper", (240, 320))]
    for name, preset, hw in runs:
        fp32 = bench_step(name, preset, cams, hw, args.batch, args.steps, device, bf16=False)
        line = f"{name:<9} {preset:<5} 2 cams {hw[0]}x{hw[1]}: fp32 {fp32:8.1f} samples/s"
        if device.type == "cuda":
            bf = bench_step(name, preset, cams, hw, args.batch, args.steps, device, bf16=True)
            line += f"   bf16 {bf:8.1f} samples/s (x{bf / fp32:4.2f})"
        print(line, flush=True)
    if args.e2e:
        for name in ("act", "diffusion"):
            sps = bench_e2e(name, cams, (96, 128), args.batch, max(args.steps, 6), device)
            print(f"{name:<9} tiny  Trainer end to end (2 workers): {sps:8.1f} samples/s", flush=True)


if __name__ == "__main__":
    main()
