"""Recorder core under load: 4 synthetic 640x480 cameras + 4 arms at 50 Hz, real time.

Prints: frames dropped (target 0), recorder CPU share, MB per minute, writer headroom
(frames encoded + written per second of writer time / frames needed per second; target
>= 1.5) and the tick's own cost. Default 30 s; the issue's soak test is --duration 600.

    python bench/bench_data_recorder.py [--duration 30] [--cameras 4] [--quality 90] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np

from duet.clock import FakeClock, MonotonicClock, Pacer
from duet.data.layout import ArmSpec, CameraSpec, DatasetSpec
from duet.data.recorder import Recorder, RecorderConfig, process_cpu_s
from duet.data.store import EpisodeStore
from duet.hardware.interfaces import Frame, JointState


def synthetic_frames(n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    """Textured, moving scenes (JPEG cost close to a real camera's, unlike flat or noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack(
        [128 + 60 * np.sin(xx / 23 + seed), 128 + 60 * np.cos(yy / 17), 128 + 40 * np.sin((xx + yy) / 31)], -1
    )
    out = []
    for k in range(n):
        img = base + rng.normal(0, 6, base.shape)
        x0, y0 = (37 * k) % (w - 120), (23 * k) % (h - 90)
        img[y0 : y0 + 90, x0 : x0 + 120] = (40 * k) % 255
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of recording")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--arms", type=int, default=4)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--encoders", type=int, default=2, help="writer JPEG encoder threads")
    ap.add_argument(
        "--saturate", type=float, default=5.0, help="seconds of data for the writer capacity test"
    )
    ap.add_argument("--dir", default=None, help="where to create the store (default: a temp dir)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    arm_names = ["left_follower", "right_follower", "left_leader", "right_leader"][: a.arms]
    spec = DatasetSpec(
        rate_hz=a.rate,
        arms=[ArmSpec(n, "leader" if "leader" in n else "follower") for n in arm_names],
        cameras=[CameraSpec(f"cam{i}", 640, 480) for i in range(a.cameras)],
        jpeg_quality=a.quality,
    )
    tmp = tempfile.mkdtemp(prefix="bench_rec_", dir=a.dir)
    path = os.path.join(tmp, "bench.zarr")
    store = EpisodeStore.create(path, spec)
    frames = {c.name: synthetic_frames(16, 480, 640, i) for i, c in enumerate(spec.cameras)}
    clock = MonotonicClock()
    rec = Recorder(store, clock=clock, config=RecorderConfig(encoder_threads=a.encoders))
    pacer = Pacer(a.rate, clock)
    n_ticks = int(a.duration * a.rate)
    tick_cost = np.empty(n_ticks)
    print(
        f"recording {a.duration:.0f} s: {a.cameras} cameras 640x480 + {a.arms} arms at {a.rate:g} Hz -> {path}"
    )
    rec.start_episode(task="bench")
    cpu0, wall0 = process_cpu_s(), time.perf_counter()
    pacer.start()
    for k in range(n_ticks):
        now = pacer.wait()
        for n in arm_names:
            q = np.full(7, np.sin(k / 50), np.float32)
            rec.update_joints(n, JointState(now - 0.002, tuple(spec.arm(n).joints), q, q, q))
        for f in spec.followers:
            rec.update_command(f, np.full(7, np.sin(k / 50), np.float32), now - 0.001)
        for c in spec.cameras:
            rec.update_frame(c.name, Frame(now - 0.01, k, frames[c.name][k % 16]))
        t0 = time.perf_counter()
        rec.tick(clock.now())
        tick_cost[k] = time.perf_counter() - t0
    wall_rec = time.perf_counter() - wall0
    t_stop = time.perf_counter()
    res = rec.stop_episode()
    drain = time.perf_counter() - t_stop
    cpu = process_cpu_s() - cpu0
    wall = time.perf_counter() - wall0
    st = rec.stats
    rec.close()
    disk = store.disk_bytes() or 0
    m = res.meta
    needed = a.cameras * a.rate

    # Writer capacity: feed a.saturate seconds of ticks as fast as possible (no pacing,
    # no drops allowed) and time until the episode is committed.
    n_sat = int(a.saturate * a.rate)
    fake = FakeClock()
    rec2 = Recorder(
        store,
        clock=fake,
        config=RecorderConfig(encoder_threads=a.encoders, max_pending_frames=n_sat * a.cameras + 1),
    )
    rec2.start_episode(task="saturate")
    t0 = time.perf_counter()
    for k in range(n_sat):
        now = fake.now()
        for n in arm_names:
            q = np.full(7, np.sin(k / 50), np.float32)
            rec2.update_joints(n, JointState(now, tuple(spec.arm(n).joints), q, q, q))
        for f in spec.followers:
            rec2.update_command(f, np.full(7, np.sin(k / 50), np.float32), now)
        for c in spec.cameras:
            rec2.update_frame(c.name, Frame(now, k, frames[c.name][k % 16]))
        rec2.tick(now)
        fake.advance(1 / a.rate)
    rec2.stop_episode()
    sat_s = time.perf_counter() - t0
    rec2.close()
    busy_rate = n_sat * a.cameras / sat_s
    dropped = int(m.get("writer_dropped", 0)) + sum(int(c["dropped_frames"]) for c in m["cameras"].values())
    timing = pacer.stats.summary()
    print(f"health: {res.line}")
    print(f"frames dropped:        {dropped} (writer repeats {m.get('writer_dropped', 0)}; target 0)")
    print(
        f"recorder CPU share:    {cpu / wall:.2f} cores ({100 * cpu / wall / (os.cpu_count() or 1):.0f}% of "
        f"{os.cpu_count()} cores), incl. the synthetic sensor loop"
    )
    print(
        f"MB per minute:         {disk / 1e6 / (wall_rec / 60):.0f} MB/min on disk ({disk / 1e6:.0f} MB total)"
    )
    print(
        f"writer headroom:       {busy_rate / needed:.2f}x ({busy_rate:.0f} frames/s encoded + written when "
        f"saturated, vs {needed:.0f} needed; target >= 1.5)"
    )
    print(f"writer thread busy:    {100 * st.write_busy_s / wall:.0f}% of wall during the real-time run")
    fm = m.get("flush_ms", {})
    print(
        f"flushes (1/s):         rows max {fm.get('rows_max', 0):.0f} ms, syncfs p50 {fm.get('sync_p50', 0):.0f} ms "
        f"max {fm.get('sync_max', 0):.0f} ms, wait for images max {fm.get('wait_images_max', 0):.0f} ms"
    )
    print(f"commit/drain at stop:  {drain * 1e3:.0f} ms")
    print(
        f"tick cost:             p50 {np.percentile(tick_cost, 50) * 1e6:.0f} us, "
        f"p99 {np.percentile(tick_cost, 99) * 1e6:.0f} us, max {tick_cost.max() * 1e6:.0f} us"
    )
    print(f"tick timing:           {timing.line()}")
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
