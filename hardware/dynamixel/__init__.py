"""Dynamixel Protocol 2.0 bus on dynamixel_sdk: control table, errors, MotorBus.

The wire-level fake bus that this driver runs against in mock mode lives in
hardware/mock/fake_dynamixel.py (product code, chosen by configuration)."""

from .bus import BusSample, Motor, MotorBus, RetryPolicy
from .control_table import MODELS, ModelInfo, OperatingMode, Reg, Register
from .errors import (
    BusCommError,
    DynamixelError,
    InstructionCrcError,
    ModelMismatchError,
    PortError,
    ServoHardwareError,
    ServoNotFoundError,
    decode_hardware_error,
)

__all__ = [
    "MODELS",
    "BusCommError",
    "BusSample",
    "DynamixelError",
    "InstructionCrcError",
    "ModelInfo",
    "ModelMismatchError",
    "Motor",
    "MotorBus",
    "OperatingMode",
    "PortError",
    "Reg",
    "Register",
    "RetryPolicy",
    "ServoHardwareError",
    "ServoNotFoundError",
    "decode_hardware_error",
]
