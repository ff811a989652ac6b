"""Counters and distributions of the policy server (recording is O(1); summaries on demand)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from duet.stats import Samples


@dataclass
class ServerStats:
    """A snapshot of the server's figures. Times in ms, jumps in action units (rad)."""

    mode: str
    ticks: int  # ticks run
    executed_ticks: int  # ticks that sent a policy action (not held)
    held_ticks: int  # ticks the watchdog held (or ramped to rest)
    held_by_reason: dict[str, int] = field(default_factory=dict)
    deadline_misses: int = 0  # ticks with no fresh action while the policy was running
    late_chunks: int = 0  # chunks that arrived after the current execution window had ended
    queries: int = 0  # inferences started
    chunks_received: int = 0  # chunks that came back valid
    chunks_started: int = 0  # chunks that took over execution (receding / async)
    actions_dropped_stale: int = 0  # actions whose due time had passed when their chunk arrived
    invalid_chunks: int = 0  # chunks dropped for NaN/inf/shape (held)
    limit_faults: int = (
        0  # chunks dropped for an action beyond a joint limit by more than the fault margin (held)
    )
    rejected_chunks: int = (
        0  # chunks rejected for t_rel outside their expected span (the current plan went on)
    )
    last_fault: str = (
        ""  # the last dropped / rejected chunk: action dim name, value, limit (or the t_rel fault)
    )
    inference_errors: int = 0  # predict_chunk raised
    unsafe_commands: int = 0  # safety function rejected a target
    limit_clamps: int = 0  # executed ticks whose policy action lay outside a joint's range (clamped into it)
    limit_excess_max: float = 0.0  # farthest an action lay outside its range (action units)
    step_clamps: int = 0  # executed ticks whose action moved a joint more than max_step (slowed)
    clamps_by_dim: list[int] = field(default_factory=list)  # ticks clamped (either way), per action dim
    inference_ms_p50: float = float("nan")  # predict_chunk compute time
    inference_ms_p99: float = float("nan")
    obs_to_arrival_ms_p50: float = float("nan")  # observation capture -> chunk usable at a tick
    obs_to_arrival_ms_p99: float = float("nan")
    obs_to_arrival_ms_max: float = float("nan")
    latency_ticks: int = 0  # current latency estimate used for triggering
    boundary_jump_p50: float = float("nan")  # max per-tick step over each chunk switch / resume
    boundary_jump_p99: float = float("nan")
    boundary_jump_max: float = float("nan")
    boundaries: int = 0
    step_p99: float = float("nan")  # largest joint change per executed tick, sent commands
    step_max: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        held = ", ".join(f"{k} {v}" for k, v in sorted(self.held_by_reason.items())) or "none"
        return [
            f"mode {self.mode}: {self.ticks} ticks, executed {self.executed_ticks}, held {self.held_ticks} ({held})",
            f"deadline misses {self.deadline_misses}, late chunks {self.late_chunks}, "
            f"queries {self.queries}, chunks {self.chunks_received} received / {self.chunks_started} started, "
            f"stale actions dropped {self.actions_dropped_stale}",
            f"inference p50 {self.inference_ms_p50:.1f} ms p99 {self.inference_ms_p99:.1f} ms; "
            f"obs->arrival p50 {self.obs_to_arrival_ms_p50:.1f} ms p99 {self.obs_to_arrival_ms_p99:.1f} ms "
            f"max {self.obs_to_arrival_ms_max:.1f} ms "
            f"(estimate {self.latency_ticks} ticks)",
            f"boundary jump p50 {self.boundary_jump_p50:.4f} p99 {self.boundary_jump_p99:.4f} "
            f"max {self.boundary_jump_max:.4f} over {self.boundaries} boundaries; per-tick step p99 "
            f"{self.step_p99:.4f} max {self.step_max:.4f}",
            f"safety clamps: {clamp_summary(self.limit_clamps, self.limit_excess_max, self.step_clamps, self.clamps_by_dim)}",
            f"invalid chunks {self.invalid_chunks}, limit faults {self.limit_faults}, rejected chunks "
            f"{self.rejected_chunks}, inference errors {self.inference_errors}, unsafe commands {self.unsafe_commands}",
            *([f"last fault: {self.last_fault}"] if self.last_fault else []),
        ]


def clamp_summary(limit: int, excess: float, step: int, by_dim: list[int] | np.ndarray) -> str:
    """'limits 5800 (up to 0.031 outside), steps 12; most in dims 6 (4000), 13 (1800)'."""
    out = f"limits {limit}" + (f" (up to {excess:.3g} outside)" if limit else "") + f", steps {step}"
    dims = sorted(((int(n), d) for d, n in enumerate(by_dim) if n), reverse=True)[:3]
    if dims:
        out += "; most in dims " + ", ".join(f"{d} ({n})" for n, d in dims)
    return out


class StatsRecorder:
    """Mutable counters owned by the server's tick thread. snapshot() may run in another
    thread (diagnostics): the held-reason dict never changes size, so that is safe."""

    def __init__(self, mode: str, reasons: tuple[str, ...] = (), action_dim: int = 0):
        self.mode = mode
        self.action_dim = action_dim
        self.reasons = reasons
        self.reset()

    def reset(self) -> None:
        self.ticks = 0
        self.executed = 0
        self.held = Counter(dict.fromkeys(self.reasons, 0))
        self.deadline_misses = 0
        self.late_chunks = 0
        self.queries = 0
        self.chunks_received = 0
        self.chunks_started = 0
        self.dropped = 0
        self.invalid = 0
        self.limit_faults = 0
        self.rejected = 0
        self.last_fault = ""
        self.errors = 0
        self.unsafe = 0
        self.limit_clamps = 0
        self.limit_excess_max = 0.0
        self.step_clamps = 0
        self.clamps_by_dim = np.zeros(self.action_dim, dtype=np.int64)
        # percentiles over the most recent 100k samples
        self.inference_s = Samples(100_000, ring=True)
        self.arrival_s = Samples(100_000, ring=True)
        self.jumps = Samples(100_000, ring=True)
        self.steps = Samples(100_000, ring=True)

    def snapshot(self, latency_ticks: int) -> ServerStats:
        return ServerStats(
            mode=self.mode,
            ticks=self.ticks,
            executed_ticks=self.executed,
            held_ticks=sum(self.held.values()),
            held_by_reason={k: v for k, v in list(self.held.items()) if v},
            deadline_misses=self.deadline_misses,
            late_chunks=self.late_chunks,
            queries=self.queries,
            chunks_received=self.chunks_received,
            chunks_started=self.chunks_started,
            actions_dropped_stale=self.dropped,
            invalid_chunks=self.invalid,
            limit_faults=self.limit_faults,
            rejected_chunks=self.rejected,
            last_fault=self.last_fault,
            inference_errors=self.errors,
            unsafe_commands=self.unsafe,
            limit_clamps=self.limit_clamps,
            limit_excess_max=self.limit_excess_max,
            step_clamps=self.step_clamps,
            clamps_by_dim=[int(v) for v in self.clamps_by_dim],
            inference_ms_p50=self.inference_s.pct(50) * 1e3,
            inference_ms_p99=self.inference_s.pct(99) * 1e3,
            obs_to_arrival_ms_p50=self.arrival_s.pct(50) * 1e3,
            obs_to_arrival_ms_p99=self.arrival_s.pct(99) * 1e3,
            obs_to_arrival_ms_max=self.arrival_s.max() * 1e3,
            latency_ticks=latency_ticks,
            boundary_jump_p50=self.jumps.pct(50),
            boundary_jump_p99=self.jumps.pct(99),
            boundary_jump_max=self.jumps.max(),
            boundaries=self.jumps.count,
            step_p99=self.steps.pct(99),
            step_max=self.steps.max(),
        )
