"""Training sampler throughput: samples/s with 4 cameras 640x480 (JPEG), reading and
decoding in the main process and in 1 and 2 DataLoader workers.

    python bench/bench_data_sampler.py [--episodes 2] [--steps 150] [--n-obs 2] [--horizon 16] [--batch 8]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import numpy as np

from duet.data.layout import ArmSpec, CameraSpec, DatasetSpec
from duet.data.sampler import EpisodeSampler
from duet.data.store import EpisodeStore, encode_jpeg


def build(path: str, episodes: int, steps: int, cams: int) -> EpisodeStore:
    spec = DatasetSpec(
        arms=[ArmSpec("left_follower"), ArmSpec("right_follower")],
        cameras=[CameraSpec(f"cam{i}", 640, 480) for i in range(cams)],
    )
    store = EpisodeStore.create(path, spec)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    rng = np.random.default_rng(0)
    base = np.stack(
        [128 + 60 * np.sin(xx / 23), 128 + 60 * np.cos(yy / 17), 128 + 40 * np.sin((xx + yy) / 31)], -1
    )
    pool = [
        encode_jpeg(np.clip(base + rng.normal(0, 4, base.shape) + 7 * k, 0, 255).astype(np.uint8), 90)
        for k in range(8)
    ]
    for _ in range(episodes):
        with store.episode({"task": "bench"}) as ep:
            ep.extend(
                {
                    "left_follower.position": rng.random((steps, 7)),
                    "right_follower.position": rng.random((steps, 7)),
                    "action": rng.random((steps, 14)),
                    **{f"cam{i}.color": [pool[(k + i) % 8] for k in range(steps)] for i in range(cams)},
                }
            )
    return store


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--n-obs", type=int, default=2)
    ap.add_argument("--horizon", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--samples", type=int, default=160, help="samples timed per configuration")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_sampler_")
    try:
        store = build(f"{tmp}/s.zarr", a.episodes, a.steps, a.cameras)
        ds = EpisodeSampler(store.location, a.n_obs, a.horizon)
        n = min(a.samples, len(ds))
        idx = np.random.default_rng(1).permutation(len(ds))[:n]
        print(f"{len(ds)} samples; {a.cameras} cameras 640x480 JPEG, n_obs {a.n_obs}, horizon {a.horizon}")
        ds[0]
        r0 = rate(lambda: [ds[int(i)] for i in idx], n)
        lowdim = EpisodeSampler(store.location, a.n_obs, a.horizon, camera_names=[])
        rl = rate(lambda: [lowdim[int(i)] for i in idx], n)
        print(f"main process:        {r0:7.1f} samples/s ({r0 * a.n_obs * a.cameras:.0f} frames decoded/s)")
        print(f"low-dim only:        {rl:7.0f} samples/s (no images: the indexing overhead)")
        try:
            import torch
        except ImportError:
            print("torch not installed: DataLoader figures skipped")
            return 0
        for workers in (1, 2):
            sub = torch.utils.data.Subset(ds, idx.tolist())
            dl = torch.utils.data.DataLoader(
                sub, batch_size=a.batch, num_workers=workers, shuffle=False, persistent_workers=False
            )
            it = iter(dl)
            next(it)  # worker start-up excluded
            t = time.perf_counter()
            got = sum(b["action"].shape[0] for b in it)
            r = got / (time.perf_counter() - t)
            print(
                f"DataLoader {workers} worker{'s' if workers > 1 else ' '}: {r:7.1f} samples/s "
                f"({r / r0:.2f}x the main process)"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
