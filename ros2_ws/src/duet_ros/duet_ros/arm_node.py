"""Arm node: one per arm (leader or follower). A lifecycle node over duet.hardware arms.

Topics (relative to the node name, e.g. /left_follower/...):
  ~/joint_states   sensor_msgs/JointState, published every control tick; header stamp =
                   the sample's capture time (duet_ros.convert.TimeMapper)
  ~/command        followers: sensor_msgs/JointState subscription (see convert.py); a command
                   older than command_max_age_s by its stamp is never applied: the arm holds;
                   one stamped more than command_future_tolerance_s ahead of this host's clock
                   is rejected at intake (counted: commands_rejected_future; throttled warning)
  ~/fault          std_msgs/String, latched (transient local): the arm's fault in one line
                   naming the arm, the servo and the fix ("" while healthy); teleop pauses on it
  /diagnostics     diagnostic_msgs/DiagnosticArray at diagnostics_rate_hz: bus errors,
                   retries, temperatures, voltage, loop rate, watchdog state; WARN / ERROR when
                   the loop's achieved rate stays below rate_watch's fractions of rate_hz

Lifecycle: configure = connect and start publishing; activate = follower: torque on and
apply commands / leader: torque off (moved by hand); deactivate = hold (commands ignored,
the follower keeps its last goal); cleanup / shutdown / error = the arm's configured safe
state and disconnect. With autostart (default) the node configures and activates itself.
After max_consecutive_errors failed bus ticks in a row, at once on a servo's hardware error
(overload, overheating, ...: latched until the servo reboots), or when an active follower's
servos lost torque (a reboot or brown-out, seen by the health read), the arm is faulted: the
fault goes out on ~/fault, the arm goes to its safe state, the log says which safe state it
reached (or that it could not), and the node reports ERROR until it is cleaned up and
configured again.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState as JointStateMsg
from std_msgs.msg import String

from duet.clock import MonotonicClock
from duet.hardware.rig import load_rig
from duet.ratewatch import ERROR as RATE_ERROR
from duet.ratewatch import WARN as RATE_WARN
from duet.ratewatch import RateWatch
from duet_ros import convert
from duet_ros.configs import ArmNodeConfig
from duet_ros.params import declare_config
from duet_ros.runtime import LATCHED, PacedThread, run_node

STATE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
COMMAND_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
DIAG_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# health()["bus"] counters that mean the bus misbehaved (a rise within a window -> WARN)
BUS_ERROR_COUNTERS = ("retries", "failures", "timeouts", "crc_errors", "hardware_errors")


def _make_arm(rig, name: str, use_mock: bool, clock):
    from duet.hardware.factory import make_arm

    return make_arm(rig, name, use_mock, clock=clock)


class ArmNode(LifecycleNode):
    def __init__(self, **node_kwargs: Any):
        """node_kwargs go to rclpy's Node (context, parameter_overrides: in-process use)."""
        super().__init__("arm", **node_kwargs)
        self.cfg = declare_config(self, ArmNodeConfig)
        cfg = self.cfg
        self.rig = load_rig(cfg.rig)
        self.slot = self.rig.arm(cfg.arm)
        if cfg.fault_scenario:
            self.slot.fault_scenario = cfg.fault_scenario
        if cfg.mock_motion and hasattr(self.slot, "mock_motion"):
            self.slot.mock_motion = cfg.mock_motion
        self.role = self.slot.role
        self.rate_hz = self.rig.resolve_rate(cfg.rate_hz)  # 0 = the rig's
        self.clock = MonotonicClock()
        self.mapper = convert.TimeMapper()
        self.arm = None
        self.names: tuple[str, ...] = ()
        self._loop: PacedThread | None = None
        self._active = False
        self._lock = threading.Lock()  # the latest command
        self._bus = threading.Lock()  # every call into the arm (the bus is not thread-safe)
        self._cmd: tuple[np.ndarray, float, int] | None = None  # position, stamp, sequence
        self._cmd_seq = 0
        self._applied_seq = 0
        self._holding = True
        self._health: dict = {}
        self._health_due = 0.0
        self._fault = ""
        self._safe_result = ""  # what _safe_state reached, for the diagnostics
        self._rate = RateWatch(self.rate_hz, cfg.rate_watch, what=f"{cfg.arm} loop")
        self._last_error = ""
        self._bus_errors_seen = 0
        self.counters = dict(
            reads=0,
            read_errors=0,
            write_errors=0,
            consecutive_errors=0,
            commands_received=0,
            commands_applied=0,
            commands_dropped_stale=0,
            commands_rejected=0,
            watchdog_trips=0,
            commands_rejected_future=0,
        )

        self.pub_state = self.create_publisher(JointStateMsg, "~/joint_states", STATE_QOS)
        # latched: a late subscriber (a restarted teleop node) still gets the arm's present fault
        self.pub_fault = self.create_publisher(String, "~/fault", LATCHED)
        self.pub_diag = self.create_publisher(convert.DiagnosticArray, "/diagnostics", DIAG_QOS)
        if self.role == "follower":
            self.create_subscription(JointStateMsg, "~/command", self._on_command, COMMAND_QOS)
        self.create_timer(1.0 / cfg.diagnostics_rate_hz, self._publish_diagnostics)
        if cfg.autostart:
            self.trigger_configure()
            if self.arm is not None:
                self.trigger_activate()

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self.arm = _make_arm(self.rig, self.cfg.arm, self.cfg.use_mock_hardware, self.clock)
            self.arm.connect()
        except Exception as e:
            self._fault = f"{self.cfg.arm}: connect failed: {e}"
            self.get_logger().error(self._fault)
            self.pub_fault.publish(String(data=self._fault))
            self.arm = None
            return TransitionCallbackReturn.FAILURE
        self.names = tuple(self.arm.features.joint_names)
        self._fault = ""
        self._safe_result = ""
        self.pub_fault.publish(String(data=""))
        self._rate.reset()
        self.counters["consecutive_errors"] = 0
        phase = self.cfg.phase_s if self.cfg.phase_s >= 0 else (0.006 if self.role == "follower" else 0.0)
        self._loop = PacedThread(
            f"{self.cfg.arm}-loop",
            self.rate_hz,
            self._tick,
            self._on_loop_error,
            self.clock,
            phase_s=phase,
            realtime_priority=self.cfg.realtime_priority,
        )
        self._loop.start()
        self.get_logger().info(
            f"{self.cfg.arm} ({self.role}, {'mock' if self.cfg.use_mock_hardware else 'real'}) connected, "
            f"{self.rate_hz:g} Hz"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        if self.arm is None:
            return TransitionCallbackReturn.FAILURE
        with self._bus:
            # leaders are moved by hand: torque off. Followers: torque on, holding where they are
            self.arm.set_torque(self.role == "follower")
        with self._lock:
            self._applied_seq = self._cmd_seq  # never apply a command that arrived before activation
            self._active = True
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._active = False  # hold: the follower keeps its last goal, commands are ignored
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._safe_state("cleanup")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._safe_state("shutdown")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        self._safe_state("error")
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Process exit: the arm goes to its configured safe state."""
        self._safe_state("exit")

    def _safe_state(self, why: str) -> None:
        self._active = False
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        with self._bus:
            arm, self.arm = self.arm, None
        if arm is not None:
            # the arm's configured safe state (Dynamixel: on_disconnect; leaders: torque off)
            mode = {"torque_off": "torque off", "hold": "holding its pose"}.get(
                getattr(arm, "on_disconnect", ""), ""
            )
            if mode and self.role == "leader":
                mode = "torque off"
            try:
                arm.disconnect()  # goes to the arm's configured safe state, releases the port
            except Exception as e:  # the arm says what it could not do (one line)
                self._safe_result = f"safe state NOT reached: {e}"
                self.get_logger().error(f"{self.cfg.arm}: safe state ({why}) NOT reached: {e}")
                return
            self._safe_result = f"arm in its safe state ({mode})" if mode else "arm in its safe state"
            self.get_logger().info(f"{self.cfg.arm}: safe state ({why})" + (f": {mode}" if mode else ""))

    # ------------------------------------------------------------------ commands

    def _on_command(self, msg: JointStateMsg) -> None:
        try:
            pos, stamp = convert.msg_to_command(msg, self.mapper, self.names)
        except ValueError as e:
            self.counters["commands_rejected"] += 1
            self._last_error = f"command rejected: {e}"
            return
        # a stamp ahead of this host's clock would outlive the staleness watchdog (which only
        # checks age): beyond the clock-skew tolerance the command is refused, never stored
        ahead = stamp - self.clock.now()
        if ahead > self.cfg.command_future_tolerance_s:
            self.counters["commands_rejected_future"] += 1
            self._last_error = (
                f"command rejected: stamped {ahead:.3f} s in the future (tolerance "
                f"{self.cfg.command_future_tolerance_s:g} s); check the sender's clock"
            )
            self.get_logger().warning(f"{self.cfg.arm}: {self._last_error}", throttle_duration_sec=5.0)
            return
        with self._lock:
            self._cmd_seq += 1
            self._cmd = (pos, stamp, self._cmd_seq)
            self.counters["commands_received"] += 1

    # ------------------------------------------------------------------ loop

    def _tick(self) -> None:
        self._rate.tick(self.clock.now())
        with self._bus:
            self._tick_locked()

    def _tick_locked(self) -> None:
        arm = self.arm
        if arm is None or self._fault:
            return
        if self.clock.now() >= self._health_due:  # health may touch the bus: only from this thread
            self._health_due = self.clock.now() + 1.0 / self.cfg.diagnostics_rate_hz
            self._refresh_health(arm)
            self._check_torque()
            if self._fault:
                return
        try:
            state = arm.read()
        except Exception as e:
            self._bus_error("read", e)
            return
        self.counters["reads"] += 1
        self.counters["consecutive_errors"] = 0
        self.pub_state.publish(convert.joint_state_to_msg(state, self.mapper, self.cfg.arm))
        if self.role == "follower":
            self._apply_command(arm, self.clock.now())

    def _refresh_health(self, arm) -> None:
        try:
            self._health = dict(arm.health())
        except Exception as e:
            self._health = {"health_error": str(e)}

    def _check_torque(self) -> None:
        """An active follower whose servos lost torque (a reboot or brown-out is silent on the
        wire; the health read shows it) is faulted: teleop must not ramp a limp arm."""
        servos = self._health.get("servos")
        if self.role != "follower" or not self._active or self._fault or not isinstance(servos, dict):
            return
        off = sorted(int(k) for k, v in servos.items() if isinstance(v, dict) and v.get("torque") is False)
        if off:
            self._fault = (
                f"arm {self.cfg.arm!r}: torque off on servo ID{'s' if len(off) > 1 else ''} "
                f"{', '.join(map(str, off))} while active (a servo reboot or brown-out): restart the "
                f"arm node to re-enable it"
            )
            self.pub_fault.publish(String(data=self._fault))
            self.get_logger().error(f"{self._fault}; going to the safe state")
            threading.Thread(target=self._safe_state, args=("torque lost",), daemon=True).start()

    def _apply_command(self, arm, now: float) -> None:
        with self._lock:
            cmd = self._cmd
        stale = cmd is None or now - cmd[1] > self.cfg.command_max_age_s
        if stale and not self._holding and cmd is not None:
            self.counters["watchdog_trips"] += 1
            self.get_logger().warning(
                f"{self.cfg.arm}: command stream stale ({now - cmd[1]:.3f} s > {self.cfg.command_max_age_s} s): holding"
            )
        self._holding = stale
        if cmd is None or cmd[2] == self._applied_seq or not self._active:
            return
        self._applied_seq = cmd[2]
        if stale:
            self.counters["commands_dropped_stale"] += 1  # never sent late
            return
        try:
            arm.write(cmd[0])
            self.counters["commands_applied"] += 1
        except Exception as e:
            if type(e).__name__ == "UnsafeCommandError":
                self.counters["commands_rejected"] += 1
                self._last_error = f"command rejected: {e}"
            else:
                self.counters["write_errors"] += 1
                self._bus_error("write", e)

    def _bus_error(self, what: str, e: BaseException) -> None:
        if what == "read":
            self.counters["read_errors"] += 1
        self.counters["consecutive_errors"] += 1
        self._last_error = f"{what}: {e}"
        if self._fault:
            return
        latched = getattr(self.arm, "fault", "")  # a servo's hardware error: it will not clear by itself
        n = self.counters["consecutive_errors"]
        if latched or n >= self.cfg.max_consecutive_errors:
            if self.arm is not None:
                self._refresh_health(self.arm)  # the counters as they were when the arm gave up
            self._fault = latched or f"{self.cfg.arm}: {n} failed bus ticks in a row (last: {what}: {e})"
            self.pub_fault.publish(String(data=self._fault))
            self.get_logger().error(f"{self._fault}; going to the safe state")
            threading.Thread(target=self._safe_state, args=("bus fault",), daemon=True).start()

    def _on_loop_error(self, e: BaseException) -> None:
        self._last_error = f"loop: {type(e).__name__}: {e}"
        self.get_logger().error(f"{self.cfg.arm}: {self._last_error}")

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        now = self.clock.now()
        values: dict = {"role": self.role, "mock": self.cfg.use_mock_hardware, "active": self._active}
        loop = self._loop
        if loop is not None:
            values.update(loop.window.summary_and_reset())
            values["scheduling"] = loop.realtime
        values.update(self.counters)
        cmd = self._cmd
        if self.role == "follower":
            values["holding"] = self._holding
            values["last_command_age_s"] = (now - cmd[1]) if cmd is not None else float("inf")
            values["command_max_age_s"] = self.cfg.command_max_age_s
            values["command_future_tolerance_s"] = self.cfg.command_future_tolerance_s
        values["last_error"] = self._last_error
        values.update({f"health.{k}": v for k, v in _flat(self._health).items()})
        level, message = self._level(now, cmd)
        status = convert.diagnostic_status(
            f"duet/arm/{self.cfg.arm}", self.slot.port or self.cfg.arm, level, message, values
        )
        self.pub_diag.publish(convert.diagnostic_array([status], now, self.mapper))

    def _level(self, now: float, cmd) -> tuple[bytes, str]:
        level, message = self._state_level(now, cmd)
        rate_level, rate_message = self._rate.check(now)  # the loop's achieved rate, added to the rest
        if self._fault or self.arm is None or rate_level not in (RATE_WARN, RATE_ERROR):
            return level, message
        rate = convert.ERROR if rate_level == RATE_ERROR else convert.WARN
        if level == convert.OK:
            return rate, rate_message
        return max(level, rate), f"{message}; {rate_message}"

    def _state_level(self, now: float, cmd) -> tuple[bytes, str]:
        if self._fault:
            return convert.ERROR, (
                f"fault: {self._fault}; {self._safe_result or 'going to the safe state'} (restart the node)"
            )
        if self.arm is None:
            return convert.ERROR, "not connected"
        if self.counters["consecutive_errors"]:
            return convert.ERROR, f"bus errors: {self._last_error}"
        bus = self._health.get("bus", {}) if isinstance(self._health.get("bus"), dict) else {}
        bus_total = sum(
            v
            for k, v in bus.items()
            if k in BUS_ERROR_COUNTERS and isinstance(v, (int, float)) and not isinstance(v, bool)
        )
        bus_trouble = bus_total > self._bus_errors_seen
        self._bus_errors_seen = bus_total
        if self.role == "follower" and not self._active:
            return convert.OK, "inactive (lifecycle): holding, commands ignored"
        if self.role == "follower" and cmd is not None and self._holding:
            return convert.WARN, (
                f"holding: last command {now - cmd[1]:.2f} s old (max {self.cfg.command_max_age_s:g} s)"
            )
        if bus_trouble:
            return (
                convert.WARN,
                f"bus errors in the last window, recovered by retries ({bus.get('last_error', '')})",
            )
        if self.role == "follower" and cmd is None:
            return convert.OK, "holding: no command received yet"
        return convert.OK, "ok"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def main() -> int:
    return run_node(ArmNode, "duet_arm_node")


if __name__ == "__main__":
    raise SystemExit(main())
