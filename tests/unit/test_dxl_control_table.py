"""Control table, models, conversions and hardware-error decoding."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from duet.hardware.dynamixel.control_table import (
    MODELS,
    MODELS_BY_NUMBER,
    TABLE_SIZE,
    OperatingMode,
    Reg,
    current_to_ma,
    rad_s_to_velocity,
    radians_to_ticks,
    ticks_to_radians,
    velocity_to_rad_s,
)
from duet.hardware.dynamixel.errors import (
    HARDWARE_ERROR_BITS,
    ServoHardwareError,
    decode_hardware_error,
    encode_hardware_error,
)


def test_key_addresses():
    assert tuple(Reg.PRESENT_CURRENT) == (126, 2)
    assert tuple(Reg.PRESENT_VELOCITY) == (128, 4)
    assert tuple(Reg.PRESENT_POSITION) == (132, 4)
    addr, size = Reg.GOAL_POSITION
    assert (addr, size) == (116, 4)
    assert (Reg.TORQUE_ENABLE.address, Reg.HARDWARE_ERROR_STATUS.address, Reg.OPERATING_MODE.address) == (
        64,
        70,
        11,
    )
    assert Reg.OPERATING_MODE.eeprom and not Reg.GOAL_POSITION.eeprom
    assert Reg.PRESENT_POSITION.signed and not Reg.PRESENT_INPUT_VOLTAGE.signed
    assert Reg.by_name("goal_position") is Reg.GOAL_POSITION


def test_registers_do_not_overlap_and_fit_the_table():
    regs = Reg.all()
    for a, b in zip(regs, regs[1:]):
        assert a.address + a.size <= b.address, (a.name, b.name)
    assert regs[-1].address + regs[-1].size <= TABLE_SIZE
    assert all(r.address < 64 for r in regs if r.eeprom) and all(
        r.address >= 64 for r in regs if not r.eeprom
    )


@given(st.sampled_from(Reg.all()), st.data())
def test_register_encode_decode_round_trip(reg, data):
    lo, hi = reg.value_range
    v = data.draw(st.integers(lo, hi))
    assert reg.decode(reg.encode(v)) == v
    with pytest.raises(ValueError):
        reg.encode(hi + 1)
    with pytest.raises(ValueError):
        reg.encode(lo - 1)


def test_negative_position_encoding():
    assert Reg.PRESENT_POSITION.encode(-1) == b"\xff\xff\xff\xff"
    assert Reg.PRESENT_POSITION.decode(b"\xff\xff\xff\xff") == -1


def test_models():
    assert len(MODELS_BY_NUMBER) == len(MODELS)  # model numbers unique
    assert MODELS["XM430-W350"].number == 1020 and MODELS["XM540-W270"].number == 1120
    assert MODELS["XL430-W250"].number == 1060 and MODELS["XC430-W150"].number == 1070
    assert MODELS["XC430-W240"].number == 1080 and MODELS["XM430-W210"].number == 1030
    assert MODELS["XM430-W350"].current_unit_ma == pytest.approx(2.69)
    xl = MODELS["XL430-W250"]
    assert xl.current_unit_ma is None and not xl.has_current
    assert OperatingMode.CURRENT_BASED_POSITION not in xl.modes
    assert all(m.resolution == 4096 for m in MODELS.values())
    with pytest.raises(ValueError, match="no current sensing"):
        current_to_ma(10, xl)
    assert current_to_ma(100, MODELS["XM430-W350"]) == pytest.approx(269.0)


@given(st.floats(-math.pi, math.pi))
def test_tick_conversion_round_trip(rad):
    ticks = radians_to_ticks(rad)
    assert ticks_to_radians(ticks) == pytest.approx(rad, abs=1e-9)
    # Rounded to whole ticks: within half a tick (2*pi/4096/2 rad).
    assert abs(ticks_to_radians(round(ticks)) - rad) <= math.pi / 4096 + 1e-12


def test_tick_conversion_values():
    assert ticks_to_radians(2048) == 0.0
    assert ticks_to_radians(3072) == pytest.approx(math.pi / 2)
    assert radians_to_ticks(-math.pi) == pytest.approx(0.0)
    assert velocity_to_rad_s(1) == pytest.approx(0.229 * 2 * math.pi / 60)
    assert rad_s_to_velocity(velocity_to_rad_s(123)) == pytest.approx(123)


@given(st.sets(st.sampled_from(sorted(HARDWARE_ERROR_BITS.values()))))
def test_hardware_error_round_trip(flags):
    assert decode_hardware_error(encode_hardware_error(flags)) == frozenset(flags)


def test_hardware_error_bits():
    assert decode_hardware_error(0x20) == {"overload"}
    assert decode_hardware_error(0x01 | 0x04) == {"input_voltage", "overheating"}
    assert decode_hardware_error(0x02 | 0x40 | 0x80) == frozenset()  # undefined bits ignored
    with pytest.raises(ValueError):
        encode_hardware_error({"melted"})


def test_hardware_error_message_is_one_line_and_names_everything():
    e = ServoHardwareError(
        "left_follower",
        "gripper",
        9,
        frozenset({"overload"}),
        port="/dev/ttyUSB0",
        others={8: frozenset({"overheating"})},
    )
    msg = str(e)
    assert "\n" not in msg
    for part in (
        "left_follower",
        "gripper",
        "ID 9",
        "/dev/ttyUSB0",
        "overload",
        "reboot",
        "ID 8: overheating",
    ):
        assert part in msg
    assert e.flags == {"overload"} and e.servo_id == 9 and e.joint == "gripper" and e.arm == "left_follower"
