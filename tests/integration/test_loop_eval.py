"""`duet eval` parts: Wilson intervals, per-stage rates, configuration errors, and the lockstep
latency handling (zero / fixed / measured) with a stand-in policy on the real sim rig."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from duet.cli import main
from duet.errors import ConfigError
from duet.policy.evaluate import EvalConfig, stage_rates, wilson_interval
from duet.policy.interface import ActionChunk


def test_wilson_interval_matches_reference_values():
    # Reference values (Wilson score, z = 1.96), e.g. Newcombe 1998 / statsmodels proportion_confint.
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(43, 50)
    assert lo == pytest.approx(0.7381, abs=1e-4) and hi == pytest.approx(0.9305, abs=1e-4)
    assert wilson_interval(0, 50) == (0.0, pytest.approx(0.0713, abs=1e-4))
    assert wilson_interval(50, 50) == (pytest.approx(0.9287, abs=1e-4), 1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_stage_rates_count_episodes_reaching_each_stage():
    st = stage_rates([0, 1, 4, 2, 4], ("a", "b", "c", "d"))
    assert [s["count"] for s in st] == [4, 3, 2, 2]
    assert [s["name"] for s in st] == ["a", "b", "c", "d"]
    assert st[0]["rate"] == pytest.approx(0.8)
    for s in st:
        lo, hi = s["ci95"]
        assert lo < s["rate"] < hi


def test_eval_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="episodes"):
        EvalConfig(episodes=0)
    with pytest.raises(ConfigError, match="latency_ms"):
        EvalConfig(latency="fixed")
    with pytest.raises(ConfigError, match="camera_size"):
        EvalConfig(camera_size=[48])
    with pytest.raises(ConfigError, match="server.mode"):
        EvalConfig(server={"mode": "ensemble"})


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a directory" in err
    assert main(["eval", "--checkpoint", str(tmp_path), "--latency", "soon"]) == 2
    assert "--latency 'soon'" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(tmp_path), "--set", "blend_ticks=3"]) == 2
    assert "only server.* settings" in capsys.readouterr().err


class ReachPolicy:
    """A stand-in model: every chunk moves both waists toward +0.3 rad from the observed pose
    (optionally taking `sleep_s` of wall time per inference)."""

    n_obs_steps = 1
    horizon = 10
    n_action_steps = 10
    control_dt = 0.02
    camera_names = ("cam_high",)
    action_dim = 14

    def __init__(self, sleep_s: float = 0.0):
        self.sleep_s = sleep_s
        self.calls = 0
        self.resets = 0

    def reset(self):
        self.resets += 1

    def predict_chunk(self, obs):
        assert obs["observation.images.cam_high"].shape[-3:] == (48, 64, 3)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        self.calls += 1
        goal = obs["observation.state"][-1].astype(np.float64).copy()
        goal[[0, 7]] = 0.3
        return ActionChunk(np.repeat(goal[None], self.horizon, axis=0), np.arange(self.horizon) * 0.02)


def _run(tmp_path, policy, **kw):
    pytest.importorskip("mujoco")
    from duet.policy.evaluate import evaluate

    cfg = EvalConfig(episodes=1, ticks=30, camera_size=[48, 64], videos=0, **kw)
    return evaluate(None, cfg, tmp_path, policy=policy, progress=False)


@pytest.mark.timeout(120)
def test_zero_latency_lockstep_uses_chunks_from_the_next_tick(tmp_path):
    policy = ReachPolicy()
    rep = _run(tmp_path, policy, mode="async")
    srv = rep.server_summary()
    assert policy.calls == srv["queries"] >= 3 and policy.resets == 1
    # The sim waited for every inference: each chunk was there one tick after its observation.
    assert rep.server_samples["arrival_s"] == pytest.approx([0.02] * srv["chunks_received"])
    assert srv["deadline_misses"] == 0 and srv["held_by_reason"] == {"waiting_for_chunk": 1}
    assert srv["executed_ticks"] == 29
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["latency"]["mode"] == "zero" and data["checkpoint"]["path"] is None
    assert data["per_episode"][0]["ticks"] == 30 and data["inference_wall_ms"]["count"] == policy.calls


@pytest.mark.timeout(120)
def test_fixed_latency_lets_the_sim_run_on_and_drops_stale_actions(tmp_path):
    rep = _run(tmp_path, ReachPolicy(), mode="async", latency="fixed", latency_ms=70.0)
    srv = rep.server_summary()
    # 70 ms after the observation -> usable from the first tick at or after it: 80 ms (4 ticks);
    # the actions due before that (4 per chunk) were dropped, never sent late.
    assert rep.server_samples["arrival_s"] == pytest.approx([0.08] * srv["chunks_received"])
    assert srv["actions_dropped_stale"] >= 4 * srv["chunks_received"]
    assert srv["held_by_reason"]["waiting_for_chunk"] == 4
    assert rep.emulated_latency_s == pytest.approx([0.07] * srv["queries"])


@pytest.mark.timeout(120)
def test_measured_latency_follows_the_model_wall_time(tmp_path):
    rep = _run(tmp_path, ReachPolicy(sleep_s=0.045), mode="receding", latency="measured")
    assert min(rep.inference_wall_s) >= 0.045
    assert rep.emulated_latency_s == rep.inference_wall_s[: len(rep.emulated_latency_s)]
    # 45+ ms of compute: never usable before the third tick after the observation.
    assert min(rep.server_samples["arrival_s"]) >= 0.06 - 1e-9


@pytest.mark.timeout(120)
def test_commands_reach_the_sim_followers_through_safety():
    pytest.importorskip("mujoco")
    from duet.policy.evaluate import SimEvaluator, TimedPolicy

    policy = ReachPolicy()
    cfg = EvalConfig(episodes=1, ticks=40, camera_size=[48, 64], mode="ensemble")
    with SimEvaluator(policy, cfg, {"cam_high": (48, 64)}) as ev:
        out = ev.run_episode(TimedPolicy(policy), 0, seed=123)
        waists = [a.read().position[0] for a in ev.arms]
        clamped = [a.health()["clamped"] for a in ev.arms]
        max_step = ev.limits.max_step[0]
    assert out.ticks == 40 and out.server["executed_ticks"] == 39
    # The waists moved toward +0.3 rad, no faster than the safety step limit allows.
    assert all(0.05 < w <= 0.3 + 1e-6 for w in waists)
    assert all(w <= 39 * max_step + 1e-6 for w in waists)
    assert sum(clamped) == 0  # the server's own safety pass already kept every command in limits


class ExpertPolicy:
    """A stand-in for a perfect model: the scripted operator's plan for the episode's object
    poses, read at the observation's simulated time (lockstep, latency zero: the sim stands
    still while predict_chunk runs). If evaluation mis-aligned time, action order or arms,
    or scored stages wrongly, this expert would not succeed."""

    n_obs_steps = 1
    horizon = 20
    n_action_steps = 20
    control_dt = 0.02
    camera_names = ("cam_high",)
    action_dim = 14

    def __init__(self, world_name: str):
        self.world_name = world_name
        self.operator = None

    def reset(self):
        self.operator = None

    def predict_chunk(self, obs):
        from duet.hardware.sim.operator import ScriptedOperator, plan_episode
        from duet.hardware.sim.world import get_world

        w = get_world(self.world_name)
        if self.operator is None:  # first inference of the episode: the scene as reset
            self.operator = ScriptedOperator(plan_episode(w))
        t = w.episode_time()
        acts = [
            np.concatenate([self.operator.pose(s, t + i * self.control_dt) for s in ("left", "right")])
            for i in range(self.horizon)
        ]
        return ActionChunk(np.array(acts), np.arange(self.horizon) * self.control_dt)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["ensemble", "async"])
def test_an_expert_policy_succeeds_through_the_server(tmp_path, mode):
    pytest.importorskip("mujoco")
    from duet.policy.evaluate import evaluate

    cfg = EvalConfig(
        task="transfer_cube",
        episodes=1,
        seed=1,
        camera_size=[48, 64],
        videos=0,
        mode=mode,
        stop_on_success=True,
    )
    rep = evaluate(None, cfg, None, policy=ExpertPolicy("aloha_sim_eval"), progress=False)
    (o,) = rep.outcomes
    assert o.success and o.max_stage == 4
    # Stages came in order, and the episode ended early once transferred.
    ticks = [o.first_tick_of_stage[s] for s in sorted(o.first_tick_of_stage)]
    assert ticks == sorted(ticks) and o.ticks < 400
    assert rep.stages[-1]["count"] == 1 and rep.stages[-1]["ci95"][1] == 1.0


class ReplayPolicy(ExpertPolicy):
    """Plays back a recorded demonstration's actions, indexed by the episode's simulated time:
    a model that learned the data perfectly. Unlike ExpertPolicy it reads the store, so it
    checks the recorded side too (action order and units, one action per tick, the seed kept
    in the episode's metadata). Its shape (horizon, dims, camera) is ExpertPolicy's."""

    def __init__(self, actions: np.ndarray):
        self.actions = actions

    def reset(self):
        pass

    def predict_chunk(self, obs):
        from duet.hardware.sim.world import get_world

        k = int(round(get_world("aloha_sim_eval").episode_time() / self.control_dt))
        idx = np.clip(np.arange(k, k + self.horizon), 0, len(self.actions) - 1)
        return ActionChunk(self.actions[idx], np.arange(self.horizon) * self.control_dt)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_recorded_demonstrations_replayed_through_the_server_succeed(tmp_path):
    """Train/eval alignment: a demonstration's recorded actions, sent by the policy server to
    the evaluator's sim at the same seed, do the task again, and the safety function has next
    to nothing to clamp (the data stays inside the limits the server enforces)."""
    pytest.importorskip("mujoco")
    from duet.data.store import EpisodeStore
    from duet.policy.evaluate import SimEvaluator, TimedPolicy

    store_path = tmp_path / "demos.zarr"
    assert (
        main(
            [
                "sim",
                "collect",
                "--task",
                "transfer_cube",
                "--episodes",
                "1",
                "--seed",
                "3",
                "--cameras",
                "cam_high",
                "--out",
                str(store_path),
            ]
        )
        == 0
    )
    store = EpisodeStore.open(str(store_path), "r")
    (meta,) = store.episodes_meta()
    actions = np.asarray(store.array("action")[:], np.float32)
    assert meta["seed"] == 3 and actions.shape[1] == 14
    policy = ReplayPolicy(actions)
    cfg = EvalConfig(task="transfer_cube", episodes=1, seed=3, camera_size=[48, 64], videos=0, mode="async")
    with SimEvaluator(policy, cfg, {"cam_high": (48, 64)}) as ev:
        out = ev.run_episode(TimedPolicy(policy), 0, seed=3)
    assert out.success and out.max_stage == 4
    srv = out.server
    assert srv["limit_clamps"] == 0 and srv["step_clamps"] <= 0.02 * srv["executed_ticks"]
