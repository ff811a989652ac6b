"""One source for the control rate: every rate_hz field defaults to 0 = the rig's
control_rate_hz (RigConfig.resolve_rate); a value > 0 overrides it. A rig at 30 Hz makes
teleop and the policy server tick at 30 (the recorder and the nodes: tests/ros/test_ros_rate.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from duet.clock import FakeClock
from duet.errors import ConfigError
from duet.hardware.factory import make_arm
from duet.hardware.rig import load_rig
from duet.hardware.safety import SafetyLimits
from duet.policy.server import PolicyServer, ServerConfig
from duet.teleop.config import TeleopConfig
from duet.teleop.core import TeleopCore
from duet.teleop.loop import TeleopLoop


class _Policy:
    n_obs_steps = 1
    horizon = 8
    n_action_steps = 4
    control_dt = 1 / 30
    camera_names = ()
    action_dim = 2

    def reset(self):
        pass


LIMITS = SafetyLimits(np.full(2, -1.0), np.full(2, 1.0), np.full(2, 0.1))


def test_resolve_rate_zero_is_the_rigs_and_a_positive_rate_overrides():
    rig = load_rig("aloha", ["control_rate_hz=30"])
    assert rig.resolve_rate(0) == 30.0 and rig.resolve_rate(0.0) == 30.0
    assert rig.resolve_rate(25) == 25.0
    with pytest.raises(ConfigError, match=r"rate_hz -1 < 0: .* or 0 for rig 'aloha'.*\(30\)"):
        rig.resolve_rate(-1)


def test_shipped_rigs_and_defaults_stay_at_50_hz():
    for name in ("aloha", "aloha_sim"):
        rig = load_rig(name)
        assert rig.resolve_rate(TeleopConfig().rate_hz) == 50.0
        assert rig.resolve_rate(ServerConfig().rate_hz) == 50.0


def test_unresolved_rates_fail_with_one_line_naming_the_fix():
    with pytest.raises(ConfigError, match="teleop: rate_hz must be >= 0"):
        TeleopConfig(rate_hz=-1)
    with pytest.raises(ConfigError, match=r"teleop: rate_hz is 0.*rig\.resolve_rate"):
        _ = TeleopConfig().dt
    with pytest.raises(ConfigError, match=r"server.rate_hz is 0.*rig\.resolve_rate"):
        PolicyServer(_Policy(), ServerConfig(), LIMITS, FakeClock(0.0))


def _teleop_rate(rig, cfg: TeleopConfig) -> float:
    """The mean tick rate of a teleop loop over the rig's mock arms for 1 s of fake time."""
    clock = FakeClock(start=100.0)
    arms = {a.name: make_arm(rig, a.name, True, clock=clock) for a in rig.arms}
    for a in arms.values():
        a.connect()
    try:
        leaders = {n: a for n, a in arms.items() if a.features.role == "leader"}
        followers = {n: a for n, a in arms.items() if a.features.role == "follower"}
        cfg = replace(cfg, rate_hz=rig.resolve_rate(cfg.rate_hz))  # what the teleop node does
        core = TeleopCore(
            cfg,
            cfg.resolved_pairs(rig.pairs),
            {n: a.features for n, a in leaders.items()},
            {n: a.features for n, a in followers.items()},
        )
        return TeleopLoop(core, leaders, followers, clock).run(duration=1.0).period.mean_rate_hz
    finally:
        for a in arms.values():
            a.disconnect()


@pytest.mark.timeout(120)
def test_teleop_ticks_at_the_rigs_rate_unless_overridden():
    rig = load_rig("aloha", ["control_rate_hz=30"])
    assert _teleop_rate(rig, TeleopConfig()) == pytest.approx(30.0, rel=1e-6)
    assert _teleop_rate(rig, TeleopConfig(rate_hz=25.0)) == pytest.approx(25.0, rel=1e-6)


def test_policy_server_ticks_at_the_rigs_rate_unless_overridden():
    rig = load_rig("aloha", ["control_rate_hz=30"])
    for cfg, hz in ((ServerConfig(), 30.0), (ServerConfig(rate_hz=25.0), 25.0)):
        cfg = replace(cfg, rate_hz=rig.resolve_rate(cfg.rate_hz))  # what the policy node and eval do
        server = PolicyServer(_Policy(), cfg, LIMITS, FakeClock(0.0))
        assert server.dt == pytest.approx(1 / hz)
