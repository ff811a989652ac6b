"""A scripted demonstration through leader puppets -> safety -> sim followers succeeds."""

import numpy as np
import pytest

pytest.importorskip("mujoco")

from duet.hardware.rig import load_rig  # noqa: E402
from duet.hardware.sim import sim_world  # noqa: E402
from duet.hardware.sim.episode import ScriptedCollector  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_scripted_transfer_cube_succeeds():
    rig = load_rig("aloha_sim", ["name=sim_it_transfer", "sim_task=transfer_cube"])
    steps = []
    try:
        with ScriptedCollector(rig, render=False) as c:
            r = c.run(seed=1, on_step=steps.append)
    finally:
        sim_world(rig).close()
    assert r.reachable and r.success and r.completed and not r.flagged
    assert r.final_stage == 4  # the cube ends in the left gripper, off the table
    # Stages come in order: touched/lifted by the right arm before the left takes it.
    first = [int(np.argmax(r.stages >= s)) for s in (1, 2, 4)]
    assert first == sorted(first)
    assert len(steps) == r.ticks and steps[0].qpos.shape == (14,)
    # The followers were driven through the leaders: actions equal the leader poses.
    np.testing.assert_allclose(steps[200].action, steps[200].leader, atol=1e-9)


@pytest.mark.timeout(60)
def test_failed_demonstration_is_flagged():
    rig = load_rig("aloha_sim", ["name=sim_it_flag", "sim_task=transfer_cube"])
    try:
        with ScriptedCollector(rig, render=False) as c:
            c.world.reset(seed=1)
            from duet.hardware.sim.operator import plan_episode

            plan = plan_episode(c.world)
            for side in plan.joints:  # an operator who never closes the grippers
                plan.joints[side][:, 6] = 1.0
            r = c.run(seed=1, plan=plan)
    finally:
        sim_world(rig).close()
    # (ACT's success counts the final stage at any tick: pushing the cube about can touch it.)
    assert r.flagged and not r.completed


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_scripted_insertion_succeeds():
    rig = load_rig("aloha_sim", ["name=sim_it_insertion", "sim_task=insertion"])
    try:
        with ScriptedCollector(rig, render=False) as c:
            r = c.run(seed=2)
    finally:
        sim_world(rig).close()
    assert r.reachable and r.success and r.final_stage == 4  # the peg stays in the socket
    first = [int(np.argmax(r.stages >= s)) for s in (2, 3, 4)]
    assert first == sorted(first)


@pytest.mark.timeout(120)
def test_demonstrations_are_written_through_the_data_store(tmp_path):
    pytest.importorskip("zarr")
    from duet.apps.sim import open_store
    from duet.data.recorder import Recorder
    from duet.data.store import EpisodeStore

    rig = load_rig("aloha_sim", ["name=sim_it_store", "sim_task=transfer_cube"])
    path = tmp_path / "demos"
    try:
        with ScriptedCollector(rig, render=False) as c:
            rec = Recorder(open_store(str(path), rig, cameras=[]), clock=c.clock, rig=rig)
            try:
                ok = c.run(seed=1, recorder=rec)
                plan = None
                from duet.hardware.sim.operator import plan_episode

                c.world.reset(seed=1)
                plan = plan_episode(c.world)
                for side in plan.joints:
                    plan.joints[side][:, 6] = 1.0  # never grasps: fails, and is not stored
                bad = c.run(seed=1, plan=plan, recorder=rec)
            finally:
                rec.close()
    finally:
        sim_world(rig).close()
    assert ok.success and ok.stored_index == 0
    assert bad.flagged and bad.stored_index is None
    store = EpisodeStore.open(str(path))
    assert store.n_episodes == 1 and int(store.episode_lengths[0]) == ok.ticks
    ep = store.read_episode(0, images=False)
    meta = store.episode_meta(0)
    assert meta["operator"] == "scripted" and meta["seed"] == 1
    assert np.all(np.diff(ep["t"]) > 0)
    # The recorded action is what the followers were sent: the leader poses (within safety).
    np.testing.assert_allclose(ep["action"][:, :7], ep["left_leader.position"], atol=1e-5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("task", ["transfer_cube", "insertion"])
def test_the_operator_never_holds_both_arms_still_mid_task(task):
    """A scene where nothing moves carries no cue for when to go on: a policy trained on such
    demonstrations stalls there (temporal ensembling keeps averaging 'start soon' into 'not
    yet'). Until the final hold, some arm is always on its way."""
    from duet.hardware.sim.operator import plan_episode

    rig = load_rig("aloha_sim", [f"name=sim_it_still_{task}", f"sim_task={task}"])
    try:
        w = sim_world(rig)
        w.reset(seed=2)
        plan = plan_episode(w)
    finally:
        sim_world(rig).close()
    moving = np.zeros(plan.ticks - 1, dtype=bool)
    for traj in plan.joints.values():
        moving |= np.abs(np.diff(traj, axis=0)).max(axis=1) > 1e-4
    last_move = int(np.flatnonzero(moving)[-1])
    run, longest = 0, 0
    for m in moving[: last_move + 1]:
        run = 0 if m else run + 1
        longest = max(longest, run)
    assert longest <= 5, f"{task}: both arms still for {longest} ticks before the end"
    assert plan.ticks - 1 - last_move <= 60  # the final hold
