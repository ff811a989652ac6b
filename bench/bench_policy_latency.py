"""Inference latency per chunk (predict_chunk, batch 1, raw uint8 images in, actions out).

ACT at the paper's size with 2 and 4 cameras at 480x640 and 240x320; Diffusion Policy (paper
U-Net, 2 cameras at 240x320) with 3, 10 and 16 DDIM steps. Each in fp32 and in bf16 autocast
+ channels_last; the ratio is against fp32 in the same process.

    python bench/bench_policy_latency.py                 # CPU, a couple of iterations each
    python bench/bench_policy_latency.py --device cuda --iters 20
    python bench/bench_policy_latency.py --only act --iters 5 --threads 2

Reference, measured on the 2-core development CPU: paper ACT, 2 cameras 480x640: 665 ms fp32,
266 ms bf16 + channels_last.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from duet.policy.factory import for_inference, make_config, make_policy, resolve_device

STATE_DIM = 14


def _stats(d: int) -> dict:
    return {
        "observation.state": {"mean": np.zeros(d), "std": np.ones(d)},
        "action": {"mean": np.zeros(d), "std": np.ones(d)},
    }


def _obs(cams: list[str], hw: tuple[int, int], n_obs: int, rng: np.random.Generator) -> dict:
    obs = {"observation.state": rng.standard_normal((n_obs, STATE_DIM)).astype(np.float32)}
    for c in cams:
        obs[f"observation.images.{c}"] = rng.integers(0, 255, (n_obs, *hw, 3), dtype=np.uint8)
    return obs


def _time(policy, obs, iters: int, warmup: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        policy.predict_chunk(obs)
    out = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        policy.predict_chunk(obs)  # returns numpy: synchronizes with the device
        out.append((time.perf_counter() - t) * 1000)
    return out


def _bench(label: str, name: str, overrides: list[str], cams: list[str], hw, args, device, rng) -> None:
    base = {"camera_names": cams, "state_dim": STATE_DIM, "action_dim": STATE_DIM}
    cfg = make_config(name, "paper", overrides, base=base)
    torch.manual_seed(0)
    policy = make_policy(name, cfg, _stats(STATE_DIM)).to(device).eval()
    obs = _obs(cams, hw, cfg.n_obs_steps, rng)
    res = {}
    for mode in ("fp32", "bf16+cl"):
        if mode == "bf16+cl":
            for_inference(policy, device, bf16=True, channels_last=True)
        ms = _time(policy, obs, args.iters, args.warmup, device)
        res[mode] = statistics.median(ms)
    ratio = res["fp32"] / res["bf16+cl"]
    print(
        f"{label:<44} fp32 {res['fp32']:8.1f} ms   bf16+cl {res['bf16+cl']:8.1f} ms   speed-up x{ratio:4.2f}",
        flush=True,
    )
    del policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    ap.add_argument("--iters", type=int, default=2, help="timed calls per configuration (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    ap.add_argument("--only", choices=["act", "diffusion"], help="run one policy only")
    ap.add_argument(
        "--full", action="store_true", help="also ACT with 7 decoder layers (the paper's nominal size)"
    )
    args = ap.parse_args()
    import os

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.iters} after {args.warmup} warm-up"
    )
    cams4 = ["cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"]
    if args.only in (None, "act"):
        for hw in ((480, 640), (240, 320)):
            for n in (2, 4):
                _bench(
                    f"ACT paper (1 dec layer) {n} cams {hw[0]}x{hw[1]}",
                    "act",
                    [],
                    cams4[:n],
                    hw,
                    args,
                    device,
                    rng,
                )
        if args.full:
            _bench(
                "ACT paper (7 dec layers) 2 cams 480x640",
                "act",
                ["n_decoder_layers=7"],
                cams4[:2],
                (480, 640),
                args,
                device,
                rng,
            )
    if args.only in (None, "diffusion"):
        for steps in (3, 10, 16):
            _bench(
                f"Diffusion (U-Net 512-2048) 2 cams 240x320, {steps} DDIM",
                "diffusion",
                [f"num_inference_steps={steps}"],
                cams4[:2],
                (240, 320),
                args,
                device,
                rng,
            )


if __name__ == "__main__":
    main()
