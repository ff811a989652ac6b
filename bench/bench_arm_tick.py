"""Cost of one teleop tick through DynamixelArm (leader read + follower read + follower
write) against the wire-level fake bus, next to the raw MotorBus transactions it is made of.

    python bench/bench_arm_tick.py [--ticks 500] [--no-pty]

Transports: "inproc" (the fake's in-process PortHandler: pure CPU cost of the driver stack)
and "pty" (unmodified dynamixel_sdk.PortHandler on a pseudo-terminal served by the fake:
adds the OS serial path and the SDK's busy-polling). Figures are per tick, wall time, with
the share of the 20 ms budget of a 50 Hz loop; "overhead" is the arm layer (calibration,
unwrap, safety, tick conversion) over the raw bus calls in the same process.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from duet.clock import MonotonicClock
from duet.hardware.arm_model import load_arm_model
from duet.hardware.calibration import Calibration
from duet.hardware.dynamixel.arm import DynamixelArm
from duet.hardware.dynamixel.bus import Motor, MotorBus
from duet.hardware.dynamixel.control_table import Reg
from duet.hardware.factory import make_fake_bus
from duet.hardware.rig import ArmSlot
from duet.hardware.safety import SafetyLimits, safe_command


def _arm(name: str, role: str, model_name: str, transport: str, clock):
    model = load_arm_model(model_name)
    slot = ArmSlot(name=name, role=role, model=model_name)
    fake = make_fake_bus(model, slot, clock)
    if transport == "pty":
        port, ph = fake.serve_pty(), None
    else:
        port, ph = f"fake:{name}", fake.port_handler()
    motors = [Motor(s, m, n) for s, m, n in model.servos]
    bus = MotorBus(port, 1_000_000, motors, label=name, port_handler=ph, clock=clock)
    arm = DynamixelArm(name, role, model, bus, calibration=Calibration.nominal_for(model), clock=clock)
    return arm, fake


def _stats(samples: list[float]) -> str:
    a = np.array(samples) * 1e3
    return (
        f"p50 {np.percentile(a, 50):6.3f} ms  p99 {np.percentile(a, 99):6.3f} ms  "
        f"({np.percentile(a, 50) / 20.0 * 100:4.1f} % of a 20 ms tick)"
    )


def bench(transport: str, ticks: int) -> None:
    clock = MonotonicClock()
    leader, lf = _arm("leader", "leader", "wx250s", transport, clock)
    follower, ff = _arm("follower", "follower", "vx300s", transport, clock)
    leader.connect()
    follower.connect()
    try:
        arm_t, raw_t = [], []
        for _ in range(ticks):
            t0 = time.perf_counter()
            pos = leader.read().position
            follower.read()
            follower.write(pos)
            arm_t.append(time.perf_counter() - t0)
        goals = ff.servo(1).goal_position
        for _ in range(ticks):
            t0 = time.perf_counter()
            leader.bus.sync_read(("position", "velocity", "current"))
            follower.bus.sync_read(("position", "velocity", "current"))
            follower.bus.sync_write(Reg.GOAL_POSITION, [goals] * len(follower.bus.ids))
            raw_t.append(time.perf_counter() - t0)
        over = (np.median(arm_t) - np.median(raw_t)) * 1e6
        print(f"[{transport:6s}] arm tick  {_stats(arm_t)}")
        print(
            f"[{transport:6s}] raw bus   {_stats(raw_t)}   arm overhead {over:6.1f} us/tick "
            f"(x{np.median(arm_t) / np.median(raw_t):.2f})"
        )
    finally:
        follower.disconnect()
        leader.disconnect()
        lf.close()
        ff.close()


def bench_safety(n: int = 20000) -> None:
    model = load_arm_model("vx300s")
    lim = SafetyLimits.from_model(model, 50.0)
    rng = np.random.default_rng(0)
    targets = rng.uniform(-3, 3, size=(n, model.n))
    last = np.zeros(model.n)
    t0 = time.perf_counter()
    for t in targets:
        last = safe_command(t, last, lim)
    dt = (time.perf_counter() - t0) / n
    print(f"[safety] safe_command {dt * 1e6:.1f} us per call ({n} calls)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=500, help="ticks per transport")
    ap.add_argument("--no-pty", action="store_true", help="skip the pseudo-terminal transport")
    args = ap.parse_args()
    bench_safety()
    bench("inproc", args.ticks)
    if not args.no_pty:
        bench("pty", max(50, args.ticks // 2))


if __name__ == "__main__":
    main()
