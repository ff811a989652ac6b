"""`duet calibrate` and `duet hw`: calibrate an arm, scan a Dynamixel bus, show a rig's arms.

    duet calibrate --rig aloha --arm left_leader [--mock]
    duet hw scan --port /dev/serial/by-id/usb-FTDI_... [--baud 1000000|all] [--ids 1-20]
    duet hw scan --mock [--mock-model vx300s]
    duet hw info --rig aloha [--arm left_follower] [--mock] [--json]

Every user error (unknown servo model, wrong baud, missing or busy port, a servo that does
not answer, a config with the wrong number of joints, an uncalibrated arm) ends in one line
naming the arm, joint, port or file and the fix (exit status 2), never a traceback. The
prompts of the calibration procedure live here, never in library code.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np

from duet.errors import ConfigError, DuetError

# ---------------------------------------------------------------------------- registration


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="calibrate one arm: its zero pose and gripper range",
        description="Record an arm's zero pose and gripper range into the rig's calibration_dir "
        "(<port id>.json). Torque is off during the procedure: move the arm by hand.",
    )
    p.add_argument("--rig", required=True, help="shipped rig name (aloha) or a rig .yaml path")
    p.add_argument("--arm", required=True, help="arm name in the rig, e.g. left_leader")
    p.add_argument(
        "--mock",
        action="store_true",
        help="rehearse on the mock arm (a simulated operator moves it); writes calibration_dir/mock/",
    )
    p.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="rig config override, e.g. calibration_dir=/tmp/cal or arms.left_leader.port=/dev/ttyUSB0",
    )
    p.set_defaults(func=cmd_calibrate)

    hw = subparsers.add_parser("hw", help="Dynamixel tools: scan a bus, show a rig's arms")
    hsub = hw.add_subparsers(dest="hw_command", metavar="HW_COMMAND")
    hsub.required = True

    s = hsub.add_parser("scan", help="find the servos on a port (broadcast ping of IDs 0..252)")
    s.add_argument("--port", default="", help="serial port, e.g. /dev/serial/by-id/usb-FTDI_...")
    s.add_argument(
        "--baud", default="1000000", help="baud rate, or 'all' to try every supported rate (default 1000000)"
    )
    s.add_argument("--ids", default="", help="ping these IDs one by one instead (e.g. 1-9 or 1,2,7)")
    s.add_argument("--mock", action="store_true", help="scan a simulated arm instead of a port")
    s.add_argument("--mock-model", default="vx300s", help="arm model the simulated bus holds (with --mock)")
    s.set_defaults(func=cmd_scan)

    i = hsub.add_parser("info", help="connect a rig's arms and print joints, positions and health")
    i.add_argument("--rig", required=True, help="shipped rig name (aloha) or a rig .yaml path")
    i.add_argument("--arm", action="append", default=None, help="only this arm (repeatable)")
    i.add_argument("--mock", action="store_true", help="use the mock hardware (use_mock_hardware)")
    i.add_argument("--json", action="store_true", help="print JSON instead of tables")
    i.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="rig config override; arms by index or name, e.g. arms.0.port=/dev/ttyUSB0 or "
        "arms.right_follower.fault_scenario=overload_gripper_at_2s",
    )
    i.set_defaults(func=cmd_info)

    c = hsub.add_parser("cameras", help="list the RealSense serials and UVC devices plugged in now")
    c.set_defaults(func=cmd_cameras)


# ---------------------------------------------------------------------------- calibrate


def _prompt(text: str) -> None:
    print(text, end="", flush=True)
    line = sys.stdin.readline()
    if not sys.stdin.isatty():
        print()  # the Enter of a piped answer is not echoed
    if not line:
        raise DuetError("calibration aborted: no input (run it in a terminal and press Enter at each step)")


def cmd_calibrate(args) -> int:
    from duet.hardware.calibration import Calibration, calibration_path, port_id
    from duet.hardware.dynamixel.arm import DynamixelArm
    from duet.hardware.factory import make_arm
    from duet.hardware.rig import load_rig

    rig = load_rig(args.rig, args.override)
    slot = rig.arm(args.arm)
    if args.mock and rig.mock_backend == "sim":
        raise ConfigError(
            f"rig {rig.name!r} uses the sim backend for mock hardware: sim arms need no calibration"
        )
    arm = make_arm(rig, args.arm, use_mock=args.mock)
    if not isinstance(arm, DynamixelArm):
        raise ConfigError(f"arm {args.arm!r}: only Dynamixel arms are calibrated")
    model = arm.model
    path = calibration_path(rig, slot, mock=args.mock)
    operator = _MockOperator(arm) if args.mock else None
    where = "the mock arm" if args.mock else slot.port
    arm.connect(for_calibration=True)
    try:
        print(
            f"Calibrating {args.arm} ({model.name}, {model.n} joints) on {where}. Torque is off: "
            "move the arm by hand."
        )
        if operator:
            operator.zero_pose()
        _prompt(
            "1/3 Move the arm to its zero pose (every joint at 0: upper arm straight up, forearm "
            "level and pointing forward, wrist straight) and press Enter "
        )
        zero = arm.read_ticks()
        if operator:
            operator.gripper(open_=True)
        _prompt("2/3 Open the gripper fully and press Enter ")
        open_ticks = int(arm.read_ticks()[-1])
        if operator:
            operator.gripper(open_=False)
        _prompt("3/3 Close the gripper fully and press Enter ")
        closed_ticks = int(arm.read_ticks()[-1])
    finally:
        arm.disconnect()
    signs = None
    if path.is_file():  # keep hand-edited joint signs of a previous calibration
        try:
            signs = {n: c.sign for n, c in Calibration.load(path, model).joints.items()}
        except DuetError:
            signs = None
    cal = Calibration.from_measurements(
        model, zero, open_ticks, closed_ticks, port_id=port_id(slot.port, fallback=slot.name), signs=signs
    )
    cal.save(path)
    print(f"saved {path}")
    for j in model.joints:
        c = cal.joints[j.name]
        if j.is_gripper:
            print(f"  {j.name:14s} open {cal.gripper_open:+.3f} rad, closed {cal.gripper_closed:+.3f} rad")
            continue
        off = math.degrees((c.zero_ticks - model.resolution(j) // 2) * 2 * math.pi / model.resolution(j))
        note = "  <- far from the servo center: was the arm at its zero pose?" if abs(off) > 30 else ""
        print(
            f"  {j.name:14s} zero {c.zero_ticks:5d} ticks ({off:+6.1f} deg from center), sign {c.sign:+d}{note}"
        )
    return 0


class _MockOperator:
    """The operator's stand-in for `duet calibrate --mock`: moves the simulated arm as the
    prompts ask (nominal zero pose, gripper at its nominal open / closed angles)."""

    def __init__(self, arm):
        from duet.hardware.calibration import Calibration, JointMap

        self.arm = arm
        self.fake = arm.fake_bus
        self.map = JointMap(arm.model, Calibration.nominal_for(arm.model))
        for sid in arm.model.servo_models:
            self.fake.set_external_motion(sid, None)

    def _place(self, ticks: np.ndarray) -> None:
        for j in self.arm.model.joints:
            for sid in j.ids:
                self.fake.servo(sid).set_present_position(int(ticks[j.index]))

    def zero_pose(self) -> None:
        pos = np.zeros(self.arm.model.n)
        pos[-1] = 0.5
        self._place(self.map.to_ticks(pos))

    def gripper(self, open_: bool) -> None:
        g = self.arm.model.gripper
        ticks = self.map.to_ticks(
            np.where(np.arange(self.arm.model.n) == g.index, 1.0 if open_ else 0.0, 0.0)
        )
        self.fake.servo(g.primary).set_present_position(int(ticks[-1]))


# ---------------------------------------------------------------------------- scan


def _parse_ids(text: str) -> list[int]:
    ids: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                ids.update(range(a, b + 1))
            else:
                ids.add(int(part))
    except ValueError:
        raise ConfigError(f"--ids {text!r}: expected IDs like 1-9 or 1,2,7") from None
    bad = [i for i in ids if not 0 <= i <= 252]
    if bad or not ids:
        raise ConfigError(f"--ids {text!r}: IDs must lie within 0..252")
    return sorted(ids)


def _open_port(ph, port: str, baud: int) -> None:
    from duet.hardware.dynamixel.control_table import SUPPORTED_BAUDRATES
    from duet.hardware.dynamixel.errors import PortError

    rates = ", ".join(str(b) for b in SUPPORTED_BAUDRATES)
    if baud not in SUPPORTED_BAUDRATES:
        raise PortError(f"port {port}: baud rate {baud} is not supported; use one of {rates} or --baud all")
    ph.baudrate = baud
    try:
        ok = ph.openPort()
    except Exception as e:  # serial.SerialException / OSError / termios.error
        text = " ".join(str(e).split())
        if "No such file" in text or getattr(e, "errno", None) == 2:
            raise PortError(
                f"port {port}: not found: check the USB cable and the path (ls /dev/serial/by-id/)"
            ) from None
        if "busy" in text.lower() or getattr(e, "errno", None) == 16:
            raise PortError(
                f"port {port}: busy (another duet process or Dynamixel Wizard has it open): "
                "close it and retry"
            ) from None
        if "Permission denied" in text or getattr(e, "errno", None) == 13:
            raise PortError(
                f"port {port}: permission denied: add your user to the dialout group "
                "(sudo usermod -aG dialout $USER) and log in again"
            ) from None
        raise PortError(f"port {port}: could not open ({text}): check it is a USB-serial adapter") from None
    if not ok:
        raise PortError(f"port {port}: could not open at {baud} baud: use one of {rates}")


def _scan_once(ph, ids: list[int] | None) -> dict[int, tuple[int, int]]:
    """{id: (model number, firmware)} of the servos answering at the port's baud rate."""
    from dynamixel_sdk import COMM_SUCCESS, PacketHandler

    pkt = PacketHandler(2.0)
    found: dict[int, tuple[int, int]] = {}
    if ids is None:
        data, _ = pkt.broadcastPing(ph)
        for sid, (number, fw) in sorted(data.items()):
            found[int(sid)] = (int(number), int(fw))
        return found
    for sid in ids:
        number, code, _ = pkt.ping(ph, sid)
        if code == COMM_SUCCESS:
            fw, code2, _ = pkt.read1ByteTxRx(ph, sid, 6)
            found[sid] = (int(number), int(fw) if code2 == COMM_SUCCESS else -1)
    return found


def cmd_scan(args) -> int:
    from dynamixel_sdk import PortHandler

    from duet.hardware.dynamixel.control_table import SUPPORTED_BAUDRATES, model_name_of

    if args.baud == "all":
        rates = list(SUPPORTED_BAUDRATES)
    else:
        try:
            rates = [int(args.baud)]
        except ValueError:
            raise ConfigError(f"--baud {args.baud!r}: expected a number (e.g. 1000000) or 'all'") from None
    ids = _parse_ids(args.ids) if args.ids else None
    fake = None
    if args.mock:
        from duet.hardware.arm_model import load_arm_model
        from duet.hardware.mock.fake_dynamixel import FakeDynamixelBus

        model = load_arm_model(args.mock_model)
        fake = FakeDynamixelBus(dict(model.servo_models))
        port = args.port or f"mock:{model.name}"
    else:
        if not args.port:
            raise ConfigError("hw scan: give --port /dev/serial/by-id/... (or --mock)")
        port = args.port
    total = 0
    for baud in rates:
        ph = fake.port_handler(port) if fake is not None else PortHandler(port)
        _open_port(ph, port, baud)
        try:
            found = _scan_once(ph, ids)
        finally:
            ph.closePort()
        if not found:
            if len(rates) > 1:
                print(f"{port} @ {baud}: no servo")
            continue
        total += len(found)
        print(f"{port} @ {baud} baud: {len(found)} servo(s)")
        print(f"  {'ID':>3}  {'model':24s} firmware")
        for sid, (number, fw) in found.items():
            print(f"  {sid:>3}  {model_name_of(number):24s} {fw if fw >= 0 else '?'}")
    if total == 0:
        tried = "any supported baud rate" if len(rates) > 1 else f"{rates[0]} baud"
        raise DuetError(
            f"port {port}: no servo answered at {tried}: check the arm's power and cable"
            + (
                ""
                if len(rates) > 1
                else ", or try --baud all (new servos ship at 57600, Interbotix arms use 1000000)"
            )
        )
    return 0


# ---------------------------------------------------------------------------- info


def _fmt_health(h: dict[str, Any]) -> str:
    servos = h.get("servos") or {}
    if "error" in servos:
        return f"health read failed: {servos['error']}"
    temps = [s["temperature_c"] for s in servos.values() if isinstance(s, dict)]
    volts = [s["input_voltage_v"] for s in servos.values() if isinstance(s, dict)]
    errs = {
        k: s["hardware_errors"] for k, s in servos.items() if isinstance(s, dict) and s.get("hardware_errors")
    }
    bus = h.get("bus", {})
    parts = []
    if temps:
        parts.append(f"temperature max {max(temps)} C")
    if volts:
        parts.append(f"voltage {min(volts):.1f}-{max(volts):.1f} V")
    parts.append(
        "hardware errors: " + (", ".join(f"ID {k}: {'+'.join(v)}" for k, v in errs.items()) or "none")
    )
    parts.append(
        f"bus: {bus.get('transactions', 0)} transactions, {bus.get('retries', 0)} retries, "
        f"{bus.get('failures', 0)} failures"
    )
    return "; ".join(parts)


def cmd_cameras(args) -> int:
    from duet.hardware.cameras import discover_cameras

    found = discover_cameras()
    for d in found["realsense"]:
        print(f"realsense  serial {d['serial']}  {d['name']}  fw {d['firmware']}  usb {d['usb']}")
    for d in found["uvc"]:
        print(f"uvc        device {d['device']}  ({d['node']})")
    if not (found["realsense"] or found["uvc"]):
        print("no cameras found (check USB cables and `lsusb`; RealSense needs libusb-1.0-0)")
    return 0


def cmd_info(args) -> int:
    from duet.hardware.factory import make_arm
    from duet.hardware.rig import load_rig

    rig = load_rig(args.rig, args.override)
    names = args.arm or [a.name for a in rig.arms]
    report: dict[str, Any] = {}
    for name in names:
        slot = rig.arm(name)
        arm = make_arm(rig, name, use_mock=args.mock)
        arm.connect()
        try:
            state = arm.read()
            health = arm.health()
        finally:
            arm.disconnect()
        report[name] = {
            "role": slot.role,
            "model": slot.model,
            "port": slot.port,
            "joints": {
                n: {"position": float(p), "velocity": float(v), "effort_ma": float(e)}
                for n, p, v, e in zip(state.names, state.position, state.velocity, state.effort)
            },
            "gripper_raw": state.gripper_raw,
            "health": health,
        }
        if args.json:
            continue
        where = f"mock hardware ({rig.mock_backend})" if args.mock else slot.port
        print(f"{name} ({slot.role}, {slot.model}) on {where}")
        print(f"  {'joint':14s} {'position':>10s} {'deg':>8s} {'vel rad/s':>10s} {'current mA':>11s}")
        for j, (n, p, v, e) in enumerate(zip(state.names, state.position, state.velocity, state.effort)):
            deg = "" if j == len(state.names) - 1 else f"{math.degrees(p):8.1f}"
            unit = " (0..1)" if j == len(state.names) - 1 else ""
            print(f"  {n:14s} {p:10.4f} {deg:>8s} {v:10.3f} {e:11.1f}{unit}")
        print(f"  gripper raw {state.gripper_raw:+.4f} rad; {_fmt_health(health)}")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0
