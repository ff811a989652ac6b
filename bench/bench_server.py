"""Policy server benchmark: a paper-size ACT (random weights) served at 50 Hz.

Measures, in one process:
  baseline  the same 50 Hz loop with a policy that costs nothing (period error of the loop alone)
  ACT       the paper-size ACT (ResNet18, 4 encoder / 1 decoder layers, d=512, chunk 100) with 2
            cameras at 480x640, in the chosen mode (default asynchronous)
and prints mean rate, period error p99 (target <= 1 ms), deadline misses (target 0), boundary
jumps, inference latency p50/p99 and observation-to-arrival latency.

Inputs are synthetic: joint states of a perfectly position-controlled pair of vx300s arms
(the command becomes the next reading), and two pre-generated 480x640 frames per camera.

    python bench/bench_server.py                      # 60 s, async, CPU
    python bench/bench_server.py --duration 600       # the issue's 10 minutes
    python bench/bench_server.py --device cuda --mode ensemble   # GPU: ensembling at 50 Hz
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from duet.clock import MonotonicClock, Pacer, set_realtime
from duet.hardware.arm_model import load_arm_model
from duet.hardware.interfaces import CameraReading, Frame, JointState
from duet.hardware.safety import SafetyLimits
from duet.policy.interface import ActionChunk
from duet.policy.server import PolicyServer, ServerConfig

CAMS = ("cam_high", "cam_low")
RATE = 50.0


def make_act(device: str, bf16: bool, channels_last: bool, image_size: list[int] | None, home: np.ndarray):
    try:
        import torch

        from duet.policy.factory import for_inference, make_config, make_policy
    except ImportError as e:
        sys.exit(f"bench_server: the ACT policy is not available ({e}); it needs policy/act.py and torch")
    base = {"camera_names": list(CAMS), "state_dim": 14, "action_dim": 14}
    if image_size:
        base["image_size"] = image_size
    cfg = make_config("act", "paper", base=base)
    stats = {
        k: {"mean": home.astype(np.float32), "std": np.full(14, 0.05, np.float32)}
        for k in ("observation.state", "action")
    }
    torch.manual_seed(0)
    return for_inference(make_policy("act", cfg, stats), device, bf16=bf16, channels_last=channels_last)


class FreePolicy:
    """Costs nothing: the baseline loop (a chunk that holds the observed pose)."""

    n_obs_steps = 1
    horizon = 100
    n_action_steps = 100
    control_dt = 1.0 / RATE
    camera_names = CAMS
    action_dim = 14

    def reset(self):
        pass

    def predict_chunk(self, obs):
        s = obs["observation.state"][-1].astype(np.float64)
        return ActionChunk(np.repeat(s[None], self.horizon, 0), np.arange(self.horizon) * self.control_dt)


def run(policy, cfg: ServerConfig, limits: SafetyLimits, home: np.ndarray, duration: float, warmup: float):
    clock = MonotonicClock()
    rng = np.random.default_rng(0)
    frames = {c: [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(2)] for c in CAMS}
    names = tuple(f"j{i}" for i in range(14))
    pos = home.copy()
    server = PolicyServer(policy, cfg, limits, clock)
    server.start()
    pacer = Pacer(RATE, clock)
    try:
        t_start = clock.now()
        measuring = False
        pacer.start()
        i = 0
        while True:
            t = pacer.wait()
            if not measuring and t - t_start >= warmup:
                # Model warm-up (first inferences, allocator) is not part of the figures.
                server.recorder.reset()
                pacer.stats.reset()
                measuring = True
                t_meas = t
            if measuring and t - t_meas >= duration:
                break
            i += 1
            js = JointState(t, names, pos.copy(), np.zeros(14), np.zeros(14))
            cams = {c: CameraReading(Frame(t - 0.005, i, frames[c][i % 2]), 0.005, False, True) for c in CAMS}
            server.observe([js], cams)
            r = server.tick(t)
            if r.command is not None:
                pos = r.command
    finally:
        misses = [e for e in server.drain_events() if e.kind in ("late_chunk", "deadline_miss")]
        for e in misses[:5]:
            print(f"  event at {e.t - t_start:.2f} s: {e.kind}: {e.detail}")
        if server.worker.scheduling_note:
            print(f"  note: {server.worker.scheduling_note}")
        if not server.stop(timeout=10):
            print("warning: inference worker still busy at exit", file=sys.stderr)
    return pacer.stats.summary(), server.stats()


def report(title: str, period, st) -> None:
    print(f"== {title}")
    print(f"  loop: {period.line()}")
    for line in st.lines():
        print(f"  {line}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds measured with ACT (issue: 600)")
    p.add_argument(
        "--baseline", type=float, default=5.0, help="seconds of the no-inference baseline (0: skip)"
    )
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring (model warm-up)")
    p.add_argument("--mode", choices=("async", "ensemble", "receding"), default="async")
    p.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (0: torch default); 1 leaves a core to the loop on 2 cores",
    )
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast (slower on CPU)")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="resize camera images before the backbone (default: 480x640 as captured)",
    )
    p.add_argument("--n-action-steps", type=int, default=0, help="execution window (0: the policy's, 100)")
    p.add_argument("--margin", type=int, default=5, help="trigger margin, ticks")
    p.add_argument("--blend", type=int, default=5, help="cross-fade ticks at chunk boundaries")
    p.add_argument(
        "--rt-priority",
        type=int,
        default=50,
        help="run the 50 Hz loop thread under SCHED_FIFO at this priority (needs root; 0: off)",
    )
    p.add_argument(
        "--worker-rt-priority",
        type=int,
        default=10,
        help="SCHED_FIFO priority of the inference worker, below the loop's (0: SCHED_OTHER + --nice)",
    )
    p.add_argument("--nice", type=int, default=10, help="niceness added to the inference worker thread")
    p.add_argument(
        "--gil-interval", type=float, default=0.0005, help="sys.setswitchinterval while serving (0: leave)"
    )
    args = p.parse_args(argv)

    model = load_arm_model("vx300s")
    one = SafetyLimits.from_model(model, RATE)
    limits = SafetyLimits(np.tile(one.lower, 2), np.tile(one.upper, 2), np.tile(one.max_step, 2))
    home = np.clip(np.zeros(14), limits.lower, limits.upper)
    home[[6, 13]] = 0.5  # grippers half open
    import torch

    rt = args.rt_priority
    if rt > 0:
        why = set_realtime(rt)
        print(f"loop thread SCHED_FIFO {rt}: {why or 'on'}")
        rt = 0 if why else rt

    common = dict(
        trigger_margin_ticks=args.margin,
        blend_ticks=args.blend,
        n_action_steps=args.n_action_steps,
        torch_threads=args.torch_threads,
        gil_switch_interval_s=args.gil_interval,
        worker_nice=args.nice,
        worker_rt_priority=args.worker_rt_priority if rt > 0 else 0,
        max_camera_age_s=0.1,
        inference_timeout_s=5.0,
        rate_hz=RATE,
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads available; device {args.device}; "
        f"mode {args.mode}; bf16 {not args.fp32}; "
        f"torch threads {args.torch_threads or 'default'}; worker "
        f"{f'SCHED_FIFO {args.worker_rt_priority}' if rt > 0 else f'nice +{args.nice}'}"
    )
    base = None
    if args.baseline > 0:
        base = run(FreePolicy(), ServerConfig(mode=args.mode, **common), limits, home, args.baseline, 1.0)
        report(f"baseline: {args.mode} loop, inference free ({args.baseline:.0f} s)", *base)
    t = time.monotonic()
    policy = make_act(
        args.device,
        bf16=not args.fp32,
        channels_last=not args.no_channels_last,
        image_size=args.image_size,
        home=home,
    )
    n_par = sum(p.numel() for p in policy.parameters()) / 1e6
    print(
        f"ACT built in {time.monotonic() - t:.1f} s: {n_par:.1f} M parameters, chunk {policy.horizon}, "
        f"images {args.image_size or [480, 640]}"
    )
    period, st = run(policy, ServerConfig(mode=args.mode, **common), limits, home, args.duration, args.warmup)
    report(f"ACT paper-size: {args.mode}, {args.device} ({args.duration:.0f} s)", period, st)
    if base is not None and base[0].p99_error_ms > 0:
        print(f"period error p99 with ACT / without: {period.p99_error_ms / base[0].p99_error_ms:.2f}x")
    ok = period.p99_error_ms <= 1.0 and st.deadline_misses == 0
    print(f"targets (p99 period error <= 1 ms, 0 deadline misses): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
