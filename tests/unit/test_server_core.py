"""Pure pieces of the policy server: chunk-to-grid placement, temporal ensembling buffer,
observation assembly and freshness, configuration validation."""

from __future__ import annotations

import numpy as np
import pytest

from duet.config import from_dict
from duet.errors import ConfigError, DuetError
from duet.hardware.interfaces import CameraReading, Frame, JointState
from duet.policy.interface import ActionChunk
from duet.policy.server import EnsembleBuffer, InvalidChunk, ObservationBuilder, ServerConfig, to_grid
from duet.policy.server.scheduler import LatencyEstimate

DT = 0.02


def chunk(values, t_rel=None):
    a = np.asarray(values, dtype=np.float32)
    if a.ndim == 1:
        a = a[:, None]
    t = np.arange(len(a)) * DT if t_rel is None else np.asarray(t_rel)
    return ActionChunk(a, t)


# ------------------------------------------------------------------ to_grid


def test_to_grid_places_actions_by_observation_time():
    # Observed 3 ticks after t0: action i is due at tick 3 + i.
    g = to_grid(chunk([1.0, 2.0, 3.0, 4.0]), obs_stamp=10.0 + 3 * DT, t0=10.0, dt=DT, action_dim=1)
    assert g.k0 == 3 and g.k_end == 7
    np.testing.assert_allclose(g.actions[:, 0], [1, 2, 3, 4])
    assert g.at(2) is None and g.at(7) is None
    np.testing.assert_allclose(g.at(5), [3.0])


def test_to_grid_interpolates_off_grid_capture_times():
    # Captured half a tick after tick 0: tick 1 lies halfway between actions 0 and 1.
    g = to_grid(chunk([0.0, 1.0, 2.0, 3.0]), obs_stamp=10.0 + 0.5 * DT, t0=10.0, dt=DT, action_dim=1)
    assert g.k0 == 1
    np.testing.assert_allclose(g.actions[:, 0], [0.5, 1.5, 2.5])


def test_to_grid_resamples_a_policy_trained_at_another_rate():
    # A 25 Hz policy (t_rel every 40 ms) served at 50 Hz: every other tick interpolated.
    g = to_grid(chunk([0.0, 2.0, 4.0], t_rel=[0.0, 0.04, 0.08]), obs_stamp=10.0, t0=10.0, dt=DT, action_dim=1)
    np.testing.assert_allclose(g.actions[:, 0], [0, 1, 2, 3, 4])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_to_grid_rejects_non_finite_actions(bad):
    a = np.zeros((5, 3))
    a[2, 1] = bad
    with pytest.raises(InvalidChunk, match="NaN/inf in 1 of 5"):
        to_grid(ActionChunk(a, np.arange(5) * DT), 10.0, 10.0, DT, action_dim=3)


def test_to_grid_rejects_wrong_shapes_and_time_running_backwards():
    with pytest.raises(InvalidChunk, match="expected \\(horizon, 3\\)"):
        to_grid(ActionChunk(np.zeros((5, 2)), np.arange(5) * DT), 10.0, 10.0, DT, action_dim=3)
    with pytest.raises(InvalidChunk, match="t_rel has shape"):
        to_grid(ActionChunk(np.zeros((5, 3)), np.arange(4) * DT), 10.0, 10.0, DT, action_dim=3)
    with pytest.raises(InvalidChunk, match="strictly increasing"):
        to_grid(ActionChunk(np.zeros((3, 1)), np.array([0.0, 0.02, 0.02])), 10.0, 10.0, DT, action_dim=1)


# ------------------------------------------------------------------ ensembling buffer


def test_ensemble_weights_oldest_prediction_most():
    buf = EnsembleBuffer(capacity=8, action_dim=1, k=0.5)
    g0 = to_grid(chunk([10.0, 11.0, 12.0]), 10.0, 10.0, DT, 1)  # ticks 0..2
    g1 = to_grid(chunk([20.0, 21.0, 22.0]), 10.0 + DT, 10.0, DT, 1)  # ticks 1..3
    assert buf.add(g0, 0) == 0
    np.testing.assert_allclose(buf.take(0), [10.0])
    assert buf.add(g1, 1) == 0
    w = np.exp(-0.5 * np.arange(2))
    np.testing.assert_allclose(buf.take(1), [(w @ [11.0, 20.0]) / w.sum()])
    np.testing.assert_allclose(buf.take(2), [(w @ [12.0, 21.0]) / w.sum()])
    np.testing.assert_allclose(buf.take(3), [22.0])
    assert buf.take(4) is None


def test_ensemble_counts_stale_actions_and_clears_skipped_ticks():
    buf = EnsembleBuffer(capacity=4, action_dim=1, k=0.01)
    g = to_grid(chunk([1.0, 2.0, 3.0, 4.0]), 10.0, 10.0, DT, 1)  # ticks 0..3
    assert buf.add(g, 2) == 2  # ticks 0, 1 had passed
    np.testing.assert_allclose(buf.take(2), [3.0])
    assert buf.take(2) is None  # consumed
    # Tick 3 is skipped (an overrun): its slot must not resurface at tick 3 + capacity.
    assert buf.take(4) is None
    g2 = to_grid(chunk([9.0] * 4), 10.0 + 5 * DT, 10.0, DT, 1)  # ticks 5..8
    buf.add(g2, 5)
    for k in range(5, 9):
        np.testing.assert_allclose(buf.take(k), [9.0])


def test_latency_estimate_is_the_recent_maximum_in_whole_ticks():
    est = LatencyEstimate(window=3)
    for v in (2.0, 7.2, 3.0):
        est.add(v)
    assert est.ticks == 8
    for v in (3.0, 3.0, 2.5):
        est.add(v)
    assert est.ticks == 3


# ------------------------------------------------------------------ observations


def joint(stamp, pos):
    pos = np.asarray(pos, dtype=np.float64)
    return JointState(
        stamp, tuple(f"j{i}" for i in range(len(pos))), pos, np.zeros_like(pos), np.zeros_like(pos)
    )


def reading(stamp, value=0, stale=False, connected=True):
    return CameraReading(Frame(stamp, 0, np.full((4, 4, 3), value, np.uint8)), 0.0, stale, connected)


def test_observation_history_pads_then_keeps_the_last_n_steps():
    b = ObservationBuilder(2, ("cam",), max_state_age_s=0.05, max_camera_age_s=0.1)
    b.observe([joint(1.0, [1, 2]), joint(1.0, [3])], {"cam": reading(0.99, 1), "other": reading(0.0)})
    assert b.sample(1.0).ok
    obs = b.snapshot().assemble()
    assert obs["observation.state"].shape == (2, 3) and obs["observation.state"].dtype == np.float32
    np.testing.assert_array_equal(obs["observation.is_pad"], [True, False])
    assert obs["observation.images.cam"].shape == (2, 4, 4, 3)
    assert "observation.images.other" not in obs
    for t, v in ((1.02, 2), (1.04, 3)):
        b.observe([joint(t, [v, v]), joint(t, [v])], {"cam": reading(t, v)})
        assert b.sample(t).ok
    snap = b.snapshot()
    assert snap.stamp == pytest.approx(1.04)
    obs = snap.assemble()
    np.testing.assert_array_equal(obs["observation.state"][:, 0], [2, 3])
    np.testing.assert_array_equal(obs["observation.images.cam"][:, 0, 0, 0], [2, 3])
    np.testing.assert_array_equal(obs["observation.is_pad"], [False, False])


@pytest.mark.parametrize(
    "joint_stamp, cam, reason",
    [
        (0.90, reading(0.99), "joint state is 100 ms old"),
        (0.99, reading(0.85), "camera 'cam' frame is 150 ms old"),
        (0.99, reading(0.99, stale=True), "camera 'cam' reports a stale frame"),
        (0.99, reading(0.99, connected=False), "camera 'cam' disconnected"),
        (0.99, CameraReading(None, float("inf"), True, True), "camera 'cam': no frame"),
    ],
)
def test_observation_staleness_is_reported_and_not_sampled(joint_stamp, cam, reason):
    b = ObservationBuilder(1, ("cam",), max_state_age_s=0.05, max_camera_age_s=0.1)
    b.observe([joint(joint_stamp, [0.0])], {"cam": cam})
    st = b.sample(1.0)
    assert not st.ok and reason in st.reason
    with pytest.raises(DuetError, match="no fresh observation"):
        b.snapshot()


# ------------------------------------------------------------------ config


def test_config_from_dict_and_validation():
    cfg = from_dict(ServerConfig, {"mode": "ensemble", "rate_hz": 50, "blend_ticks": 3})
    assert cfg.mode == "ensemble" and cfg.dt == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="'chunked' is not one of"):
        from_dict(ServerConfig, {"mode": "chunked"})
    with pytest.raises(ConfigError, match="rest_pose is empty"):
        ServerConfig(on_fault="rest")
    with pytest.raises(ConfigError, match="rate_hz must be >= 0, 0 = the rig's"):
        ServerConfig(rate_hz=-1)
    with pytest.raises(ConfigError, match="unknown key 'blend'"):
        from_dict(ServerConfig, {"blend": 3})


# ------------------------------------------------------------------ chunk rules (checked before the grid)


def rules(tol=0.1):
    from duet.hardware.safety import SafetyLimits
    from duet.policy.server import ChunkRules

    return ChunkRules(
        SafetyLimits(np.array([-1.0, 0.0]), np.array([1.0, 1.0]), np.array([0.1, 0.1])),
        margin=np.array([0.2, 0.1]),
        control_dt=DT,
        time_tolerance_s=tol,
    )


def two_dim(n=10, t_rel=None, override=None):
    a = np.zeros((n, 2))
    a[:, 1] = 0.5
    for (i, j), v in (override or {}).items():
        a[i, j] = v
    return ActionChunk(a, np.arange(n) * DT if t_rel is None else np.asarray(t_rel, dtype=np.float64))


def test_chunk_rules_accept_a_policy_chunk_with_small_excesses():
    rules().check(two_dim(), latency_s=0.3)
    rules().check(ActionChunk(np.array([[1.15, 1.05], [-1.19, -0.09]]), np.array([0.0, DT])), latency_s=0.0)
    # A policy may shift its chunk by its expected latency: the start may lag up to latency + tolerance.
    rules().check(two_dim(t_rel=0.35 + np.arange(10) * DT), latency_s=0.3)


@pytest.mark.parametrize(
    "value, dim, limit",
    [
        (1e6, 0, "upper limit 1"),
        (1e300, 0, "upper limit 1"),
        (-1e300, 1, "lower limit 0"),
        (1.25, 1, "upper limit 1"),
    ],
)
def test_chunk_rules_fault_an_action_beyond_a_limit_by_more_than_the_margin(value, dim, limit):
    from duet.policy.server.scheduler import ChunkTimeError, fault_detail

    with pytest.raises(InvalidChunk) as e:
        rules().check(two_dim(override={(4, dim): value}), latency_s=0.0)
    assert not isinstance(e.value, ChunkTimeError)
    f = e.value.fault
    assert (f.joint, f.row, f.value) == (dim, 4, value)
    detail = fault_detail(f, ["left.elbow", "left.gripper"], np.array([0.2, 0.1]), 10)
    assert detail.startswith(["left.elbow", "left.gripper"][dim] + f" (action dim {dim}) = {value:.4g}")
    assert limit in detail and "action 4 of 10" in detail


def test_chunk_rules_name_a_non_finite_action():
    from duet.policy.server.scheduler import fault_detail

    with pytest.raises(InvalidChunk) as e:
        rules().check(two_dim(override={(2, 1): np.nan}), latency_s=0.0)
    assert (
        fault_detail(e.value.fault, None, np.array([0.2, 0.1]), 10) == "action dim 1 = nan in action 2 of 10"
    )


@pytest.mark.parametrize(
    "t_rel, match",
    [
        (3600 + np.arange(10) * DT, "starts 3600 s after"),
        (-3600 + np.arange(10) * DT, "starts 3600 s before"),
        (np.arange(10)[::-1] * DT, "not increasing"),
        (np.r_[np.arange(9) * DT, 0.16], "not increasing"),
        (np.r_[np.arange(9) * DT, np.inf], "not finite"),
        (np.arange(10) * DT * 100, "spans 18 s"),
    ],
)
def test_chunk_rules_reject_times_outside_the_chunks_span(t_rel, match):
    from duet.policy.server.scheduler import ChunkTimeError

    with pytest.raises(ChunkTimeError, match=match):
        rules().check(two_dim(t_rel=t_rel), latency_s=0.2)


def test_chunk_rules_start_tolerance_is_measured_from_the_inference():
    from duet.policy.server.scheduler import ChunkTimeError

    late = two_dim(t_rel=0.5 + np.arange(10) * DT)
    rules().check(late, latency_s=0.45)
    with pytest.raises(ChunkTimeError, match="starts 0.5 s after"):
        rules().check(late, latency_s=0.1)


def test_config_validates_fault_fields():
    assert ServerConfig().limit_fault_margin > 0 and ServerConfig().max_chunk_faults >= 1
    with pytest.raises(ConfigError, match="limit_fault_margin must be >= 0"):
        ServerConfig(limit_fault_margin=-0.1)
    with pytest.raises(ConfigError, match="chunk_time_tolerance_s must be >= 0"):
        ServerConfig(chunk_time_tolerance_s=-1)
    with pytest.raises(ConfigError, match="max_chunk_faults must be >= 0"):
        ServerConfig(max_chunk_faults=-1)
