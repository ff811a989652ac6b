"""The inference worker: a thread that runs policy.predict_chunk off the control tick.

The tick thread submits a request (non-blocking; refused while one is in flight) and polls
for the latest result. Observation assembly (stacking frames), inference and placing the
chunk on the tick grid all happen here, so the tick never waits on the model.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from typing import Literal

from duet.clock import Clock, set_realtime
from duet.hardware.safety import LimitFault
from duet.policy.interface import ActionChunk, Policy
from duet.policy.server.observation import ObsSnapshot
from duet.policy.server.scheduler import ChunkRules, ChunkTimeError, GridChunk, InvalidChunk, to_grid


@dataclass(frozen=True)
class InferenceRequest:
    id: int
    epoch: int  # results of an older epoch are discarded (a fault or reset happened since)
    snapshot: ObsSnapshot
    t0: float  # tick grid origin
    dt: float  # tick period
    reset_policy: bool = False  # call policy.reset() first (episode start), in the worker thread


@dataclass(frozen=True)
class InferenceResult:
    request_id: int
    epoch: int
    obs_stamp: float  # capture time of the observation the chunk was predicted from
    t_start: float  # clock time inference started
    t_done: float  # clock time the result was ready
    status: Literal["ok", "invalid", "rejected", "error"]  # invalid: bad values (hold); rejected: bad t_rel
    grid: GridChunk | None  # the chunk on the tick grid (status ok)
    chunk: ActionChunk | None  # the chunk as the policy returned it (ok / invalid / rejected)
    error: str = ""  # one line (invalid / rejected / error)
    fault: LimitFault | None = None  # invalid: the offending action (dim, row, value, limit)

    @property
    def compute_s(self) -> float:
        return self.t_done - self.t_start


class InferenceWorker:
    """Runs one inference at a time in a daemon thread."""

    def __init__(
        self,
        policy: Policy,
        clock: Clock,
        action_dim: int,
        torch_threads: int = 0,
        nice: int = 0,
        rt_priority: int = 0,
        name: str = "duet-inference",
        rules: ChunkRules | None = None,
    ):
        self.policy = policy
        self.clock = clock
        self.action_dim = int(action_dim)
        self.rules = rules  # checked on every chunk before it is placed on the grid (None: shapes, NaN only)
        self.torch_threads = int(torch_threads)
        self.nice = int(nice)
        self.rt_priority = int(rt_priority)
        self.scheduling_note = ""  # why the requested scheduling could not be applied ("" = applied)
        self._name = name
        self._cv = threading.Condition()
        self._request: InferenceRequest | None = None
        self._result: InferenceResult | None = None
        self._busy = False
        self._in_flight_since: float | None = None
        self._stop = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to end; True if it did within timeout (a hung model keeps it alive:
        it is a daemon thread and dies with the process)."""
        with self._cv:
            self._stop = True
            self._request = None
            self._cv.notify_all()
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        alive = t.is_alive()
        if not alive:
            self._thread = None
        return not alive

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ tick-side API (non-blocking)

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._busy

    @property
    def in_flight_since(self) -> float | None:
        """Clock time the current inference was submitted; None when idle."""
        with self._cv:
            return self._in_flight_since

    def submit(self, request: InferenceRequest) -> bool:
        """Queue a request; False (and nothing queued) while one is in flight."""
        with self._cv:
            if self._busy or self._stop:
                return False
            self._busy = True
            self._in_flight_since = self.clock.now()
            self._request = request
            self._cv.notify_all()
            return True

    def poll(self) -> InferenceResult | None:
        """The result finished since the last poll, if any."""
        with self._cv:
            r, self._result = self._result, None
            return r

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block (real time) until no inference is in flight. For plain loops and tests."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._busy, timeout=timeout)

    # ------------------------------------------------------------------ thread

    def _set_scheduling(self) -> None:
        """Linux, per thread: SCHED_FIFO at rt_priority, or SCHED_OTHER (dropping a real-time
        policy inherited from the creating thread) plus `nice`."""
        why = set_realtime(self.rt_priority)
        if why:
            self.scheduling_note = f"inference worker scheduling not applied: {why}"
            return
        if self.rt_priority > 0 or self.nice <= 0:
            return
        try:
            tid = threading.get_native_id()  # PRIO_PROCESS with a thread id: that thread only
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.nice))
        except (AttributeError, OSError, ValueError) as e:
            self.scheduling_note = f"inference worker scheduling not applied: {e}"

    def _run(self) -> None:
        self._set_scheduling()
        if self.torch_threads > 0 and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.torch_threads)
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or self._request is not None)
                if self._stop:
                    self._busy = False
                    self._cv.notify_all()
                    return
                req, self._request = self._request, None
            assert req is not None
            result = self._infer(req)
            with self._cv:
                self._result = result
                self._busy = False
                self._in_flight_since = None
                self._cv.notify_all()

    def _no_grad(self):
        torch = sys.modules.get("torch")
        return torch.inference_mode() if torch is not None else contextlib.nullcontext()

    def _infer(self, req: InferenceRequest) -> InferenceResult:
        stamp = req.snapshot.stamp
        t_start = self.clock.now()
        chunk: ActionChunk | None = None
        try:
            if req.reset_policy:
                self.policy.reset()
            obs = req.snapshot.assemble()
            with self._no_grad():
                chunk = self.policy.predict_chunk(obs)
            if self.rules is not None:
                self.rules.check(chunk, self.clock.now() - stamp)
            grid = to_grid(chunk, stamp, req.t0, req.dt, self.action_dim)
        except InvalidChunk as e:
            status: Literal["rejected", "invalid"] = (
                "rejected" if isinstance(e, ChunkTimeError) else "invalid"
            )
            return InferenceResult(
                req.id, req.epoch, stamp, t_start, self.clock.now(), status, None, chunk, str(e), e.fault
            )
        except Exception as e:  # noqa: BLE001 - a model failure must become a reported hold, not a dead loop
            msg = f"{type(e).__name__}: {e}".splitlines()[0]
            return InferenceResult(
                req.id, req.epoch, stamp, t_start, self.clock.now(), "error", None, chunk, msg
            )
        return InferenceResult(req.id, req.epoch, stamp, t_start, self.clock.now(), "ok", grid, chunk)
