"""Policy node: the duet.policy.server core at 50 Hz over the arm and camera nodes' topics.

Subscribes  /<follower>/joint_states         sensor_msgs/JointState (the rig's followers, pair order)
            /<camera>/image/compressed       sensor_msgs/CompressedImage (the policy's cameras)
Publishes   /<follower>/command              sensor_msgs/JointState, stamped with the tick time
            /policy/state                    std_msgs/String (idle, running; latched)
            /policy/events                   std_msgs/String (watchdog faults, resumes, NaN chunks,
                                             chunks dropped for an action beyond a joint limit or
                                             rejected for their t_rel (naming arm.joint, value, limit),
                                             the episode stopped after repeated faults, late chunks,
                                             deadline misses)
            /diagnostics                     loop rate / period error, server statistics
Services    /policy/start   reset the policy (episode start) and start commanding (std_srvs/Trigger)
            /policy/stop    stop commanding; each arm node holds its last command
            /policy/reset   episode reset while running (the arm holds until a fresh chunk)

The loop is a dedicated thread on absolute deadlines (duet_ros.runtime.PacedThread); the
inference runs in the server's worker thread; JPEG decoding runs in the executor's
subscription callbacks. Nothing of that blocks a tick. Every command passed the server's
safety function (and the arm node applies it again).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage
from sensor_msgs.msg import JointState as JointStateMsg
from std_msgs.msg import String
from std_srvs.srv import Trigger

from duet.clock import MonotonicClock, set_realtime
from duet.config import field
from duet.errors import ConfigError
from duet.hardware.interfaces import CameraReading, Frame, JointState
from duet.hardware.rig import load_rig
from duet.hardware.safety import SafetyLimits
from duet.policy.server import PolicyServer, ServerConfig, split_command
from duet_ros import convert
from duet_ros.arm_node import COMMAND_QOS, DIAG_QOS, STATE_QOS
from duet_ros.params import declare_config
from duet_ros.runtime import LATCHED, PacedThread, run_node


@dataclass
class PolicyNodeConfig:
    rig: str = field("aloha", help="rig: a shipped rig name or a rig YAML path")
    use_mock_hardware: bool = field(
        False, help="unused by the policy node itself (arms and cameras run in their nodes)"
    )
    checkpoint: str = field("", help="policy checkpoint directory (duet train output)")
    device: str = field("auto", help="inference device: auto (cuda when available), cpu, cuda, cuda:1")
    bf16: bool = field(False, help="run inference under bfloat16 autocast (faster on recent CPUs and GPUs)")
    channels_last: bool = field(False, help="channels-last convolution weights (faster on some CPUs)")
    followers: list[str] = field(
        factory=list, help="follower arms in the policy's action order; empty = the rig's pairs' followers"
    )
    server: ServerConfig = field(factory=ServerConfig, help="the policy server core: mode, timing, watchdog")
    start_on_launch: bool = field(False, help="start commanding at launch instead of on /policy/start")
    rt_priority: int = field(0, help="SCHED_FIFO priority of the 50 Hz loop thread (needs root); 0 = normal")
    diagnostics_rate_hz: float = field(1.0, help="diagnostics publish rate, Hz")

    def __post_init__(self):
        if not self.checkpoint:
            raise ConfigError(
                "policy node: parameter 'checkpoint' is required (a duet train checkpoint directory)"
            )
        if self.diagnostics_rate_hz <= 0:
            raise ConfigError("policy node: diagnostics_rate_hz must be > 0")
        if not 0 <= self.rt_priority <= 99:
            raise ConfigError("policy node: rt_priority must be within 0..99")


def follower_limits(rig, followers: list[str], use_mock: bool) -> tuple[SafetyLimits, list[int], list[str]]:
    """Safety limits of the followers (their features, without connecting), their joint counts
    and the action dims' names ("left_follower.elbow", for fault reports)."""
    from duet.hardware.factory import make_arm

    feats = [make_arm(rig, name, use_mock).features for name in followers]
    limits = SafetyLimits(
        np.concatenate([f.lower for f in feats]),
        np.concatenate([f.upper for f in feats]),
        np.concatenate([f.max_step for f in feats]),
    )
    return (
        limits,
        [len(f.joint_names) for f in feats],
        [f"{f.name}.{j}" for f in feats for j in f.joint_names],
    )


class PolicyNode(Node):
    def __init__(self):
        super().__init__("policy")
        self.cfg = declare_config(self, PolicyNodeConfig)
        cfg = self.cfg
        self.rig = load_rig(cfg.rig)
        cfg.server = replace(cfg.server, rate_hz=self.rig.resolve_rate(cfg.server.rate_hz))  # 0 = the rig's
        self.followers = list(cfg.followers) or [f for _, f in self.rig.pairs]
        for name in self.followers:
            if self.rig.arm(name).role != "follower":
                raise ConfigError(f"policy node: {name!r} is not a follower arm of rig {self.rig.name!r}")
        from duet.policy.factory import load_policy

        self.policy = load_policy(cfg.checkpoint, cfg.device, bf16=cfg.bf16, channels_last=cfg.channels_last)
        for cam in self.policy.camera_names:
            self.rig.camera(cam)  # a policy camera the rig lacks: one-line error
        limits, self.sizes, names = follower_limits(self.rig, self.followers, cfg.use_mock_hardware)
        self.clock = MonotonicClock()
        self.mapper = convert.TimeMapper()
        self.server = PolicyServer(self.policy, cfg.server, limits, self.clock, action_names=names)

        self._lock = threading.Lock()
        self._states: dict[str, JointState] = {}
        self._frames: dict[str, Frame] = {}
        self._frame_index = {cam: 0 for cam in self.policy.camera_names}
        self._decode_errors = 0
        for name in self.followers:
            self.create_subscription(
                JointStateMsg, f"/{name}/joint_states", lambda m, n=name: self._on_state(n, m), STATE_QOS
            )
        for cam in self.policy.camera_names:
            self.create_subscription(
                CompressedImage,
                f"/{cam}/image/compressed",
                lambda m, c=cam: self._on_image(c, m),
                qos_profile_sensor_data,
            )
        self.pub_cmd = {
            f: self.create_publisher(JointStateMsg, f"/{f}/command", COMMAND_QOS) for f in self.followers
        }
        self.pub_state = self.create_publisher(String, "~/state", LATCHED)
        self.pub_events = self.create_publisher(String, "~/events", QoSProfile(depth=50))
        self.pub_diag = self.create_publisher(convert.DiagnosticArray, "/diagnostics", DIAG_QOS)
        for action in ("start", "stop", "reset"):
            self.create_service(Trigger, f"~/{action}", lambda req, resp, a=action: self._on_trigger(a, resp))

        self.running = False
        self._pending: str | None = None  # start / reset, applied by the loop thread
        self.events_total = 0
        self.last_event = ""
        self._last_error = ""
        self._rt_note: str | None = None
        self._publish_state()
        self.server.start()
        if cfg.start_on_launch:
            self._pending = "start"
        self.create_timer(1.0 / cfg.diagnostics_rate_hz, self._publish_diagnostics)
        self._loop = PacedThread("policy-loop", cfg.server.rate_hz, self._tick, self._on_error, self.clock)
        self._loop.start()
        self.get_logger().info(
            f"policy {cfg.checkpoint} ({type(self.policy).__name__}, horizon {self.policy.horizon}) on "
            f"{cfg.device}: {cfg.server.mode} mode at {cfg.server.rate_hz:g} Hz for {', '.join(self.followers)}; "
            f"cameras {', '.join(self.policy.camera_names)}; "
            + ("starting now" if cfg.start_on_launch else "start: /policy/start service")
        )

    # ------------------------------------------------------------------ inputs (executor thread)

    def _on_state(self, name: str, msg: JointStateMsg) -> None:
        state = convert.msg_to_joint_state(msg, self.mapper)
        with self._lock:
            self._states[name] = state

    def _on_image(self, cam: str, msg: CompressedImage) -> None:
        try:
            color = convert.compressed_to_array(msg)
        except ValueError as e:
            self._decode_errors += 1
            self._last_error = f"{cam}: {e}"
            return
        stamp = self.mapper.from_msg(msg.header.stamp)
        with self._lock:
            self._frame_index[cam] += 1
            self._frames[cam] = Frame(stamp, self._frame_index[cam], color)

    def _on_trigger(self, action: str, resp):
        if action == "stop":
            self.running = False
            self._publish_state()
            resp.success, resp.message = True, "stopped: the arms hold their last command"
            return resp
        if action == "reset" and not self.running:
            resp.success, resp.message = False, "not running: call /policy/start"
            return resp
        self._pending = action
        resp.success, resp.message = True, f"{action}: the arms hold until the first chunk arrives"
        return resp

    # ------------------------------------------------------------------ the loop (its own thread)

    def _tick(self) -> None:
        if self._rt_note is None:
            self._rt_note = set_realtime(self.cfg.rt_priority) if self.cfg.rt_priority > 0 else ""
            if self._rt_note:
                self.get_logger().warning(self._rt_note)
        pending, self._pending = self._pending, None
        if pending in ("start", "reset"):
            self.server.reset()
            if pending == "start":
                self.running = True
                self._publish_state()
        if not self.running:
            return
        now = self.clock.now()
        with self._lock:
            states = [self._states.get(n) for n in self.followers]
            frames = dict(self._frames)
        if all(s is not None for s in states):
            cams = {c: CameraReading(f, now - f.stamp, False, True) for c, f in frames.items()}
            self.server.observe(states, cams)
        result = self.server.tick(now)
        if result.command is not None:
            names = [s.names if s is not None else () for s in states]
            for name, joint_names, cmd in zip(
                self.followers, names, split_command(result.command, self.sizes)
            ):
                self.pub_cmd[name].publish(convert.command_to_msg(joint_names, cmd, now, self.mapper))
        for ev in self.server.drain_events():
            self.events_total += 1
            self.last_event = f"{ev.kind}: {ev.detail}"
            self.pub_events.publish(String(data=self.last_event))
            self.get_logger().info(f"policy {self.last_event}")

    def _on_error(self, e: BaseException) -> None:
        self._last_error = f"loop error: {type(e).__name__}: {e}"
        self.get_logger().error(self._last_error)

    def _publish_state(self) -> None:
        self.pub_state.publish(String(data="running" if self.running else "idle"))

    def _publish_diagnostics(self) -> None:
        now = self.clock.now()
        st = self.server.stats()
        values = {
            "state": "running" if self.running else "idle",
            "fault": self.server.fault,
            "events_total": self.events_total,
            "last_event": self.last_event,
            "last_error": self._last_error,
            "decode_errors": self._decode_errors,
        }
        values.update({f"server.{k}": v for k, v in st.to_dict().items()})
        values.update(self._loop.window.summary_and_reset(with_run=True))
        if self._last_error.startswith("loop error"):
            level, msg = convert.ERROR, self._last_error
        elif self.server.fault:
            level, msg = convert.WARN, f"holding: {self.server.fault}"
        elif self.running and st.deadline_misses:
            level, msg = convert.WARN, f"{st.deadline_misses} deadline misses since start"
        else:
            level, msg = convert.OK, values["state"]
        status = convert.diagnostic_status("duet/policy", "policy", level, msg, values)
        self.pub_diag.publish(convert.diagnostic_array([status], now, self.mapper))

    def close(self) -> None:
        self.running = False
        self._loop.stop()
        self.server.stop(timeout=2.0)


def main() -> int:
    return run_node(PolicyNode, "duet_policy_node")


if __name__ == "__main__":
    raise SystemExit(main())
