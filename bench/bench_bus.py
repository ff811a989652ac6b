"""Per-tick cost of the Dynamixel bus layer: one sync read (position + velocity + current) of
N servos + one sync write of goal positions, through the in-process fake bus.

Prints median / p99 of the whole tick, the fake bus's own share (servo-side parsing, motion
simulation, status-packet encoding), and the rest: the driver-side Python overhead
(MotorBus + dynamixel_sdk). Baseline in the same process: the plain SDK way (GroupSyncRead
txRxPacket + getData per value, GroupSyncWrite), which has no retries, no alert checks and no
vectorised decoding. Next to it: the bus time the same transaction takes on the wire at
1 and 4 Mbaud, computed from the packet sizes (10 bits per byte) plus the servos' return delay.

    python bench/bench_bus.py [--seconds 5] [--servos 18]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, GroupSyncWrite, PacketHandler

from duet.hardware.dynamixel import Motor, MotorBus, Reg
from duet.hardware.dynamixel.protocol import sync_read_sizes, sync_write_size, wire_time_s
from duet.hardware.mock.fake_dynamixel import FakeDynamixelBus

FIELDS = ("position", "velocity", "current")
SPAN = (126, 10)  # present current .. present position


def make_fake(n: int) -> FakeDynamixelBus:
    # Two ViperX-like arms' worth: big servos for shoulders/elbows, XM430 elsewhere.
    models = {i: ("XM540-W270" if i % 9 in (2, 3, 4, 5) else "XM430-W350") for i in range(1, n + 1)}
    return FakeDynamixelBus(models)


class TimedFake:
    """Accumulates the time spent inside the fake bus (its share of every tick): wall-clock
    and this thread's CPU time."""

    def __init__(self, fake: FakeDynamixelBus):
        self.ns = 0
        self.cpu_ns = 0
        inner = fake._receive

        def timed(*a, **kw):
            t, c = time.perf_counter_ns(), time.thread_time_ns()
            try:
                return inner(*a, **kw)
            finally:
                self.cpu_ns += time.thread_time_ns() - c
                self.ns += time.perf_counter_ns() - t

        fake._receive = timed

    def reset(self) -> None:
        self.ns = self.cpu_ns = 0


class Recorder:
    """Per-tick wall and CPU times of the whole tick and of the fake's share (microseconds)."""

    def __init__(self, timer: TimedFake):
        self.timer = timer
        self.rows: list[tuple[int, int, int, int]] = []

    def __enter__(self):
        self.timer.reset()
        self.t, self.c = time.perf_counter_ns(), time.thread_time_ns()
        return self

    def __exit__(self, *exc):
        c, t = time.thread_time_ns(), time.perf_counter_ns()
        self.rows.append((t - self.t, c - self.c, self.timer.ns, self.timer.cpu_ns))

    def arrays(self) -> dict[str, np.ndarray]:
        a = np.array(self.rows, dtype=np.float64) / 1e3
        return {"wall": a[:, 0], "cpu": a[:, 1], "fake_wall": a[:, 2], "fake_cpu": a[:, 3]}


def run_motorbus(n: int, seconds: float) -> dict[str, np.ndarray]:
    fake = make_fake(n)
    rec = Recorder(TimedFake(fake))
    motors = [Motor(i, fake.servo(i).model.name, f"j{i}") for i in fake.ids]
    bus = MotorBus("fake", 1_000_000, motors, label="bench", port_handler=fake.port_handler())
    bus.connect()
    bus.set_torque(True)
    goals = np.full(n, 2048, dtype=np.int64)
    end = time.perf_counter() + seconds
    k = 0
    while time.perf_counter() < end:
        goals[:] = 2048 + (k % 100)
        with rec:
            s = bus.sync_read(FIELDS)
            bus.sync_write(Reg.GOAL_POSITION, goals)
        k += 1
    assert s.values["position"].shape == (n,) and bus.stats["failures"] == 0
    bus.disconnect()
    return rec.arrays()


def run_sdk_baseline(n: int, seconds: float) -> dict[str, np.ndarray]:
    fake = make_fake(n)
    rec = Recorder(TimedFake(fake))
    ph = fake.port_handler()
    ph.openPort()
    pkt = PacketHandler(2.0)
    ids = fake.ids
    for i in ids:
        pkt.write1ByteTxRx(ph, i, Reg.TORQUE_ENABLE.address, 1)
    gsr = GroupSyncRead(ph, pkt, *SPAN)
    for i in ids:
        gsr.addParam(i)
    gsw = GroupSyncWrite(ph, pkt, Reg.GOAL_POSITION.address, 4)
    end = time.perf_counter() + seconds
    k = 0
    while time.perf_counter() < end:
        goal = 2048 + (k % 100)
        with rec:
            assert gsr.txRxPacket() == COMM_SUCCESS
            pos = [gsr.getData(i, 132, 4) for i in ids]
            vel = [gsr.getData(i, 128, 4) for i in ids]
            cur = [gsr.getData(i, 126, 2) for i in ids]
            gsw.clearParam()
            for i in ids:
                gsw.addParam(i, list(goal.to_bytes(4, "little")))
            assert gsw.txPacket() == COMM_SUCCESS
        k += 1
    assert len(pos) == len(vel) == len(cur) == n
    return rec.arrays()


def line(name: str, r: dict[str, np.ndarray], clock: str) -> str:
    tick, fake = r[clock], r[f"fake_{clock}"]
    drv = tick - fake
    return (
        f"  {name:<26} tick p50 {np.median(tick):7.1f} p99 {np.percentile(tick, 99):7.1f} | fake p50 "
        f"{np.median(fake):6.1f} | driver p50 {np.median(drv):6.1f} p99 {np.percentile(drv, 99):7.1f}  (us)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="total run time (split between the two loops)")
    ap.add_argument("--servos", type=int, default=18)
    args = ap.parse_args()
    n = args.servos
    half = args.seconds / 2
    run_motorbus(n, 0.2)  # warm-up
    r_bus = run_motorbus(n, half)
    r_sdk = run_sdk_baseline(n, half)
    print(
        f"== Dynamixel bus tick: sync read {'+'.join(FIELDS)} of {n} servos + sync write of goal positions "
        f"(in-process fake; {len(r_bus['wall'])} + {len(r_sdk['wall'])} ticks)"
    )
    for clock, what in (
        ("cpu", "thread CPU time (not counting time the OS gave other processes)"),
        ("wall", "wall clock"),
    ):
        print(f" {what}:")
        print(line("MotorBus (duet)", r_bus, clock))
        print(line("plain dynamixel_sdk (base)", r_sdk, clock))
    d_bus = r_bus["cpu"] - r_bus["fake_cpu"]
    d_sdk = r_sdk["cpu"] - r_sdk["fake_cpu"]
    p99 = np.percentile(d_bus, 99)
    print(
        f" driver-side CPU overhead MotorBus / plain SDK: p50 {np.median(d_bus) / np.median(d_sdk):.2f}x, "
        f"p99 {p99 / np.percentile(d_sdk, 99):.2f}x; target driver p99 <= 500 us: "
        f"{'met' if p99 <= 500 else 'NOT met'} ({p99:.0f} us CPU, "
        f"{np.percentile(r_bus['wall'] - r_bus['fake_wall'], 99):.0f} us wall)"
    )
    tx, rx = sync_read_sizes(n, SPAN[1])
    wr = sync_write_size(n, 4)
    print(
        f"== wire time of the same tick (computed: {tx} + {rx} bytes sync read, {wr} bytes sync write, "
        f"10 bits/byte; excludes USB latency)"
    )
    for baud in (1_000_000, 4_000_000):
        wire = wire_time_s(tx + rx + wr, baud)
        for rdt_us, label in ((0.0, "return delay 0"), (500.0, "return delay 500 us (factory default 250)")):
            ms = (wire + n * rdt_us * 1e-6) * 1e3
            print(
                f"{baud / 1e6:.0f} Mbaud, {label:<42}: {ms:6.3f} ms per tick ({ms / 20 * 100:5.1f} % of a 50 Hz period)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
