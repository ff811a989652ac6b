"""Policy-server configuration: one dataclass, validated, usable from YAML / CLI / ROS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from duet.config import field
from duet.errors import ConfigError

Mode = Literal["ensemble", "receding", "async"]
FaultAction = Literal["hold", "rest"]


@dataclass
class ServerConfig:
    mode: Mode = field(
        "async",
        "execution mode: ensemble (query whenever the worker is idle, i.e. every tick with fast "
        "inference; exponentially weighted average of every prediction for a tick), receding (a "
        "chunk runs n_action_steps ticks, the next one is prefetched and takes over at the window "
        "end), async (the next inference starts before the window runs out; a new chunk takes over "
        "on arrival with a cross-fade)",
    )
    # 0 = the rig's control_rate_hz (RigConfig.resolve_rate), like every rate_hz field.
    rate_hz: float = field(0.0, "control rate, Hz: one command per tick; 0 = the rig's control_rate_hz")
    n_action_steps: int = field(
        0, "actions executed per chunk in receding/async mode; 0 = the policy's n_action_steps"
    )
    ensemble_k: float = field(
        0.01, "temporal ensembling weight exp(-k * i), i = 0 for the oldest prediction of a tick"
    )
    trigger_margin_ticks: int = field(
        5,
        "receding/async: start the next inference when the current chunk has at most "
        "(measured latency in ticks + this) actions left in its execution window; covers latency "
        "jitter above the recent maximum",
    )
    latency_window: int = field(
        20,
        "receding/async: the latency estimate is the max of this many recent measured "
        "observation-to-arrival latencies",
    )
    blend_ticks: int = field(
        5,
        "cross-fade length, ticks, when a new chunk takes over from the previous one "
        "(receding/async); 0 = switch at once (the safety step limit still applies)",
    )
    blend_speed: float = field(
        0.5,
        "cross-fades last at least blend_ticks, and long enough that the fade itself moves each "
        "joint by at most this fraction of its safety max_step per tick (a large gap after a hold "
        "fades in slowly instead of being clamped); 0 = always exactly blend_ticks",
    )
    resume_speed: float = field(
        0.8,
        "after a hold (start, fault, missed deadline) the command catches up with the policy's "
        "actions through a ramp that moves each joint by at most this fraction of its safety max_step per tick",
    )
    max_state_age_s: float = field(
        0.1,
        "joint states older than this (capture stamp to tick) are stale, s; allows a 50 Hz read "
        "plus transport between processes",
    )
    max_camera_age_s: float = field(
        0.15,
        "camera frames older than this (capture stamp to tick) are stale, s; a 30 fps camera "
        "delivers frames up to 33 ms old before transport and decoding",
    )
    on_fault: FaultAction = field(
        "hold", "what the watchdog commands on a fault: hold the last safe command, or ramp to rest_pose"
    )
    rest_pose: list[float] = field(
        factory=list,
        help="on_fault=rest: joint targets (action order, gripper normalized), one per action dim",
    )
    rest_speed: float = field(
        0.5, "on_fault=rest: fraction (0..1] of the safety max_step used per tick when ramping to rest"
    )
    latch_on_invalid_action: bool = field(
        False,
        "after a chunk is dropped for NaN/inf or an action beyond the limit fault margin, stay held until "
        "reset() instead of resuming on the next valid chunk (max_chunk_faults: 1 does it for every kind)",
    )
    limit_fault_margin: float = field(
        0.1,
        "an action beyond a joint's limit by more than this fraction of the joint's range (0.1: "
        "0.63 rad on a +-pi joint, 0.1 on the normalized gripper) or not finite is a fault: its whole "
        "chunk is dropped, the arm holds, the fault is reported by action dim; a smaller excess is clamped "
        "to the limit (trained policies sit at the range ends, a regressed gripper scatters around them)",
    )
    chunk_time_tolerance_s: float = field(
        0.1,
        "a chunk's t_rel must be finite, increasing, start between -this and the inference latency + "
        "this, and span at most (actions - 1) * the policy's control_dt + this, s; otherwise the chunk is "
        "rejected and reported, and the current plan (or hold) goes on",
    )
    max_chunk_faults: int = field(
        3,
        "chunks dropped in one episode (NaN/inf, an action beyond the limit fault margin, malformed, "
        "t_rel rejected) before the server stops the episode: it then holds until reset(); 0 = never. One "
        "bad chunk is a glitch to ride out, repeated ones a broken model or pipeline",
    )
    inference_timeout_s: float = field(
        2.0,
        "an inference running longer than this is reported as overdue (the watchdog holds "
        "anyway once the actions run out)",
    )
    torch_threads: int = field(
        0, "torch intra-op threads for the inference worker (process-wide); 0 = leave torch's default"
    )
    worker_nice: int = field(
        10,
        "niceness added to the inference worker thread (Linux, per thread; torch's pool threads "
        "it starts inherit it) so the control tick preempts inference on a busy CPU; 0 = leave",
    )
    worker_rt_priority: int = field(
        0,
        "0: the worker runs SCHED_OTHER (an inherited real-time policy is dropped); 1..98: SCHED_FIFO "
        "at this priority, which must be below the control loop's (run_loop rt_priority): inference "
        "then is not delayed by other processes; needs root or CAP_SYS_NICE",
    )
    gil_switch_interval_s: float = field(
        0.0005,
        "sys.setswitchinterval applied by start(), so the tick thread gets the GIL "
        "promptly while inference runs (Python's default is 5 ms); 0 = leave it",
    )
    gc_freeze: bool = field(
        True,
        "start() moves every object alive then (model, weights) out of the garbage collector's "
        "reach (gc.freeze), so collections during serving stay short",
    )
    max_events: int = field(1000, "events kept until drained")

    def __post_init__(self):
        if self.mode not in ("ensemble", "receding", "async"):
            raise ConfigError(f"server.mode: {self.mode!r} is not one of 'ensemble', 'receding', 'async'")
        if self.on_fault not in ("hold", "rest"):
            raise ConfigError(f"server.on_fault: {self.on_fault!r} is not one of 'hold', 'rest'")
        if not self.rate_hz >= 0:
            raise ConfigError(
                f"server.rate_hz must be >= 0, 0 = the rig's control_rate_hz (got {self.rate_hz})"
            )
        for name in (
            "n_action_steps",
            "trigger_margin_ticks",
            "blend_ticks",
            "torch_threads",
            "worker_nice",
            "limit_fault_margin",
            "chunk_time_tolerance_s",
            "max_chunk_faults",
        ):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"server.{name} must be >= 0 (got {getattr(self, name)})")
        if not 0 <= self.worker_rt_priority <= 98:
            raise ConfigError(f"server.worker_rt_priority must be in 0..98 (got {self.worker_rt_priority})")
        if self.latency_window < 1 or self.max_events < 1:
            raise ConfigError("server.latency_window and server.max_events must be >= 1")
        if self.ensemble_k < 0:
            raise ConfigError(f"server.ensemble_k must be >= 0 (got {self.ensemble_k})")
        for name in ("max_state_age_s", "max_camera_age_s", "inference_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"server.{name} must be > 0 (got {getattr(self, name)})")
        if not 0 <= self.blend_speed <= 1:
            raise ConfigError(f"server.blend_speed must be in [0, 1] (got {self.blend_speed})")
        if not 0 < self.resume_speed <= 1:
            raise ConfigError(f"server.resume_speed must be in (0, 1] (got {self.resume_speed})")
        if not 0 < self.rest_speed <= 1:
            raise ConfigError(f"server.rest_speed must be in (0, 1] (got {self.rest_speed})")
        if self.gil_switch_interval_s < 0:
            raise ConfigError("server.gil_switch_interval_s must be >= 0")
        if self.on_fault == "rest" and not self.rest_pose:
            raise ConfigError(
                "server.rest_pose is empty: give one target per action dim, or set on_fault=hold"
            )

    @property
    def dt(self) -> float:
        """The tick period, s. rate_hz 0 must be resolved against the rig first."""
        if not self.rate_hz > 0:
            raise ConfigError(
                "server.rate_hz is 0 (the rig's control rate) and was not resolved: build the server "
                "from dataclasses.replace(cfg, rate_hz=rig.resolve_rate(cfg.rate_hz))"
            )
        return 1.0 / self.rate_hz
