"""Closed-loop evaluation of a policy checkpoint on the MuJoCo sim (`duet eval`). ROS-free.

Every episode: reset the sim world with a seed (object poses), then drive the two sim follower
arms with the real PolicyServer through duet.policy.server.run_loop, in LOCKSTEP: simulated
time advances one control tick per loop iteration (the world's SimClock, paced by a Pacer),
the server observes the followers' JointStates and the sim cameras' frames, and its commands
go to the followers through Arm.write (the safety function). The episode runs the task's
length (ACT's: 400 ticks at 50 Hz); its result is the highest task stage reached, as ACT
scores its simulated rollouts.

Inference time in lockstep (EvalConfig.latency):

- "zero" (default, deterministic): the sim stands still while the inference worker runs.
  A chunk is usable from the tick after its observation (one control period, the earliest
  a real loop could use it); nothing else of the model's speed shows in the result.
- "measured": the sim keeps running while the model computes, for as long as that inference
  took in wall-clock time on this machine: the chunk becomes visible to the server at the
  first tick at or after observation time + measured compute time (the server then drops
  the actions whose time has passed, as on the robot).
- "fixed": as "measured" with a fixed latency_ms, for reproducible latency studies.

Inference wall-clock times are measured around predict_chunk in every mode and reported
beside the server's own statistics (which run on simulated time: zero in "zero" mode).

Success is reported per stage with 95% Wilson score intervals. The first `videos` episodes
are written as MP4 (libx264; the policy's cameras side by side, tick and stage overlaid), and
a JSON report holds everything (see EvalReport.to_dict).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from duet.clock import utc_now_iso
from duet.config import field
from duet.errors import ConfigError, DuetError
from duet.jsonio import jsonable

if TYPE_CHECKING:
    from duet.hardware.interfaces import Arm, Camera

log = logging.getLogger(__name__)

# Evaluation seeds start here by default. `duet sim collect` numbers demonstrations from
# --seed (default 0) upwards, so training and evaluation object placements are disjoint
# unless more than 100000 demonstrations were collected (the overlap is checked anyway
# when the checkpoint's dataset is readable).
EVAL_SEED_BASE = 100_000
Z95 = 1.959963984540054  # two-sided 95% normal quantile
REPORT_FORMAT = "duet-eval"
REPORT_VERSION = 1


@dataclass
class EvalConfig:
    task: str = field("transfer_cube", "sim task: transfer_cube or insertion")
    episodes: int = field(50, "episodes to run")
    seed: int = field(
        EVAL_SEED_BASE,
        "seed of the first episode (then seed+1, ...); the default is disjoint "
        "from `duet sim collect` seeds (which start at 0)",
    )
    ticks: int = field(0, "control ticks per episode; 0 = the task's episode length (400 at 50 Hz, as ACT)")
    mode: Literal["async", "ensemble", "receding"] = field("async", "policy-server execution mode")
    latency: Literal["zero", "measured", "fixed"] = field(
        "zero",
        "zero: the sim waits for inference (deterministic); measured: the sim runs on for the "
        "measured inference wall time; fixed: for latency_ms",
    )
    latency_ms: float = field(0.0, "latency=fixed: emulated inference latency, ms")
    device: str = field("auto", "torch device for the policy: auto (cuda when available), cpu, cuda")
    rig: str = field("aloha_sim", "sim rig (name or YAML): arm and camera names, control rate")
    camera_size: list[int] = field(
        factory=list,
        help="[H, W] of the sim cameras; empty: as in the checkpoint's dataset when readable, else the rig's",
    )
    render_quality: Literal["fast", "full"] = field(
        "fast", "sim render quality; use what the demonstrations were recorded with (duet sim collect: fast)"
    )
    videos: int = field(3, "write MP4s of this many first episodes")
    stop_on_success: bool = field(
        False,
        "end an episode once the final stage is reached (saves time; the "
        "result is the same, the video shorter)",
    )
    server: dict[str, Any] = field(
        factory=dict, help="policy-server settings (ServerConfig fields) besides mode"
    )

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes must be >= 1 (got {self.episodes})")
        if self.ticks < 0 or self.videos < 0:
            raise ConfigError("ticks and videos must be >= 0")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0 (got {self.seed})")
        if self.latency == "fixed" and not self.latency_ms > 0:
            raise ConfigError("latency=fixed needs latency_ms > 0 (e.g. --latency 40)")
        if self.camera_size and (len(self.camera_size) != 2 or min(self.camera_size) < 8):
            raise ConfigError(f"camera_size must be [H, W] with H, W >= 8 (got {self.camera_size})")
        if "mode" in self.server:
            raise ConfigError("set the server mode with mode=..., not server.mode")


# ---------------------------------------------------------------------------- statistics


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (two-sided, z = 1.96 for 95%)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: k={k} not in 0..{n}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At k = 0 / k = n the interval touches 0 / 1 exactly; keep float noise out.
    lo = 0.0 if k == 0 else max(0.0, center - half)
    hi = 1.0 if k == n else min(1.0, center + half)
    return (lo, hi)


def stage_rates(
    max_stages: list[int] | np.ndarray, stage_names: tuple[str, ...] | list[str]
) -> list[dict[str, Any]]:
    """Per stage s (1..len(stage_names)): episodes that reached at least s, rate and 95% CI."""
    ms = np.asarray(max_stages, dtype=np.int64)
    n = len(ms)
    out = []
    for s, name in enumerate(stage_names, start=1):
        k = int((ms >= s).sum())
        lo, hi = wilson_interval(k, n)
        out.append(
            {
                "stage": s,
                "name": name,
                "count": k,
                "episodes": n,
                "rate": k / n if n else 0.0,
                "ci95": [lo, hi],
            }
        )
    return out


def _pct(values: list[float] | np.ndarray, q: float) -> float | None:
    v = np.asarray(values, dtype=np.float64)
    return float(np.percentile(v, q)) if len(v) else None


# ---------------------------------------------------------------------------- inference timing / gating


class TimedPolicy:
    """Wraps a Policy: measures predict_chunk wall time and, in latency-emulation mode, holds
    the chunk back until the evaluator releases it (the sim runs on meanwhile)."""

    def __init__(self, policy: Any, gate: bool = False):
        self.inner = policy
        self.n_obs_steps = int(policy.n_obs_steps)
        self.horizon = int(policy.horizon)
        self.n_action_steps = int(policy.n_action_steps)
        self.control_dt = float(policy.control_dt)
        self.camera_names = tuple(policy.camera_names)
        self.action_dim = int(policy.action_dim)
        self.gate = gate
        self.compute_s: list[float] = []  # every predict_chunk, wall clock
        self._computed = threading.Event()
        self._release = threading.Event()
        self._last_s = 0.0

    def reset(self) -> None:
        self.inner.reset()

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.inner.forward(batch)

    def predict_chunk(self, obs: dict[str, np.ndarray]):
        t0 = time.perf_counter()
        try:
            return self.inner.predict_chunk(obs)
        finally:
            self._last_s = time.perf_counter() - t0
            self.compute_s.append(self._last_s)
            if self.gate:
                self._computed.set()
                self._release.wait()
                self._release.clear()

    # evaluator side (gate mode)
    def wait_computed(self, timeout: float | None = None) -> float:
        """Block until the inference in flight has computed; its wall time (s)."""
        if not self._computed.wait(timeout):
            raise DuetError(f"inference did not finish within {timeout} s (wall clock)")
        self._computed.clear()
        return self._last_s

    def release(self) -> None:
        self._release.set()

    def reset_gate(self) -> None:
        """Forget gate signals (episode start; the worker must be idle)."""
        self._computed.clear()
        self._release.clear()


# ---------------------------------------------------------------------------- video


class VideoWriter:
    """Streams annotated frames (cameras side by side) into an H.264 MP4."""

    min_height = 240  # small policy images are upscaled (nearest) so the video is watchable

    def __init__(self, path: Path, fps: float):
        self.path = Path(path)
        self.fps = fps
        self._container: Any = None  # av's output container and video stream, opened at the first frame
        self._stream: Any = None
        self.frames = 0

    def _open(self, w: int, h: int) -> None:
        from fractions import Fraction

        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(self.fps).limit_denominator(1000)
        s = self._container.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "23", "preset": "veryfast"}
        self._stream = s

    def add(self, images: list[np.ndarray], text: str) -> None:
        import av
        import cv2

        h = max(im.shape[0] for im in images)
        scale = max(1, math.ceil(self.min_height / h))
        tiles = []
        for im in images:
            if im.shape[0] != h:
                im = cv2.resize(im, (round(im.shape[1] * h / im.shape[0]), h), interpolation=cv2.INTER_AREA)
            if scale > 1:
                im = cv2.resize(
                    im, (im.shape[1] * scale, im.shape[0] * scale), interpolation=cv2.INTER_NEAREST
                )
            tiles.append(im)
        frame = np.concatenate(tiles, axis=1)
        bar = np.zeros((24, frame.shape[1], 3), np.uint8)
        cv2.putText(bar, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        frame = np.concatenate([frame, bar], axis=0)
        # yuv420p needs even dimensions
        ph, pw = frame.shape[0] % 2, frame.shape[1] % 2
        if ph or pw:
            frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)))
        if self._container is None:
            self._open(frame.shape[1], frame.shape[0])
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None


# ---------------------------------------------------------------------------- results


@dataclass
class EpisodeOutcome:
    index: int
    seed: int
    ticks: int
    max_stage: int
    final_stage: int
    success: bool
    first_tick_of_stage: dict[int, int]  # stage -> first tick it was seen
    object_poses: dict[str, list[float]]
    wall_s: float
    inference_calls: int
    server: dict[str, Any]  # ServerStats of this episode
    video: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return jsonable(self.__dict__, finite=True)


@dataclass
class EvalReport:
    config: EvalConfig
    checkpoint: dict[str, Any]
    stage_names: tuple[str, ...]
    ticks: int
    camera: dict[str, Any]
    outcomes: list[EpisodeOutcome] = dc_field(default_factory=list)
    inference_wall_s: list[float] = dc_field(default_factory=list)
    emulated_latency_s: list[float] = dc_field(default_factory=list)
    server_samples: dict[str, list[float]] = dc_field(default_factory=dict)
    training_seed_overlap: list[int] | None = None  # None: the training seeds are unknown
    wall_s: float = 0.0
    device: str = ""
    path: Path | None = None

    @property
    def stages(self) -> list[dict[str, Any]]:
        return stage_rates([o.max_stage for o in self.outcomes], self.stage_names)

    def server_summary(self) -> dict[str, Any]:
        """The server's figures over all episodes: counts summed, distributions pooled."""
        eps = [o.server for o in self.outcomes]
        counts = (
            "ticks",
            "executed_ticks",
            "held_ticks",
            "deadline_misses",
            "late_chunks",
            "queries",
            "chunks_received",
            "chunks_started",
            "actions_dropped_stale",
            "invalid_chunks",
            "inference_errors",
            "unsafe_commands",
            "limit_clamps",
            "step_clamps",
            "boundaries",
            "limit_faults",
            "rejected_chunks",
        )
        out: dict[str, Any] = {k: int(sum(e.get(k, 0) for e in eps)) for k in counts}
        out["limit_excess_max"] = max((float(e.get("limit_excess_max", 0.0)) for e in eps), default=0.0)
        dims = [e.get("clamps_by_dim") or [] for e in eps]
        width = max((len(d) for d in dims), default=0)
        out["clamps_by_dim"] = [int(sum(d[i] for d in dims if i < len(d))) for i in range(width)]
        held: dict[str, int] = {}
        for e in eps:
            for k, v in e.get("held_by_reason", {}).items():
                held[k] = held.get(k, 0) + int(v)
        out["held_by_reason"] = held
        s = self.server_samples
        ms = {k: [v * 1e3 for v in s.get(k, [])] for k in ("inference_s", "arrival_s")}
        out["inference_ms_p50"] = _pct(ms["inference_s"], 50)
        out["inference_ms_p99"] = _pct(ms["inference_s"], 99)
        out["obs_to_arrival_ms_p50"] = _pct(ms["arrival_s"], 50)
        out["obs_to_arrival_ms_p99"] = _pct(ms["arrival_s"], 99)
        out["boundary_jump_p50"] = _pct(s.get("jumps", []), 50)
        out["boundary_jump_p99"] = _pct(s.get("jumps", []), 99)
        out["boundary_jump_max"] = max(s["jumps"]) if s.get("jumps") else None
        out["step_p99"] = _pct(s.get("steps", []), 99)
        out["note"] = (
            "server times are simulated time: inference takes none with latency=zero, the emulated "
            "latency otherwise (rounded to ticks); see inference_wall_ms for the model's wall time"
        )
        return out

    def to_dict(self) -> dict[str, Any]:
        cfg = self.config
        st = self.stages
        w = [v * 1e3 for v in self.inference_wall_s]
        return jsonable(
            {
                "format": REPORT_FORMAT,
                "format_version": REPORT_VERSION,
                "created_utc": utc_now_iso(),
                "checkpoint": self.checkpoint,
                "task": cfg.task,
                "stage_names": list(self.stage_names),
                "episodes": len(self.outcomes),
                "ticks_per_episode": self.ticks,
                "control_rate_hz": round(1.0 / self.checkpoint.get("control_dt", 0.02), 6),
                "seeds": [o.seed for o in self.outcomes],
                "seed_note": (
                    f"seeds {cfg.seed}..{cfg.seed + cfg.episodes - 1}; `duet sim collect` seeds start at 0, "
                    f"evaluation defaults to {EVAL_SEED_BASE}"
                ),
                "training_seed_overlap": self.training_seed_overlap,
                "mode": cfg.mode,
                "latency": {
                    "mode": cfg.latency,
                    "latency_ms": cfg.latency_ms if cfg.latency == "fixed" else None,
                    "lockstep": True,
                    "emulated_ms_p50": _pct([v * 1e3 for v in self.emulated_latency_s], 50),
                    "emulated_ms_p99": _pct([v * 1e3 for v in self.emulated_latency_s], 99),
                },
                "device": self.device,
                "camera": self.camera,
                "stop_on_success": cfg.stop_on_success,
                "stages": st,
                "success": st[-1] if st else None,
                "inference_wall_ms": {
                    "count": len(w),
                    "p50": _pct(w, 50),
                    "p99": _pct(w, 99),
                    "max": max(w) if w else None,
                },
                "server": self.server_summary(),
                "server_config": cfg.server,
                "per_episode": [{**o.to_dict(), "video": self._rel(o.video)} for o in self.outcomes],
                "videos": [self._rel(o.video) for o in self.outcomes if o.video],
                "wall_s": round(self.wall_s, 3),
            },
            finite=True,
        )

    def _rel(self, video: str | None) -> str | None:
        """Video paths relative to the report's directory (the output folder moves as a whole)."""
        if video is None or self.path is None:
            return video
        try:
            return str(Path(video).resolve().relative_to(self.path.parent.resolve()))
        except ValueError:
            return video

    def lines(self) -> list[str]:
        from duet.policy.server.stats import clamp_summary

        cfg = self.config
        n = len(self.outcomes)
        out = [
            f"{cfg.task}: {n} episodes x {self.ticks} ticks, seeds {cfg.seed}..{cfg.seed + n - 1}, mode {cfg.mode}, "
            f"latency {cfg.latency}" + (f" {cfg.latency_ms:g} ms" if cfg.latency == "fixed" else "")
        ]
        for s in self.stages:
            lo, hi = s["ci95"]
            out.append(
                f"  stage {s['stage']} {s['name']:<20} {s['count']:>4}/{n:<4} {100 * s['rate']:5.1f}%  "
                f"95% CI [{100 * lo:5.1f}, {100 * hi:5.1f}]"
            )
        srv = self.server_summary()
        w = [v * 1e3 for v in self.inference_wall_s]
        if w:
            out.append(
                f"  inference (wall) p50 {_pct(w, 50):.1f} ms p99 {_pct(w, 99):.1f} ms over {len(w)} calls "
                f"on {self.device}"
            )
        jump = srv["boundary_jump_max"]
        out.append(
            f"  server: deadline misses {srv['deadline_misses']}, stale actions dropped "
            f"{srv['actions_dropped_stale']}, late chunks {srv['late_chunks']}, boundaries {srv['boundaries']} "
            f"(max jump {'n/a' if jump is None else f'{jump:.4f}'} rad)"
        )
        if srv["limit_faults"] or srv["rejected_chunks"]:
            out.append(
                f"  chunks dropped: {srv['limit_faults']} beyond a joint limit by more than the fault margin, "
                f"{srv['rejected_chunks']} with times outside their span"
            )
        out.append(
            "  safety clamps of policy actions over "
            + f"{srv['executed_ticks']} executed ticks: "
            + clamp_summary(
                srv["limit_clamps"], srv["limit_excess_max"], srv["step_clamps"], srv["clamps_by_dim"]
            )
        )
        if self.training_seed_overlap:
            out.append(
                f"  WARNING: {len(self.training_seed_overlap)} evaluation seeds were training demonstrations "
                f"(e.g. {self.training_seed_overlap[0]})"
            )
        out.append(f"  wall time {self.wall_s:.1f} s" + (f"; report {self.path}" if self.path else ""))
        return out


# ---------------------------------------------------------------------------- the evaluator


def _checkpoint_info(directory: Path | None, policy: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "path": None,
        "policy": getattr(policy, "name", type(policy).__name__),
        "step": None,
        "model_sha256": None,
        "dataset": None,
        "train_episodes": None,
    }
    if directory is not None:
        from duet.policy.checkpoint import read_meta

        meta = read_meta(directory, verify=False)
        info.update(
            {
                "path": str(directory.resolve()),
                "policy": meta.get("policy"),
                "step": meta.get("step"),
                "model_sha256": meta.get("files", {}).get("model.safetensors"),
                "dataset": meta.get("dataset"),
                "train_episodes": (meta.get("episodes") or {}).get("train"),
            }
        )
    info["camera_names"] = list(policy.camera_names)
    info["control_dt"] = float(policy.control_dt)
    return info


def _dataset_spec_and_seeds(dataset: str | None) -> tuple[Any, list[int] | None]:
    """The training store's spec and its demonstrations' seeds, when the store is readable."""
    if not dataset:
        return None, None
    try:
        from duet.data.store import EpisodeStore

        store = EpisodeStore.open(dataset, "r")
        seeds = [int(m["seed"]) for m in store.episodes_meta() if isinstance(m.get("seed"), int)]
        return store.spec, seeds
    except Exception as e:  # noqa: BLE001 - the dataset is optional context, never required to evaluate
        log.info(
            "training dataset %s not readable (%s): camera sizes from the rig, no seed check", dataset, e
        )
        return None, None


class SimEvaluator:
    """The sim rig (world, follower arms, the policy's cameras) for evaluating one policy."""

    def __init__(self, policy: Any, config: EvalConfig, camera_hw: dict[str, tuple[int, int]] | None = None):
        from duet.hardware.factory import make_arm, make_camera
        from duet.hardware.rig import CameraSlot, load_rig
        from duet.hardware.sim.tasks import make_task
        from duet.hardware.sim.world import get_world, world_for
        from duet.policy.server import ServerConfig, safety_limits

        self.config = config
        task = make_task(config.task)
        rig = load_rig(config.rig, [f"sim_task={config.task}"])
        if rig.mock_backend != "sim":
            raise ConfigError(
                f"rig {rig.name!r}: evaluation needs a sim rig (mock_backend: sim), e.g. aloha_sim"
            )
        rig = copy.deepcopy(rig)
        rig.name = f"{rig.name}_eval"
        self.ticks = int(config.ticks or task.episode_ticks)
        self.stage_names = tuple(task.stages)
        from duet.config import from_dict

        # Lockstep has no real-time deadline to protect: no gc.freeze (a fresh server starts
        # every episode; freezing each time would make every episode's objects immortal).
        server_config = from_dict(
            ServerConfig, {"gc_freeze": False, **config.server, "mode": config.mode}, where="eval server"
        )
        self.rate_hz = rig.resolve_rate(server_config.rate_hz)  # 0 (the default) = the rig's
        if self.rate_hz != rig.control_rate_hz:
            raise ConfigError(
                f"eval: server.rate_hz {self.rate_hz:g} differs from rig {config.rig!r}'s control_rate_hz "
                f"{rig.control_rate_hz:g}; the sim steps at the rig's rate: leave server.rate_hz at 0"
            )
        self.server_config = replace(server_config, rate_hz=self.rate_hz)
        if abs(float(policy.control_dt) * self.rate_hz - 1.0) > 1e-6:
            raise ConfigError(
                f"the policy acts every {policy.control_dt} s but rig {config.rig!r} runs at "
                f"{self.rate_hz} Hz: evaluate on a rig with the policy's control rate"
            )
        camera_hw = camera_hw or {}
        slots = []
        for name in policy.camera_names:
            try:
                base = rig.camera(name)
            except ConfigError:
                base = CameraSlot(name=name, fps=int(rig.control_rate_hz))
            h, w = camera_hw.get(name, (base.height, base.width))
            slots.append(
                CameraSlot(
                    name=name,
                    kind=base.kind,
                    width=int(w),
                    height=int(h),
                    fps=max(int(base.fps), int(round(rig.control_rate_hz))),
                    max_age_s=base.max_age_s,
                )
            )
        rig.cameras = slots
        self.rig = rig
        existing = get_world(rig.name)
        if existing is not None and existing.task.name != config.task:
            existing.close()
        self.world = world_for(rig, config.task)
        self.world.render_quality = config.render_quality
        self.clock = self.world.clock
        self.followers = [fo for _, fo in rig.pairs]
        if not self.followers:
            raise ConfigError(
                f"rig {rig.name!r}: no pairs; the policy's action order is the pairs' followers"
            )
        self.arms = [make_arm(rig, n, use_mock=True, clock=self.clock) for n in self.followers]
        self.cameras = {n: make_camera(rig, n, use_mock=True, clock=self.clock) for n in policy.camera_names}
        self._connected = False
        self._safety_limits = safety_limits

    def connect(self) -> None:
        if self._connected:
            return
        done: list[Arm | Camera] = []
        try:
            devices: list[Arm | Camera] = [*self.arms, *self.cameras.values()]
            for dev in devices:
                dev.connect()
                done.append(dev)
        except BaseException:
            for dev in reversed(done):
                dev.disconnect()
            raise
        self._connected = True
        self.limits = self._safety_limits(self.arms)

    def close(self) -> None:
        devices: list[Arm | Camera] = [*self.cameras.values(), *self.arms]
        for dev in devices:
            try:
                dev.disconnect()
            except Exception:  # noqa: BLE001 - close everything
                log.warning("disconnecting %s failed", getattr(dev, "name", dev), exc_info=True)
        self._connected = False
        self.world.close()

    def __enter__(self) -> SimEvaluator:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run_episode(
        self,
        policy: TimedPolicy,
        index: int,
        seed: int,
        video: Path | None = None,
        samples: dict[str, list[float]] | None = None,
        emulated: list[float] | None = None,
    ) -> EpisodeOutcome:
        """One lockstep episode with objects placed by `seed`."""
        from duet.clock import Pacer
        from duet.policy.server import PolicyServer, run_loop

        self.connect()
        cfg = self.config
        w = self.world
        wall0 = time.perf_counter()
        w.reset(seed=seed)
        _seed_torch(seed)
        calls0 = len(policy.compute_s)
        policy.reset_gate()
        # A fresh server per episode, not server.reset(): reset() keeps the last command of the
        # previous episode as the hold target, while world.reset() has put the arms back at
        # the start pose (the server would hold them toward the old pose until a chunk came).
        server = PolicyServer(policy, self.server_config, self.limits, self.clock)
        dt = 1.0 / self.rate_hz
        writer = VideoWriter(video, self.rate_hz) if video is not None else None
        stop = threading.Event()
        first: dict[int, int] = {}
        pending: list[float] = []  # release time (sim clock) of a gated inference in flight
        fixed = cfg.latency_ms / 1e3

        def on_tick(res) -> None:
            k = len(ticks_seen)
            ticks_seen.append(res.k)
            stage = int(w.stage)
            if stage not in first:
                first[stage] = k
            if cfg.latency == "zero":
                if res.submitted:
                    server.worker.wait_idle()  # the sim stands still while the model runs
            else:
                if res.submitted:
                    took = policy.wait_computed(timeout=600.0)
                    lat = took if cfg.latency == "measured" else fixed
                    if emulated is not None:
                        emulated.append(lat)
                    pending.append(res.t + lat)
                if pending and pending[0] <= res.t + dt + 1e-9:
                    # Visible from the next tick on: hand the chunk to the server now, while
                    # simulated time still stands at this tick.
                    pending.clear()
                    policy.release()
                    server.worker.wait_idle()
            if writer is not None:
                imgs = [c.read().frame for c in self.cameras.values()]
                name = self.stage_names[w.max_stage_reached - 1] if w.max_stage_reached else "none"
                writer.add(
                    [f.color for f in imgs if f is not None],
                    f"seed {seed}  tick {k}  stage {stage} (max {w.max_stage_reached}: {name})"
                    + ("  HELD" if res.held else ""),
                )
            if cfg.stop_on_success and w.max_stage_reached >= len(self.stage_names):
                stop.set()

        ticks_seen: list[int] = []
        try:
            server.start()
            run_loop(
                server,
                self.arms,
                self.cameras,
                Pacer(self.rate_hz, self.clock),
                duration=(self.ticks - 0.5) * dt,
                on_tick=on_tick,
                stop=stop,
            )
        finally:
            if policy.gate and server.worker.busy:
                policy.release()  # never leave the worker blocked in the gate
            if not server.stop(timeout=30.0):
                log.warning("episode %d: the inference worker did not stop within 30 s", index)
            if writer is not None:
                writer.close()
        stats = server.stats()
        if samples is not None:
            rec = server.recorder
            for key, s in (
                ("inference_s", rec.inference_s),
                ("arrival_s", rec.arrival_s),
                ("jumps", rec.jumps),
                ("steps", rec.steps),
            ):
                samples.setdefault(key, []).extend(float(v) for v in s.values())
        return EpisodeOutcome(
            index=index,
            seed=int(seed),
            ticks=len(ticks_seen),
            max_stage=int(w.max_stage_reached),
            final_stage=int(w.stage),
            success=bool(w.max_stage_reached >= len(self.stage_names)),
            first_tick_of_stage={s: t for s, t in sorted(first.items()) if s > 0},
            object_poses={k: [round(float(x), 6) for x in v] for k, v in w.object_poses.items()},
            wall_s=time.perf_counter() - wall0,
            inference_calls=len(policy.compute_s) - calls0,
            server=stats.to_dict(),
            video=str(video) if video is not None else None,
        )


def _seed_torch(seed: int) -> None:
    """Sampling policies (diffusion noise) draw from torch's global generator: seed it per episode."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(int(seed))


def evaluate(
    checkpoint: str | Path | None,
    config: EvalConfig,
    out_dir: str | Path | None = None,
    *,
    policy: Any = None,
    progress: bool = True,
    echo: Any = None,
) -> EvalReport:
    """Evaluate a checkpoint (or an already loaded `policy`, from that checkpoint or any object
    following duet.policy.interface.Policy) on the sim; writes <out_dir>/report.json and
    <out_dir>/videos/episode_XXX_seed_S.mp4 when out_dir is given. echo(line) gets a line per
    episode (default: tqdm.write when progress, else nothing)."""
    from duet.policy.factory import load_policy, resolve_device

    ckpt = Path(checkpoint) if checkpoint is not None else None
    if policy is None:
        if ckpt is None:
            raise DuetError("evaluate(): give a checkpoint directory or a policy")
        policy = load_policy(ckpt, config.device)
    device = str(getattr(policy, "device", resolve_device(config.device)))
    info = _checkpoint_info(ckpt, policy)
    spec, train_seeds = _dataset_spec_and_seeds(info.get("dataset"))
    camera_hw: dict[str, tuple[int, int]] = {}
    source = "rig"
    if config.camera_size:
        camera_hw = {c: (config.camera_size[0], config.camera_size[1]) for c in policy.camera_names}
        source = "camera_size"
    elif spec is not None:
        try:
            camera_hw = {c: (spec.camera(c).height, spec.camera(c).width) for c in policy.camera_names}
            source = "training dataset"
        except ConfigError:
            camera_hw = {}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    timed = TimedPolicy(policy, gate=config.latency != "zero")
    seeds = [config.seed + i for i in range(config.episodes)]
    t0 = time.perf_counter()
    with SimEvaluator(policy, config, camera_hw) as ev:
        cams = {n: {"height": c.features.height, "width": c.features.width} for n, c in ev.cameras.items()}
        report = EvalReport(
            config=config,
            checkpoint=info,
            stage_names=ev.stage_names,
            ticks=ev.ticks,
            camera={"source": source, "cameras": cams, "render_quality": config.render_quality},
            device=device,
        )
        if train_seeds is not None:
            report.training_seed_overlap = sorted(set(seeds) & set(train_seeds))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(seeds), desc=f"eval {config.task}", unit="ep", dynamic_ncols=True)
            echo = echo or bar.write
        try:
            for i, seed in enumerate(seeds):
                video = (
                    out / "videos" / f"episode_{i:03d}_seed_{seed}.mp4"
                    if out is not None and i < config.videos
                    else None
                )
                o = ev.run_episode(timed, i, seed, video, report.server_samples, report.emulated_latency_s)
                report.outcomes.append(o)
                if echo is not None:
                    name = report.stage_names[o.max_stage - 1] if o.max_stage else "none"
                    echo(
                        f"episode {i} seed {seed}: max stage {o.max_stage}/{len(report.stage_names)} ({name})"
                        f"{'  success' if o.success else ''}, {o.wall_s:.1f} s"
                    )
                if bar is not None:
                    ok = sum(x.success for x in report.outcomes)
                    bar.set_postfix(success=f"{ok}/{len(report.outcomes)}")
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    report.inference_wall_s = list(timed.compute_s)
    report.wall_s = time.perf_counter() - t0
    if out is not None:
        report.path = out / "report.json"
        report.path.write_text(json.dumps(report.to_dict(), indent=1))
    return report


def config_from_args(**kw: Any) -> EvalConfig:
    """EvalConfig from keyword values (CLI), with validation errors as ConfigError."""
    from duet.config import from_dict

    return from_dict(EvalConfig, {k: v for k, v in kw.items() if v is not None}, where="eval")


__all__ = [
    "EVAL_SEED_BASE",
    "EpisodeOutcome",
    "EvalConfig",
    "EvalReport",
    "SimEvaluator",
    "TimedPolicy",
    "VideoWriter",
    "config_from_args",
    "evaluate",
    "stage_rates",
    "wilson_interval",
]
