"""Teleop node: the duet.teleop core at 50 Hz over the arm nodes' topics.

Subscribes  /<leader>/joint_states, /<follower>/joint_states   (sensor_msgs/JointState)
            /<leader>/fault, /<follower>/fault   std_msgs/String, latched: an arm's fault in one
                                       line ("" = healthy); the core pauses on it and refuses
                                       start while any arm of a pair is faulted
Publishes   /<follower>/command        sensor_msgs/JointState, stamped with the capture time
                                       of the leader sample it was computed from
            /teleop/state              std_msgs/String (idle, ramping, mirroring, paused; latched)
            /teleop/events             std_msgs/String (one line per state change / refusal)
            /diagnostics               loop rate, period error p50/p99/max, overruns,
                                       leader-sample -> command latency p50/p99; ERROR while an
                                       arm is faulted; WARN / ERROR when the loop's achieved
                                       rate stays below teleop.rate_watch's fractions of rate_hz
Services    /teleop/start, /teleop/stop, /teleop/pause   (std_srvs/Trigger)
            /teleop/reset_stats   restart the since-start ("run.*") loop and latency figures

The loop is a dedicated thread on absolute deadlines (duet.clock.Pacer), not an rclpy
timer; it steps the core with the latest received samples. A restarted teleop node starts
idle: mirroring resumes only through the ramp.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import JointState as JointStateMsg
from std_msgs.msg import String
from std_srvs.srv import Trigger

from duet.clock import MonotonicClock
from duet.hardware.interfaces import ArmFeatures, JointState
from duet.hardware.rig import load_rig
from duet.ratewatch import ERROR as RATE_ERROR
from duet.ratewatch import WARN as RATE_WARN
from duet.ratewatch import RateWatch
from duet.stats import Samples
from duet.teleop.core import TeleopCore, TeleopState
from duet.teleop.inputs import make_input
from duet_ros import convert
from duet_ros.arm_node import COMMAND_QOS, DIAG_QOS, STATE_QOS
from duet_ros.configs import TeleopNodeConfig
from duet_ros.params import declare_config
from duet_ros.runtime import LATCHED, PacedThread, run_node


def arm_features(rig, name: str, use_mock: bool) -> ArmFeatures:
    """An arm's features from its backend, without connecting (the arm runs in its node)."""
    from duet.hardware.factory import make_arm

    return make_arm(rig, name, use_mock).features


class TeleopNode(Node):
    def __init__(self, **node_kwargs: Any):
        """node_kwargs go to rclpy's Node (context, parameter_overrides: in-process use)."""
        super().__init__("teleop", **node_kwargs)
        self.cfg = declare_config(self, TeleopNodeConfig)
        cfg = self.cfg
        self.rig = load_rig(cfg.rig)
        cfg.teleop = replace(cfg.teleop, rate_hz=self.rig.resolve_rate(cfg.teleop.rate_hz))  # 0 = the rig's
        pairs = cfg.teleop.resolved_pairs(self.rig.pairs)
        leaders = {p.leader: arm_features(self.rig, p.leader, cfg.use_mock_hardware) for p in pairs}
        followers = {p.follower: arm_features(self.rig, p.follower, cfg.use_mock_hardware) for p in pairs}
        self.core = TeleopCore(cfg.teleop, pairs, leaders, followers)
        self.follower_names = {f: tuple(feat.joint_names) for f, feat in followers.items()}
        self.clock = MonotonicClock()
        self.mapper = convert.TimeMapper()
        self.inputs = [make_input(spec) for spec in cfg.inputs]

        self._lock = threading.Lock()
        self._leaders: dict[str, JointState] = {}
        self._followers: dict[str, JointState] = {}
        self._faults: dict[str, str] = {}  # arm -> its latest ~/fault ("" = healthy)
        for name in (*leaders, *followers):
            self.create_subscription(
                String, f"/{name}/fault", lambda m, n=name: self._on_fault(n, m), LATCHED
            )
        for name in leaders:
            self.create_subscription(
                JointStateMsg,
                f"/{name}/joint_states",
                lambda m, n=name: self._on_state(self._leaders, n, m),
                STATE_QOS,
            )
        for name in followers:
            self.create_subscription(
                JointStateMsg,
                f"/{name}/joint_states",
                lambda m, n=name: self._on_state(self._followers, n, m),
                STATE_QOS,
            )
        self.pub_cmd = {
            f: self.create_publisher(JointStateMsg, f"/{f}/command", COMMAND_QOS) for f in followers
        }
        self.pub_state = self.create_publisher(String, "~/state", LATCHED)
        self.pub_events = self.create_publisher(String, "~/events", QoSProfile(depth=50))
        self.pub_diag = self.create_publisher(convert.DiagnosticArray, "/diagnostics", DIAG_QOS)
        for action in ("start", "stop", "pause"):
            self.create_service(Trigger, f"~/{action}", lambda req, resp, a=action: self._on_trigger(a, resp))
        self.create_service(Trigger, "~/reset_stats", self._on_reset_stats)

        self.rate = RateWatch(cfg.teleop.rate_hz, cfg.teleop.rate_watch, what="teleop loop")
        self.latency = Samples(4096)  # leader capture -> command publish, per diagnostics window (ms)
        self.run_latency = Samples(1 << 20)  # the same since start (s)
        self.events_total = 0
        self.last_event = ""
        self._published_state: TeleopState | None = None
        self._publish_state(self.core.state)
        self.create_timer(1.0 / cfg.diagnostics_rate_hz, self._publish_diagnostics)
        self._loop = PacedThread(
            "teleop-loop",
            cfg.teleop.rate_hz,
            self._tick,
            self._on_error,
            self.clock,
            phase_s=cfg.phase_s,
            realtime_priority=cfg.realtime_priority,
        )
        self._loop.start()
        self.get_logger().info(
            f"teleop {', '.join(f'{p.leader}->{p.follower}' for p in pairs)} at {cfg.teleop.rate_hz:g} Hz; "
            "start: /teleop/start service"
            + (", gesture (hold both leader grippers closed)" if cfg.teleop.gesture.enabled else "")
        )

    def _on_state(self, store: dict[str, JointState], name: str, msg: JointStateMsg) -> None:
        state = convert.msg_to_joint_state(msg, self.mapper)
        with self._lock:
            store[name] = state

    def _on_fault(self, name: str, msg: String) -> None:
        with self._lock:
            self._faults[name] = msg.data

    def _on_trigger(self, action: str, resp):
        # answered once the loop applied it (or refused it: e.g. no fresh leader sample yet)
        ticket = self.core.submit(action, "service")
        resp.success, resp.message = ticket.wait(timeout=max(0.5, 5.0 / self.cfg.teleop.rate_hz))
        return resp

    def _on_reset_stats(self, req, resp):
        self._loop.window.reset_run()
        self.run_latency.reset()
        resp.success, resp.message = True, "run statistics reset"
        return resp

    def _tick(self) -> None:
        self.rate.tick(self.clock.now())
        for src in self.inputs:
            for action in src.poll():
                self.core.request(action, src.name)
        with self._lock:
            leaders = dict(self._leaders)
            followers = dict(self._followers)
            faults = dict(self._faults)
        now = self.clock.now()
        result = self.core.step(now, leaders, followers, faults)
        for name, cmd in result.commands.items():
            self.pub_cmd[name].publish(
                convert.command_to_msg(self.follower_names[name], cmd.position, cmd.stamp, self.mapper)
            )
        if result.latency is not None:
            self.latency.add(result.latency * 1e3)
            self.run_latency.add(result.latency)
        for ev in result.events:
            self.events_total += 1
            self.last_event = str(ev)
            self.pub_events.publish(String(data=str(ev)))
            self.get_logger().info(f"teleop {ev}")
        if result.state is not self._published_state:
            self._publish_state(result.state)

    def _publish_state(self, state: TeleopState) -> None:
        self._published_state = state
        self.pub_state.publish(String(data=state.value))

    def _on_error(self, e: BaseException) -> None:
        self.last_event = f"loop error: {type(e).__name__}: {e}"
        self.get_logger().error(self.last_event)

    def _publish_diagnostics(self) -> None:
        now = self.clock.now()
        values = {"state": self.core.state.value, "scheduling": self._loop.realtime}
        values.update(self._loop.window.summary_and_reset(with_run=True))
        p50, p99 = self.latency.percentiles_and_reset(50, 99)
        r50, r99 = (x * 1e3 for x in self.run_latency.percentiles(50, 99))
        values.update(
            latency_ms_p50=p50,
            latency_ms_p99=p99,
            events_total=self.events_total,
            last_event=self.last_event,
            **{"run.latency_ms_p50": r50, "run.latency_ms_p99": r99},
        )
        with self._lock:
            ages = {n: now - s.stamp for n, s in {**self._leaders, **self._followers}.items()}
        missing = [n for n in (*self.core.leaders, *self.core.followers) if n not in ages]
        values.update({f"sample_age_s.{n}": a for n, a in ages.items()})
        stale = [n for n in self.core.leaders if ages.get(n, 1e9) > self.cfg.teleop.leader_max_age_s]
        faults = self.core.faults
        rate_level, rate_message = self.rate.check(now)
        if faults:
            level, msg = convert.ERROR, f"{self.core.state.value}: arm fault: " + "; ".join(faults.values())
        elif rate_level == RATE_ERROR:
            level, msg = convert.ERROR, rate_message
        elif missing:
            level, msg = convert.WARN, f"no joint states from {', '.join(missing)}"
        elif stale:
            level, msg = convert.WARN, f"leader samples stale: {', '.join(stale)}"
        elif rate_level == RATE_WARN:
            level, msg = convert.WARN, rate_message
        else:
            level, msg = convert.OK, self.core.state.value
        status = convert.diagnostic_status("duet/teleop", "teleop", level, msg, values)
        self.pub_diag.publish(convert.diagnostic_array([status], now, self.mapper))

    def close(self) -> None:
        self._loop.stop()
        for src in self.inputs:
            src.close()


def main() -> int:
    return run_node(TeleopNode, "duet_teleop_node")


if __name__ == "__main__":
    raise SystemExit(main())
