"""The safety function: clamp, step limit, NaN rejection; pure."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from duet.errors import DuetError
from duet.hardware.arm_model import load_arm_model
from duet.hardware.safety import SafetyLimits, UnsafeCommandError, ramp_done, ramp_step, safe_command

N = 7
LIMITS = SafetyLimits(
    lower=np.array([-3.1, -1.85, -1.76, -3.1, -1.87, -3.1, 0.0]),
    upper=np.array([3.1, 1.26, 1.6, 3.1, 2.23, 3.1, 1.0]),
    max_step=np.array([0.08, 0.08, 0.08, 0.12, 0.12, 0.12, 0.12]),
)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
targets = arrays(np.float64, N, elements=finite)


@st.composite
def within_limits(draw):
    u = draw(arrays(np.float64, N, elements=st.floats(0.0, 1.0)))
    return LIMITS.lower + u * (LIMITS.upper - LIMITS.lower)


def test_unsafe_command_error_is_a_user_error():
    assert issubclass(UnsafeCommandError, DuetError)


def test_in_range_target_passes_unchanged():
    last = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5])
    target = last + np.array([0.05, -0.05, 0.0, 0.1, -0.1, 0.0, 0.1])
    np.testing.assert_array_equal(safe_command(target, last, LIMITS), target)
    np.testing.assert_array_equal(safe_command(target, None, LIMITS), target)


def test_clamps_to_limits_without_last():
    target = np.array([10.0, -10.0, 0.0, 0.0, 0.0, 0.0, 1.5])
    out = safe_command(target, None, LIMITS)
    np.testing.assert_array_equal(out, [3.1, -1.85, 0.0, 0.0, 0.0, 0.0, 1.0])


def test_step_limit_from_last():
    last = np.zeros(N)
    out = safe_command(np.full(N, 0.5), last, LIMITS)
    np.testing.assert_allclose(out, np.minimum(0.5, LIMITS.max_step))


@settings(max_examples=300, deadline=None)
@given(target=targets, last=within_limits())
def test_output_always_within_limits_and_step(target, last):
    out = safe_command(target, last, LIMITS)
    assert out.shape == (N,)
    assert np.all(out >= LIMITS.lower) and np.all(out <= LIMITS.upper)
    assert np.all(np.abs(out - last) <= LIMITS.max_step + 1e-12)


@settings(max_examples=200, deadline=None)
@given(target=targets, last=within_limits())
def test_output_is_the_closest_allowed_command(target, last):
    # Per joint the allowed set is an interval; the output is the target projected onto it.
    out = safe_command(target, last, LIMITS)
    lo = np.maximum(LIMITS.lower, last - LIMITS.max_step)
    hi = np.minimum(LIMITS.upper, last + LIMITS.max_step)
    np.testing.assert_allclose(out, np.clip(target, lo, hi))


@settings(max_examples=300, deadline=None)
@given(
    target=targets,
    bad_index=st.integers(0, N - 1),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    with_last=st.booleans(),
)
def test_non_finite_always_rejected(target, bad_index, bad, with_last):
    t = target.copy()
    t[bad_index] = bad
    before = t.copy()
    with pytest.raises(UnsafeCommandError, match="holding"):
        safe_command(t, np.zeros(N) if with_last else None, LIMITS)
    np.testing.assert_array_equal(t, before)  # never repaired in place


def test_error_names_the_joint():
    names = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
    t = np.zeros(N)
    t[2] = np.nan
    with pytest.raises(UnsafeCommandError, match="elbow is nan"):
        safe_command(t, None, LIMITS, names=names)


@pytest.mark.parametrize("bad", [np.zeros(N - 1), np.zeros((N, 1)), np.zeros(0), "abc", None])
def test_wrong_shape_rejected(bad):
    with pytest.raises(UnsafeCommandError):
        safe_command(bad, None, LIMITS)


def test_non_finite_last_rejected():
    last = np.zeros(N)
    last[0] = np.nan
    with pytest.raises(UnsafeCommandError):
        safe_command(np.zeros(N), last, LIMITS)


def test_pure_inputs_untouched():
    target = np.full(N, 9.0)
    last = np.zeros(N)
    t0, l0 = target.copy(), last.copy()
    out = safe_command(target, last, LIMITS)
    assert out is not target and out is not last
    np.testing.assert_array_equal(target, t0)
    np.testing.assert_array_equal(last, l0)


def test_last_outside_limits_moves_toward_range_without_jumping():
    last = LIMITS.upper + 0.5  # an arm switched on beyond its soft limits
    out = safe_command(np.zeros(N), last, LIMITS)
    np.testing.assert_allclose(out, last - LIMITS.max_step)
    cur = last
    for _ in range(100):
        nxt = safe_command(np.zeros(N), cur, LIMITS)
        assert np.all(np.abs(nxt - cur) <= LIMITS.max_step + 1e-12)
        cur = nxt
    np.testing.assert_allclose(cur, np.zeros(N))


@settings(max_examples=200, deadline=None)
@given(current=within_limits(), target=within_limits())
def test_ramp_reaches_target_without_overshoot(current, target):
    cur = current
    steps = (
        int(np.max(np.ceil(np.abs(target - current) / LIMITS.max_step))) if np.any(target != current) else 0
    )
    for _ in range(steps):
        nxt = ramp_step(cur, target, LIMITS.max_step)
        assert np.all(np.abs(nxt - cur) <= LIMITS.max_step + 1e-12)
        # never moves away from the target on any joint
        assert np.all(np.abs(target - nxt) <= np.abs(target - cur) + 1e-12)
        cur = nxt
    assert ramp_done(cur, target, tol=1e-9)


def test_ramp_rejects_nan():
    with pytest.raises(UnsafeCommandError):
        ramp_step(np.full(N, np.nan), np.zeros(N), LIMITS.max_step)


def test_limits_validate():
    with pytest.raises(ValueError):
        SafetyLimits(np.zeros(2), np.ones(2), np.zeros(2))
    with pytest.raises(ValueError):
        SafetyLimits(np.ones(2), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError):
        SafetyLimits(np.zeros(2), np.ones(3), np.ones(2))


def test_limits_from_shipped_model():
    model = load_arm_model("vx300s")
    lim = SafetyLimits.from_model(model, rate_hz=50.0)
    assert lim.n == model.n == 7
    assert lim.lower[-1] == 0.0 and lim.upper[-1] == 1.0
    np.testing.assert_allclose(lim.max_step, model.max_step(50.0))
    with pytest.raises(ValueError):
        lim.lower[0] = 0.0  # read-only


# ------------------------------------------------------------------ limit faults (planned targets)


def test_limit_fault_none_within_the_margin():
    from duet.hardware.safety import limit_fault

    chunk = np.vstack([LIMITS.lower - 0.05, LIMITS.upper + 0.05, (LIMITS.lower + LIMITS.upper) / 2])
    assert limit_fault(chunk, LIMITS, margin=0.1) is None
    assert limit_fault(LIMITS.upper + 0.05, LIMITS, margin=np.full(N, 0.1)) is None
    assert limit_fault(LIMITS.upper, LIMITS, margin=0.0) is None


@pytest.mark.parametrize(
    "value, joint, limit", [(1e6, 2, 1.6), (1e300, 4, 2.23), (-1e300, 6, 0.0), (-1e6, 0, -3.1)]
)
def test_limit_fault_names_the_joint_value_and_limit(value, joint, limit):
    from duet.hardware.safety import limit_fault

    chunk = np.zeros((5, N))
    chunk[:, 6] = 0.5
    chunk[3, joint] = value
    chunk[1, 1] = 1.26 + 0.5  # beyond too, by less: the worst offender is reported
    f = limit_fault(chunk, LIMITS, margin=0.2)
    assert (f.joint, f.row, f.value, f.limit) == (joint, 3, value, limit)
    assert f.excess == pytest.approx(abs(value - limit))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_limit_fault_reports_non_finite_first(bad):
    from duet.hardware.safety import limit_fault

    chunk = np.zeros((4, N))
    chunk[0, 0] = 1e6
    chunk[2, 5] = bad
    f = limit_fault(chunk, LIMITS, margin=0.2)
    assert (f.joint, f.row) == (5, 2) and not np.isfinite(f.value) and np.isnan(f.limit)


def test_limit_fault_rejects_a_wrong_width():
    from duet.hardware.safety import limit_fault

    with pytest.raises(ValueError, match="7 joints"):
        limit_fault(np.zeros((3, N - 1)), LIMITS, margin=0.2)
