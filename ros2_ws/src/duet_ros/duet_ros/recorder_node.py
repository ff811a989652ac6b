"""Recorder node: demonstrations to a duet zarr episode store (duet.data.recorder core).

Subscribes  /<arm>/joint_states           sensor_msgs/JointState   every recorded arm
            /<follower>/command           sensor_msgs/JointState   the actions (rig pair order)
            /<camera>/image/compressed    sensor_msgs/CompressedImage, JPEG stored as received
            /teleop/state                 std_msgs/String (follow_teleop)
Publishes   ~/state     std_msgs/String, latched: idle | recording
            ~/health    std_msgs/String, one health line per finished episode (latched, last 10)
            /diagnostics  1 Hz: state, steps, store, writer backlog, sensor ages; and one
                        status right after each episode (WARN when the episode is flagged)
Services    ~/start, ~/stop (commit), ~/discard        std_srvs/Trigger
Parameter   episode_meta (dynamic): a JSON object merged into the metadata of the next
            episode committed, then reset to "{}" (what is known only at the end:
            `ros2 param set /recorder episode_meta '{"seed": 3, "success": true}'`)

Time: every sample keeps its capture time (the header stamp mapped back to the host's
monotonic clock by convert.TimeMapper); a paced 50 Hz thread (not an rclpy timer) calls
Recorder.tick(now), which samples the latest value of every sensor and queues it for the
core's writer thread: the tick never encodes or touches the disk.

Episodes start and end by service, and with follow_teleop by the teleop node's state: an
episode starts when teleop enters mirroring (the /teleop/start service, a pedal or the ALOHA
gesture) and is committed when teleop leaves it (stop, pause, leader lost). An episode
started by service ends by service (or max_episode_s), not by teleop.
Episode control runs in its own thread; services answer once it is done (stop answers
after the commit, with the health line).
"""

from __future__ import annotations

import json
import queue
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import JointState as JointStateMsg
from std_msgs.msg import String
from std_srvs.srv import Trigger

from duet.clock import MonotonicClock
from duet.config import field
from duet.data.recorder import Recorder, RecorderConfig
from duet.errors import ConfigError, DuetError
from duet.hardware.interfaces import JointState
from duet.hardware.rig import RigConfig, load_rig
from duet_ros import convert
from duet_ros.arm_node import COMMAND_QOS, DIAG_QOS, STATE_QOS
from duet_ros.params import declare_config
from duet_ros.runtime import LATCHED, PacedThread, latched_qos, run_node

EPISODE_META = "episode_meta"
NOT_RECORDING = "not recording"
HEALTH_QOS = latched_qos(10)  # ~/health: a late subscriber gets the last 10 health events


@dataclass
class RecorderNodeConfig:
    rig: str = field("aloha", help="rig: a shipped rig name or a rig YAML path")
    use_mock_hardware: bool = field(
        False, help="recorded in each episode's metadata (mock data is not real data)"
    )
    dataset: str = field("", help="episode store: a directory (created on first use) or an fsspec URL")
    task: str = field("", help="task name stored with every episode, e.g. fold_towel")
    operator: str = field("", help="operator name stored with every episode")
    arms: list[str] = field(factory=list, help="arms to record (joint states); empty = every arm of the rig")
    cameras: list[str] = field(factory=list, help="cameras to record; empty = every camera of the rig")
    image_codec: Literal["jpeg", "lossless"] = field(
        "jpeg",
        help="jpeg: camera JPEGs stored as received; lossless: decoded and stored zstd (new stores only)",
    )
    jpeg_quality: int = field(90, help="JPEG quality of frames the store encodes itself (new stores only)")
    rate_hz: float = field(0.0, help="recording (tick) rate, Hz; 0 = the rig's control_rate_hz")
    phase_s: float = field(
        0.010,
        help="tick phase on the host's monotonic grid, s: after the arms read (0) and teleop commands (3 ms)",
    )
    realtime_priority: int = field(
        0, help="SCHED_FIFO priority of the tick thread (1..98; 0 = normal scheduling)"
    )
    max_episode_s: float = field(0.0, help="commit an episode when it reaches this length, s; 0 = no limit")
    follow_teleop: bool = field(True, help="start when teleop enters mirroring, commit when it leaves")
    teleop_state_topic: str = field(
        "/teleop/state", help="the teleop node's latched state topic (std_msgs/String)"
    )
    require_fresh_s: float = field(
        1.0,
        help="refuse to start unless every recorded arm and camera delivered within this long, s; 0 = no check",
    )
    recover_partial: Literal["refuse", "commit", "discard"] = field(
        "refuse",
        help="a partial episode left by a crash: refuse to start (run `duet data recover`), commit or discard it",
    )
    commit_on_shutdown: bool = field(
        False, help="on node shutdown mid-episode: commit it (true) or discard it"
    )
    recorder: RecorderConfig = field(
        factory=RecorderConfig, help="the recorder core: writer queue and threads"
    )
    diagnostics_rate_hz: float = field(1.0, help="diagnostics publish rate, Hz")

    def __post_init__(self):
        if not self.dataset:
            raise ConfigError(
                "recorder node: parameter 'dataset' is required (a store directory, e.g. data/demos.zarr)"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError("recorder node: jpeg_quality must be within 1..100")
        if not 0 <= self.realtime_priority <= 98:
            raise ConfigError("recorder node: realtime_priority must be within 0..98")
        if (
            self.rate_hz < 0
            or self.max_episode_s < 0
            or self.require_fresh_s < 0
            or self.diagnostics_rate_hz <= 0
        ):
            raise ConfigError(
                "recorder node: rate_hz, max_episode_s and require_fresh_s must be >= 0, diagnostics_rate_hz > 0"
            )


def dataset_spec(cfg: RecorderNodeConfig, rig: RigConfig, joints: dict[str, list[str]]):
    """The store layout for the recorded arms and cameras of a rig (color only: the camera
    nodes publish no depth)."""
    from duet.data.layout import ArmSpec, CameraSpec, DatasetSpec

    arm_names = [a.name for a in rig.arms]
    cam_names = [c.name for c in rig.cameras]
    for n in cfg.arms:
        if n not in arm_names:
            raise ConfigError(
                f"recorder node: arms: {n!r} is not an arm of rig {rig.name!r} ({', '.join(arm_names)})"
            )
    for n in cfg.cameras:
        if n not in cam_names:
            raise ConfigError(
                f"recorder node: cameras: {n!r} is not a camera of rig {rig.name!r} ({', '.join(cam_names)})"
            )
    arms = [a for a in rig.arms if not cfg.arms or a.name in cfg.arms]
    cams = [c for c in rig.cameras if not cfg.cameras or c.name in cfg.cameras]
    recorded = {a.name for a in arms}
    followers = [f for _, f in rig.pairs if f in recorded] or [a.name for a in arms if a.role == "follower"]
    if not followers:
        raise ConfigError(
            "recorder node: no follower among the recorded arms (the actions are the followers' commands)"
        )
    return DatasetSpec(
        rate_hz=rig.resolve_rate(cfg.rate_hz),  # 0 = the rig's
        arms=[ArmSpec(a.name, a.role, list(joints[a.name])) for a in arms],
        followers=followers,
        cameras=[CameraSpec(c.name, c.width, c.height, False, float(c.max_age_s)) for c in cams],
        image_codec=cfg.image_codec,
        jpeg_quality=cfg.jpeg_quality,
    )


class FrameCounter:
    """Device-like frame indices from capture stamps. CompressedImage carries no frame
    counter, so the index advances by the number of camera periods between consecutive
    stamps (at least 1): frames lost at the device or in transport leave a gap, which the
    episode health counts as dropped frames. The period is the median of the recent
    intervals (the rig's fps until there are a few), so a camera node running at another
    rate than the rig says does not count phantom drops."""

    def __init__(self, fps: float, window: int = 31):
        self.nominal = 1.0 / float(fps)
        self.index = -1
        self._last: float | None = None
        self._dts: deque[float] = deque(maxlen=window)

    @property
    def period(self) -> float:
        return float(np.median(self._dts)) if len(self._dts) >= 5 else self.nominal

    def next(self, stamp: float) -> int | None:
        """The index of a frame captured at `stamp`; None for a repeated or older frame."""
        if self._last is not None and stamp <= self._last:
            return None
        step = 1
        if self._last is not None:
            dt = stamp - self._last
            step = max(1, int(round(dt / self.period)))
            self._dts.append(dt)
        self._last = stamp
        self.index += step
        return self.index


def _episode_meta(value: Any) -> dict[str, Any] | None:
    """The episode_meta parameter's JSON object; None when it is not one."""
    try:
        v = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def in_order(state: JointState, names: tuple[str, ...]) -> JointState:
    """A joint state in `names` order; ValueError when the joints differ."""
    if state.names == names:
        if len(state.position) != len(names):
            raise ValueError(f"{len(state.position)} positions for {len(names)} joints")
        return state
    if sorted(state.names) != sorted(names) or len(state.position) != len(state.names):
        raise ValueError(f"joints {list(state.names)} do not match the recorded {list(names)}")
    idx = np.array([state.names.index(n) for n in names])
    return JointState(
        stamp=state.stamp,
        names=names,
        position=state.position[idx],
        velocity=state.velocity[idx],
        effort=state.effort[idx],
        gripper_raw=state.gripper_raw,
    )


class RecorderNode(Node):
    def __init__(self, **node_kwargs: Any):
        """node_kwargs go to rclpy's Node (context, parameter_overrides: in-process use)."""
        super().__init__("recorder", **node_kwargs)
        self.cfg = declare_config(self, RecorderNodeConfig)
        cfg = self.cfg
        self.rig = load_rig(cfg.rig)
        self.clock = MonotonicClock()
        self.mapper = convert.TimeMapper()
        self.joint_names = {
            a.name: self._joint_names(a.name) for a in self.rig.arms if not cfg.arms or a.name in cfg.arms
        }
        self.spec = dataset_spec(cfg, self.rig, {n: list(j) for n, j in self.joint_names.items()})
        self.store = self._open_store()
        self.recorder = Recorder(self.store, self.clock, cfg.recorder, rig=self.rig)
        self.max_steps = int(round(cfg.max_episode_s * self.spec.rate_hz)) if cfg.max_episode_s else 0
        self.decode = cfg.image_codec != "jpeg"

        self._lock = threading.Lock()  # tick vs episode start/stop
        self._active = False  # ticks go to the recorder
        self._steps = 0
        self._started_by = ""
        self._stop_requested = False
        self._episode_start = 0.0
        self._teleop_state: str | None = None
        self._last_seen: dict[str, float] = {}  # device -> capture stamp of its newest sample
        self._counters = {
            "joint_states": 0,
            "commands": 0,
            "frames": 0,
            "rejected": 0,
            "frames_out_of_order": 0,
        }
        self._last_error = ""
        self._last_line = ""
        self._episodes_recorded = 0
        self._frame_counters = {c.name: FrameCounter(self.rig.camera(c.name).fps) for c in self.spec.cameras}

        for arm in self.joint_names:
            self.create_subscription(
                JointStateMsg, f"/{arm}/joint_states", lambda m, a=arm: self._on_joints(a, m), STATE_QOS
            )
        for f in self.spec.followers:
            self.create_subscription(
                JointStateMsg, f"/{f}/command", lambda m, f=f: self._on_command(f, m), COMMAND_QOS
            )
        for c in self.spec.camera_names:
            self.create_subscription(
                CompressedImage,
                f"/{c}/image/compressed",
                lambda m, c=c: self._on_image(c, m),
                qos_profile_sensor_data,
            )
        if cfg.follow_teleop:
            self.create_subscription(String, cfg.teleop_state_topic, self._on_teleop_state, LATCHED)
        self.pub_state = self.create_publisher(String, "~/state", LATCHED)
        self.pub_health = self.create_publisher(String, "~/health", HEALTH_QOS)
        self.pub_diag = self.create_publisher(convert.DiagnosticArray, "/diagnostics", DIAG_QOS)
        self.declare_parameter(
            EPISODE_META,
            "{}",
            ParameterDescriptor(
                description="JSON object merged into the next committed episode's metadata, then reset to {}"
            ),
        )
        self.add_on_set_parameters_callback(self._check_episode_meta)
        for action in ("start", "stop", "discard"):
            self.create_service(Trigger, f"~/{action}", lambda req, resp, a=action: self._on_trigger(a, resp))
        self.pub_state.publish(String(data="idle"))

        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._control = threading.Thread(target=self._control_loop, name="recorder-control", daemon=True)
        self._control.start()
        self.create_timer(1.0 / cfg.diagnostics_rate_hz, self._publish_diagnostics)
        self._loop = PacedThread(
            "recorder-loop",
            self.spec.rate_hz,
            self._tick,
            self._on_error,
            self.clock,
            phase_s=cfg.phase_s,
            realtime_priority=cfg.realtime_priority,
        )
        self._loop.start()
        self.get_logger().info(
            f"recording {len(self.spec.arms)} arms, {len(self.spec.cameras)} cameras at {self.spec.rate_hz:g} Hz "
            f"to {self.store.location} ({self.store.n_episodes} episodes); start: /recorder/start service"
            + (f" or teleop mirroring ({cfg.teleop_state_topic})" if cfg.follow_teleop else "")
        )

    # ------------------------------------------------------------------ setup

    def _joint_names(self, arm: str) -> tuple[str, ...]:
        """The arm's joint names from its backend's features (no connection: the arm runs
        in its own node)."""
        from duet.hardware.factory import make_arm

        return tuple(make_arm(self.rig, arm, self.cfg.use_mock_hardware).features.joint_names)

    def _open_store(self):
        from duet.data.store import EpisodeStore

        store = EpisodeStore.open_or_create(self.cfg.dataset, self.spec)
        pend = store.pending
        if pend is not None:
            if self.cfg.recover_partial == "refuse":
                raise DuetError(
                    f"{store.location}: holds a partial episode from a crash ({pend.get('flushed', 0)} steps); run "
                    f"`duet data recover {store.location}` (or --discard), or set recover_partial to commit or discard"
                )
            res = store.recover(commit=self.cfg.recover_partial == "commit")
            self.get_logger().warning(
                f"{store.location}: partial episode from a crash {res['action']} ({res['steps']} steps)"
            )
        return store

    # ------------------------------------------------------------------ inputs (executor thread)

    def _on_joints(self, arm: str, msg: JointStateMsg) -> None:
        try:
            state = in_order(convert.msg_to_joint_state(msg, self.mapper), self.joint_names[arm])
        except ValueError as e:
            self._reject(f"/{arm}/joint_states: {e}")
            return
        self.recorder.update_joints(arm, state)
        self._last_seen[arm] = state.stamp
        self._counters["joint_states"] += 1

    def _on_command(self, follower: str, msg: JointStateMsg) -> None:
        try:
            pos, stamp = convert.msg_to_command(msg, self.mapper, self.joint_names[follower])
        except ValueError as e:
            self._reject(f"/{follower}/command: {e}")
            return
        self.recorder.update_command(follower, pos, stamp)
        self._counters["commands"] += 1

    def _on_image(self, camera: str, msg: CompressedImage) -> None:
        stamp = self.mapper.from_msg(msg.header.stamp)
        index = self._frame_counters[camera].next(stamp)
        if index is None:
            self._counters["frames_out_of_order"] += 1
            return
        try:
            frame = convert.compressed_to_frame(msg, self.mapper, index, decode=self.decode)
        except ValueError as e:
            self._reject(f"/{camera}/image/compressed: {e}")
            return
        self.recorder.update_frame(camera, frame)
        self._last_seen[camera] = frame.stamp
        self._counters["frames"] += 1

    def _reject(self, what: str) -> None:
        self._counters["rejected"] += 1
        if self._last_error != what:
            self.get_logger().warning(f"ignored {what}")
        self._last_error = what

    def _on_teleop_state(self, msg: String) -> None:
        prev, self._teleop_state = self._teleop_state, msg.data
        if prev is None or prev == msg.data:
            return  # act on transitions only (not on the latched state found at start)
        if msg.data == "mirroring":
            self._submit("start", "teleop")
        elif prev == "mirroring":
            self._submit("stop", "teleop")

    def _on_trigger(self, action: str, resp):
        fut = self._submit(action, "service")
        try:
            resp.success, resp.message = fut.result(timeout=self.cfg.recorder.commit_timeout_s + 10.0)
        except TimeoutError:
            resp.success, resp.message = (
                False,
                f"{action}: not done within {self.cfg.recorder.commit_timeout_s:.0f} s",
            )
        return resp

    # ------------------------------------------------------------------ the tick (paced thread)

    def _tick(self) -> None:
        now = self.clock.now()
        with self._lock:
            if not self._active or (self.max_steps and self._steps >= self.max_steps):
                return  # (at the limit: exactly max_episode_s of steps while the commit is queued)
            self.recorder.tick(now)
            self._steps += 1
            if self.max_steps and self._steps >= self.max_steps and not self._stop_requested:
                self._stop_requested = True
                self._submit("stop", "max_episode_s")

    def _on_error(self, e: BaseException) -> None:
        self._last_error = f"loop: {type(e).__name__}: {e}"
        self.get_logger().error(self._last_error)

    # ------------------------------------------------------------------ episode control (own thread)

    def _submit(self, action: str, source: str) -> Future:
        fut: Future = Future()
        self._requests.put((action, source, fut))
        return fut

    def _control_loop(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                return
            action, source, fut = item
            try:
                result = (
                    self._start(source)
                    if action == "start"
                    else self._stop(source, discard=action == "discard")
                )
            except Exception as e:  # a bug: report it, keep serving
                result = (False, f"{action}: {type(e).__name__}: {e}")
            if not result[0] and source != "service" and result[1] != NOT_RECORDING:
                self.get_logger().warning(f"{action} ({source}) refused: {result[1]}")
            fut.set_result(result)

    def _start(self, source: str) -> tuple[bool, str]:
        if self._active:
            return False, f"already recording episode {self.store.n_episodes} (started by {self._started_by})"
        missing = self._not_fresh()
        if missing:
            return False, f"not recording: {missing}"
        meta: dict[str, Any] = {
            "started_by": source,
            "use_mock_hardware": self.cfg.use_mock_hardware,
            "rate_hz": self.spec.rate_hz,
        }
        with self._lock:
            try:
                self.recorder.start_episode(task=self.cfg.task, operator=self.cfg.operator, **meta)
            except DuetError as e:
                return False, str(e)
            self._active = True
            self._steps = 0
            self._started_by = source
            self._stop_requested = False
            self._episode_start = self.clock.now()
        self.pub_state.publish(String(data="recording"))
        msg = f"recording episode {self.store.n_episodes} (task {self.cfg.task!r}, started by {source})"
        self.get_logger().info(msg)
        return True, msg

    def _not_fresh(self) -> str:
        limit = self.cfg.require_fresh_s
        if not limit:
            return ""
        now = self.clock.now()
        devices = [*self.joint_names, *self.spec.camera_names]
        never = [d for d in devices if d not in self._last_seen]
        if never:
            return f"no data yet from {', '.join(never)} (are their nodes running?)"
        stale = [
            f"{d} ({now - self._last_seen[d]:.1f} s)" for d in devices if now - self._last_seen[d] > limit
        ]
        if stale:
            return f"stale data from {', '.join(stale)} (limit require_fresh_s={limit:g})"
        return ""

    @staticmethod
    def _check_episode_meta(params) -> SetParametersResult:
        for p in params:
            if p.name == EPISODE_META and not isinstance(_episode_meta(p.value), dict):
                return SetParametersResult(
                    successful=False,
                    reason=f"{EPISODE_META} must be a JSON object string, "
                    f"e.g. '{{\"seed\": 3}}' (got {p.value!r})",
                )
        return SetParametersResult(successful=True)

    def _take_episode_meta(self) -> dict[str, Any]:
        meta = _episode_meta(self.get_parameter(EPISODE_META).value) or {}
        if meta:
            self.set_parameters([Parameter(EPISODE_META, value="{}")])
        return meta

    def _stop(self, source: str, discard: bool) -> tuple[bool, str]:
        if not self._active:
            return False, NOT_RECORDING
        if source == "teleop" and self._started_by != "teleop":
            return False, f"the episode was started by {self._started_by}; it ends the same way"
        with self._lock:
            self._active = False  # no tick reaches the recorder after this
        index = self.store.n_episodes
        try:
            res = self.recorder.stop_episode(discard=discard, meta=self._take_episode_meta())
        except DuetError as e:
            line = f"episode {index} lost: {e}"
            self._finish(line, convert.ERROR, {})
            return False, line
        if res.index is None:
            line = f"episode {index} discarded ({self._steps} steps, {source})"
            self.get_logger().info(line)
            self.pub_state.publish(String(data="idle"))
            return True, line
        self._episodes_recorded += 1
        line = f"episode {res.index}: {res.line}"
        flagged = bool(res.meta.get("flagged"))
        self._finish(line, convert.WARN if flagged else convert.OK, res.meta)
        return True, line

    def _finish(self, line: str, level: bytes, meta: dict[str, Any]) -> None:
        self._last_line = line
        # (rclpy refuses one call site logging at different severities: two call sites)
        if level == convert.OK:
            self.get_logger().info(line)
        else:
            self.get_logger().warning(line)
        self.pub_health.publish(String(data=line))
        self.pub_state.publish(String(data="idle"))
        values = {
            k: meta[k]
            for k in (
                "length",
                "rate_hz",
                "period_jitter_ms",
                "late_ticks",
                "mb_written",
                "writer_dropped",
                "flags",
            )
            if k in meta
        }
        values["dataset"] = self.store.location
        values["episodes"] = self.store.n_episodes
        for cam, c in (meta.get("cameras") or {}).items():
            values[f"cameras.{cam}.dropped_frames"] = c.get("dropped_frames", 0)
            values[f"cameras.{cam}.stale_ticks"] = c.get("stale_ticks", 0)
        status = convert.diagnostic_status("duet/recorder/episode", self.store.location, level, line, values)
        self.pub_diag.publish(convert.diagnostic_array([status], self.clock.now(), self.mapper))

    # ------------------------------------------------------------------ diagnostics (executor)

    def _publish_diagnostics(self) -> None:
        now = self.clock.now()
        rec = self.recorder
        if self._active and not self._stop_requested:
            if rec.error is not None:  # the episode is lost: end it now, so the operator hears of it
                self._stop_requested = True
                self._submit("stop", "writer error")
            elif self._started_by == "teleop" and self.count_publishers(self.cfg.teleop_state_topic) == 0:
                self.get_logger().warning("the teleop node is gone mid-episode: committing the episode")
                self._stop_requested = True
                self._submit("stop", "teleop")
        values: dict[str, Any] = {
            "state": "recording" if self._active else "idle",
            "dataset": self.store.location,
            "episodes": self.store.n_episodes,
            "episodes_recorded": self._episodes_recorded,
            "episode_steps": self._steps if self._active else 0,
            "episode_s": (now - self._episode_start) if self._active else 0.0,
            "pending_frames": rec.pending_frames,
            "writer_dropped_total": rec.stats.writer_dropped,
            "frames_written_total": rec.stats.frames_written,
            "mb_written_total": rec.stats.bytes_written / 1e6,
            "teleop_state": self._teleop_state or "",
            "last_episode": self._last_line,
            "last_error": self._last_error,
            **self._counters,
        }
        values.update(self._loop.window.summary_and_reset())
        values["scheduling"] = self._loop.realtime
        ages = {
            d: now - self._last_seen[d]
            for d in (*self.joint_names, *self.spec.camera_names)
            if d in self._last_seen
        }
        values.update({f"sample_age_s.{d}": a for d, a in ages.items()})
        missing = [d for d in (*self.joint_names, *self.spec.camera_names) if d not in ages]
        stale = [d for d, a in ages.items() if a > 1.0]
        if rec.error is not None:
            level, msg = convert.ERROR, f"writer failed: {rec.error}"
        elif missing or stale:
            level, msg = convert.WARN, f"no fresh data from {', '.join(missing + stale)}"
        elif rec.pending_frames > rec.config.max_pending_frames // 2:
            level, msg = convert.WARN, f"writer behind: {rec.pending_frames} frames waiting"
        elif self._active:
            level, msg = convert.OK, f"recording episode {self.store.n_episodes}: {self._steps} steps"
        else:
            level, msg = convert.OK, f"idle: {self.store.n_episodes} episodes in {self.store.location}"
        status = convert.diagnostic_status("duet/recorder", self.store.location, level, msg, values)
        self.pub_diag.publish(convert.diagnostic_array([status], now, self.mapper))

    # ------------------------------------------------------------------ shutdown

    def close(self) -> None:
        self._loop.stop()
        if self._active:
            fut = self._submit("stop" if self.cfg.commit_on_shutdown else "discard", "shutdown")
            try:
                ok, line = fut.result(timeout=self.cfg.recorder.commit_timeout_s + 10.0)
                if not ok:
                    self.get_logger().error(f"shutdown: {line}")
            except TimeoutError:
                self.get_logger().error("shutdown: the episode did not finish; `duet data recover` the store")
        self._requests.put(None)
        self._control.join(timeout=5.0)
        self.recorder.close()


def main() -> int:
    return run_node(RecorderNode, "duet_recorder_node")


if __name__ == "__main__":
    raise SystemExit(main())
