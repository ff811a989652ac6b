"""Pieces every duet node shares: a paced loop thread, windowed statistics, the latched QoS,
the main().

Nodes run their control work in a dedicated thread paced on absolute deadlines
(duet.clock.Pacer on the monotonic clock), not in an rclpy timer: the executor thread
serves subscriptions, services and the 1 Hz diagnostics, and never delays a tick.
"""

from __future__ import annotations

import inspect
import math
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from duet.clock import Clock, MonotonicClock, Pacer, PeriodStats, set_realtime
from duet.errors import DuetError


def latched_qos(depth: int = 1) -> QoSProfile:
    """The latched profile (RELIABLE + TRANSIENT_LOCAL): a late subscriber (a node restarted,
    a client started after the graph) still gets the last `depth` messages. Publishers of
    states, faults and health use it, and so must their subscribers (a VOLATILE subscriber
    gets no history)."""
    return QoSProfile(
        depth=depth, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )


# the last message only: ~/state of teleop, recorder and policy, /sim/status, an arm's ~/fault
LATCHED = latched_qos(1)


class WindowStats:
    """Period statistics of the last diagnostics window (reset on each summary)."""

    def __init__(self, period: float, capacity: int = 4096, run_capacity: int = 1 << 20):
        self.stats = PeriodStats(period, capacity=capacity)
        self.run = PeriodStats(period, capacity=run_capacity)  # since start (first ~5.8 h at 50 Hz)
        self.total_overruns = 0
        self.total_ticks = 0
        self._lock = threading.Lock()

    def record(self, t: float, overruns: int = 0) -> None:
        with self._lock:
            self.stats.record(t)
            self.stats.overruns += overruns
            self.run.record(t)
            self.run.overruns += overruns

    def reset_run(self) -> None:
        with self._lock:
            self.run.reset()

    def run_summary(self) -> dict[str, float]:
        with self._lock:
            s = self.run.summary()
        return {
            "run.rate_hz": s.mean_rate_hz,
            "run.period_error_p50_ms": s.p50_error_ms,
            "run.period_error_p99_ms": s.p99_error_ms,
            "run.period_error_max_ms": s.max_error_ms,
            "run.ticks": s.ticks,
        }

    def summary_and_reset(self, with_run: bool = False) -> dict[str, float]:
        with self._lock:
            s = self.stats.summary()
            self.stats.reset()
        self.total_overruns += s.overruns
        self.total_ticks += s.ticks
        return ({**self.run_summary()} if with_run else {}) | {
            "rate_hz": s.mean_rate_hz,
            "period_error_p50_ms": s.p50_error_ms,
            "period_error_p99_ms": s.p99_error_ms,
            "period_error_max_ms": s.max_error_ms,
            "overruns_window": s.overruns,
            "overruns_total": self.total_overruns,
            "ticks_total": self.total_ticks,
        }


def grid_start(now: float, period: float, phase_s: float | None) -> float:
    """The first deadline of a loop phase-locked to the host's monotonic clock: the next
    t >= now with t = k * period + phase_s. Every process of a host shares CLOCK_MONOTONIC,
    so loops with phases 0 (arms read), 3 ms (teleop) and 6 ms (followers write) run in
    that order each period instead of at random offsets (up to a period less latency).
    phase_s None: start now."""
    if phase_s is None:
        return now
    phase = phase_s % period
    k = math.ceil((now - phase) / period)
    return k * period + phase


class PacedThread:
    """Runs ``tick()`` on absolute deadlines at ``rate_hz`` in a daemon thread.

    An exception in tick() is reported through ``on_error`` (and the loop goes on); the
    tick times go to a WindowStats (per diagnostics window and since start).
    """

    def __init__(
        self,
        name: str,
        rate_hz: float,
        tick: Callable[[], None],
        on_error: Callable[[BaseException], None] | None = None,
        clock: Clock | None = None,
        phase_s: float | None = None,
        realtime_priority: int = 0,
    ):
        self.clock = clock or MonotonicClock()
        self.phase_s = phase_s
        self.realtime_priority = realtime_priority
        self.realtime = "off"
        self.window = WindowStats(1.0 / rate_hz)
        # the pacer's own stats only count overruns; tick times go to the window
        self.pacer = Pacer(rate_hz, self.clock, PeriodStats(1.0 / rate_hz, capacity=1))
        self._tick = tick
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        if self.realtime_priority > 0:
            why = set_realtime(self.realtime_priority)
            self.realtime = f"off ({why})" if why else f"SCHED_FIFO {self.realtime_priority}"
        self.pacer.start(grid_start(self.clock.now(), self.pacer.period, self.phase_s))
        overruns = 0
        while not self._stop.is_set():
            self.pacer.wait()
            self.window.record(self.clock.now(), self.pacer.stats.overruns - overruns)
            overruns = self.pacer.stats.overruns
            if self._stop.is_set():
                break
            try:
                self._tick()
            except Exception as e:  # reported, never kills the loop
                if self._on_error:
                    self._on_error(e)
                else:
                    traceback.print_exc()


def run_node(make_node: Callable[[], Any], name: str) -> int:
    """main() of a node process: rclpy init, spin, and on any exit each node's close() (safe state).

    make_node returns the node, or several nodes (a list, or a generator: the nodes it
    yielded before failing are closed too) for a host process such as the sim node: each
    then spins in its own executor and thread, as if it were its own process. A node with an
    ``executor_threads`` attribute > 1 gets a MultiThreadedExecutor of that many threads.
    Nodes close in reverse order. A DuetError (bad parameter, missing device) ends in one
    line and exit status 2.
    """
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    def spin(executor) -> None:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)

    def spin_thread(executor) -> None:  # an exception ends the whole process (re-raised below)
        try:
            spin(executor)
        except ExternalShutdownException:
            pass
        except BaseException as e:
            errors.append(e)
        finally:
            stop.set()

    # Our own SIGINT / SIGTERM handling: a flag the spin loop checks, so shutdown always
    # runs close() (the safe state) once, never interrupted by a KeyboardInterrupt.
    rclpy.init(args=sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    nodes: list[Any] = []
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []
    rc = 0
    try:
        made = make_node()
        if isinstance(made, (list, tuple)) or inspect.isgenerator(made):
            for n in made:
                nodes.append(n)
        else:
            nodes.append(made)
        executors = []
        for n in nodes:
            k = int(getattr(n, "executor_threads", 1))
            executors.append(MultiThreadedExecutor(num_threads=k) if k > 1 else SingleThreadedExecutor())
            executors[-1].add_node(n)
        if len(executors) == 1:
            spin(executors[0])
        else:
            threads = [
                threading.Thread(target=spin_thread, args=(ex,), daemon=True, name=f"executor-{n.get_name()}")
                for ex, n in zip(executors, nodes)
            ]
            for t in threads:
                t.start()
            while not stop.wait(0.2) and rclpy.ok():
                pass
            stop.set()
            for t in threads:
                t.join(timeout=5.0)
            if errors:
                raise errors[0]
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except DuetError as e:
        print(f"{name}: error: {e}", file=sys.stderr, flush=True)
        rc = 2
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5.0)
        for n in reversed(nodes):  # a host's devices first (safe state), the host last
            try:
                n.close()
            except Exception:
                traceback.print_exc()
            try:
                n.destroy_node()
            except Exception:
                pass
        rclpy.try_shutdown()
    return rc
