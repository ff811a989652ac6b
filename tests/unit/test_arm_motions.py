"""Scripted leader motions (the mock operator): smooth, within limits, deterministic."""

import numpy as np
import pytest

from duet.errors import ConfigError
from duet.hardware.arm_model import load_arm_model
from duet.hardware.mock.motions import home_pose, make_motion


@pytest.mark.parametrize("model_name", ["wx250s", "vx300s"])
def test_wave_within_limits_smooth_full_gripper_range(model_name):
    model = load_arm_model(model_name)
    motion = make_motion("wave", model, t0=100.0)
    t = 100.0 + np.arange(0, 60.0, 0.02)
    poses = np.array([motion(x) for x in t])
    assert np.all(poses >= model.lower) and np.all(poses <= model.upper)
    np.testing.assert_allclose(poses[0], home_pose(model), atol=1e-12)  # starts at rest at home
    steps = np.abs(np.diff(poses, axis=0))
    assert np.all(steps <= model.max_step(50.0))  # never faster than the safety step allows
    assert np.all(np.ptp(poses[:, :-1], axis=0) > 0.2)  # every joint moves
    assert poses[:, -1].min() == pytest.approx(0.0, abs=1e-3) and poses[:, -1].max() == pytest.approx(
        1.0, abs=1e-3
    )
    # deterministic: a second instance gives the same trajectory
    again = make_motion("wave", model, t0=100.0)
    np.testing.assert_array_equal(poses[123], again(t[123]))


def test_still_and_unknown():
    model = load_arm_model("wx250s")
    np.testing.assert_array_equal(make_motion("still", model)(5.0), home_pose(model))
    with pytest.raises(ConfigError, match="mock_motion 'dance' unknown"):
        make_motion("dance", model)
