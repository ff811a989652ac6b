"""The hardware factory: rig config + use_mock_hardware -> connected-ready devices.

One switch swaps every device of a rig at once; nothing downstream changes:

- real:  DynamixelArm on dynamixel_sdk.PortHandler(slot.port); cameras by their drivers
         (make_camera: the one camera factory).
- mock:  the SAME DynamixelArm and MotorBus code on the wire-level FakeDynamixelBus
         (hardware/mock/fake_dynamixel.py) with the arm model's servos, the slot's
         fault_scenario, and for leaders a scripted operator motion (slot.mock_motion);
         mock arms use calibration_dir/mock/<port id>.json if present, else the nominal
         calibration (so the demo needs no calibration step).
- sim:   rig.mock_backend == "sim": the MuJoCo backend (duet.hardware.sim).

Nothing connects here: call RigDevices.connect() (or use it as a context manager).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from duet.clock import Clock, MonotonicClock
from duet.errors import ConfigError, DuetError
from duet.hardware.arm_model import ArmModel, load_arm_model
from duet.hardware.calibration import Calibration, calibration_path
from duet.hardware.interfaces import Arm, Camera
from duet.hardware.rig import ArmSlot, RigConfig

log = logging.getLogger(__name__)


def _motors(model: ArmModel):
    from duet.hardware.dynamixel.bus import Motor

    return [Motor(sid, model_name, name) for sid, model_name, name in model.servos]


def calibrate_command(rig: RigConfig, name: str, mock: bool = False) -> str:
    """The command line that calibrates arm `name` of this rig."""
    return f"duet calibrate --rig {rig.name} --arm {name}" + (" --mock" if mock else "")


def make_fake_bus(model: ArmModel, slot: ArmSlot, clock: Clock, *, motion: bool = True):
    """The wire-level fake bus of a mock arm: the model's servos as Interbotix ships them
    (Drive Mode reverse bits already in EEPROM, shafts at the model's home pose), the slot's
    fault scenario, and for a leader its scripted operator motion."""
    from duet.hardware.calibration import JointMap
    from duet.hardware.dynamixel.control_table import Reg
    from duet.hardware.mock.fake_dynamixel import FakeDynamixelBus
    from duet.hardware.mock.faults import parse_scenario
    from duet.hardware.mock.motions import home_pose, make_motion

    faults = parse_scenario(slot.fault_scenario) if slot.fault_scenario else None
    fake = FakeDynamixelBus(dict(model.servo_models), clock=clock, faults=faults, baudrate=slot.baudrate)
    jm = JointMap(model, Calibration.nominal_for(model))
    home = jm.to_ticks(home_pose(model))
    for j in model.joints:
        for sid, rev in zip(j.ids, j.reverse):
            servo = fake.servo(sid)
            if rev:
                servo.set(Reg.DRIVE_MODE, 1)
            servo.set_present_position(int(home[j.index]))
    if slot.role == "leader" and motion:
        fn = make_motion(slot.mock_motion, model, t0=clock.now())
        cache: dict[str, Any] = {"t": None, "ticks": None}

        def ticks_at(t: float):
            if cache["t"] != t:  # one evaluation per instant for all servos
                cache["t"], cache["ticks"] = t, jm.to_ticks(fn(t))
            return cache["ticks"]

        def joint_ticks(k: int) -> Callable[[float], int]:
            return lambda t: int(ticks_at(t)[k])

        for j in model.joints:
            for sid in j.ids:
                fake.set_external_motion(sid, joint_ticks(j.index))
    return fake


def make_arm(rig: RigConfig, name: str, use_mock: bool, clock: Clock | None = None) -> Arm:
    """The Arm for rig arm `name` (not connected)."""
    slot = rig.arm(name)
    if use_mock and rig.mock_backend == "sim":
        from duet.hardware.sim import make_sim_arm

        return make_sim_arm(rig, name, clock or MonotonicClock())
    clock = clock or MonotonicClock()
    model = load_arm_model(slot.model)
    from duet.hardware.dynamixel.arm import DynamixelArm
    from duet.hardware.dynamixel.bus import MotorBus

    if use_mock:
        fake = make_fake_bus(model, slot, clock)
        port_handler = fake.port_handler(slot.port or f"fake:{name}")
        path = calibration_path(rig, slot, mock=True)
        calibration = None if path.is_file() else Calibration.nominal_for(model)
        bus = MotorBus(
            slot.port or f"fake:{name}",
            slot.baudrate,
            _motors(model),
            label=name,
            port_handler=port_handler,
            clock=clock,
        )
        arm = DynamixelArm(
            name,
            slot.role,
            model,
            bus,
            rate_hz=rig.control_rate_hz,
            calibration=calibration,
            calibration_path=path,
            calibrate_hint=calibrate_command(rig, name, mock=True),
            on_disconnect=slot.on_disconnect,
            clock=clock,
        )
        arm.fake_bus = fake  # the simulated servos, for demos and tests to inspect
        return arm
    if not slot.port:
        raise DuetError(
            f"rig {rig.name!r} arm {name!r}: no port set; put its /dev/serial/by-id/... path in the rig"
        )
    if slot.fault_scenario:
        log.warning("arm %s: fault_scenario %r ignored (real hardware)", name, slot.fault_scenario)
    bus = MotorBus(slot.port, slot.baudrate, _motors(model), label=name, clock=clock)
    return DynamixelArm(
        name,
        slot.role,
        model,
        bus,
        rate_hz=rig.control_rate_hz,
        calibration_path=calibration_path(rig, slot),
        calibrate_hint=calibrate_command(rig, name),
        on_disconnect=slot.on_disconnect,
        clock=clock,
    )


def make_camera(rig: RigConfig, name: str, use_mock: bool, clock: Clock | None = None) -> Camera:
    """The Camera for rig camera `name` (not connected): the real driver (RealSense or UVC),
    or with use_mock the SAME driver over the mock device of hardware/mock/cameras.py (a
    pyrealsense2 software_device for kind=realsense, a cv2.VideoCapture look-alike for
    kind=opencv, both fed by a synthetic device that honours the slot's fault_scenario), or
    the sim camera (rig.mock_backend == "sim")."""
    slot = rig.camera(name)
    clock = clock or MonotonicClock()
    if use_mock and rig.mock_backend == "sim":
        from duet.hardware.sim import make_sim_camera

        return make_sim_camera(rig, name, clock)
    if slot.jpeg and slot.kind != "opencv":
        raise ConfigError(
            f"camera {slot.name!r}: jpeg passthrough is for kind opencv (UVC MJPG); set jpeg: false"
        )
    if slot.fault_scenario and not use_mock:
        log.warning("camera %s: fault_scenario %r ignored (real hardware)", slot.name, slot.fault_scenario)
    if slot.kind == "realsense":
        from duet.hardware.cameras.realsense import RealSenseCamera

        if not use_mock:
            return RealSenseCamera(slot, clock)
        try:
            import pyrealsense2  # noqa: F401
        except ImportError:
            from duet.hardware.mock.cameras import SyntheticCamera

            log.warning(
                "camera %s: pyrealsense2 missing; mock RealSense uses the plain synthetic source", slot.name
            )
            return SyntheticCamera(slot, clock)
        from duet.hardware.mock.cameras import SoftwareDeviceBackend

        return RealSenseCamera(slot, clock, backend=SoftwareDeviceBackend(slot, clock))
    if slot.kind == "opencv":
        from duet.hardware.cameras.opencv import OpenCVCamera

        if not use_mock:
            return OpenCVCamera(slot, clock)
        from duet.hardware.mock.cameras import SyntheticUVCBackend

        mock_slot = slot if slot.device else dataclasses.replace(slot, device=f"mock:{slot.name}")
        return OpenCVCamera(mock_slot, clock, backend=SyntheticUVCBackend(mock_slot, clock))
    raise ConfigError(f"camera {slot.name!r}: unknown kind {slot.kind!r}; use realsense or opencv")


class RigDevices:
    """The opened devices of one station (its configuration is hardware.rig.RigConfig;
    make_rig builds this). connect() connects everything (arms first, then
    cameras) and on any failure disconnects what was connected; disconnect() takes every
    device to its safe state and keeps going past errors (reporting the first)."""

    def __init__(self, config: RigConfig, arms: dict[str, Arm], cameras: dict[str, Camera]):
        self.config = config
        self.arms = arms
        self.cameras = cameras

    @property
    def is_connected(self) -> bool:
        return all(d.is_connected for d in self._devices())

    def _devices(self) -> list[Arm | Camera]:
        return [*self.arms.values(), *self.cameras.values()]

    def connect(self) -> None:
        done: list[Arm | Camera] = []
        try:
            for dev in self._devices():
                dev.connect()
                done.append(dev)
        except BaseException:
            for dev in reversed(done):
                try:
                    dev.disconnect()
                except Exception:  # noqa: BLE001 - keep the original error
                    log.warning("disconnect after a failed rig connect raised", exc_info=True)
            raise

    def disconnect(self) -> None:
        first: BaseException | None = None
        devices: list[Arm | Camera] = [*self.cameras.values(), *self.arms.values()]
        for dev in devices:
            try:
                dev.disconnect()
            except Exception as e:  # noqa: BLE001 - every device must get its chance
                log.warning("disconnecting %s failed: %s", getattr(dev, "name", dev), e)
                first = first or e
        if first is not None:
            raise first

    def __enter__(self) -> RigDevices:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.disconnect()

    def health(self) -> dict[str, Any]:
        return {
            "arms": {n: a.health() for n, a in self.arms.items()},
            "cameras": {n: c.health() for n, c in self.cameras.items()},
        }


def make_rig(
    rig: RigConfig,
    use_mock: bool,
    clock: Clock | None = None,
    arms: list[str] | None = None,
    cameras: list[str] | None = None,
) -> RigDevices:
    """Every arm and camera of the rig (or the named subsets), not connected. One clock
    is shared by all devices (default MonotonicClock)."""
    clock = clock or MonotonicClock()
    arm_names = [a.name for a in rig.arms] if arms is None else list(arms)
    cam_names = [c.name for c in rig.cameras] if cameras is None else list(cameras)
    return RigDevices(
        rig,
        {n: make_arm(rig, n, use_mock, clock) for n in arm_names},
        {n: make_camera(rig, n, use_mock, clock) for n in cam_names},
    )
