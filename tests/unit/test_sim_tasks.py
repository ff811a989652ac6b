"""Task stages from contact sets, seeded object placement, and the IK of the operator."""

import numpy as np
import pytest

pytest.importorskip("mujoco")

from duet.hardware.sim.operator import Kinematics, gripper_frame  # noqa: E402
from duet.hardware.sim.tasks import Contacts  # noqa: E402
from duet.hardware.sim.world import START_ARM_POSE, SimWorld  # noqa: E402


def _contacts(world, *pairs):
    import mujoco

    ids = []
    for a, b in pairs:
        ga = mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_GEOM, a)
        gb = mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_GEOM, b)
        ids.append((min(ga, gb), max(ga, gb)))
    return Contacts(set(ids))


R_FINGER = "vx300s_right/10_left_gripper_finger"
L_FINGER = "vx300s_left/10_right_gripper_finger"


def test_transfer_cube_stages():
    w = SimWorld("transfer_cube", name="t_stage_cube")
    t = w.task
    assert t.stage(_contacts(w, ("red_box", "table"))) == 0
    assert t.stage(_contacts(w, ("red_box", "table"), ("red_box", R_FINGER))) == 1
    assert t.stage(_contacts(w, ("red_box", R_FINGER))) == 2
    assert t.stage(_contacts(w, ("red_box", R_FINGER), (L_FINGER, "red_box"), ("red_box", "table"))) == 3
    assert t.stage(_contacts(w, ("red_box", L_FINGER))) == 4
    assert t.stage_name(4) == "transferred" and t.max_stage == 4


def test_insertion_stages():
    w = SimWorld("insertion", name="t_stage_ins")
    t = w.task
    held = [("socket-3", L_FINGER), ("red_peg", R_FINGER)]
    assert t.stage(_contacts(w, held[0], ("red_peg", "table"))) == 0
    assert t.stage(_contacts(w, *held, ("red_peg", "table"))) == 1
    assert t.stage(_contacts(w, *held)) == 2
    assert t.stage(_contacts(w, *held, ("red_peg", "socket-1"))) == 3
    assert t.stage(_contacts(w, *held, ("red_peg", "socket-1"), ("socket-2", "table"))) == 1
    assert t.stage(_contacts(w, ("red_peg", "pin"))) == 4


def test_objects_are_seeded_and_rest_on_the_table():
    w = SimWorld("insertion", name="t_seed")
    a = w.reset(seed=7)
    b = w.reset(seed=7)
    c = w.reset(seed=8)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    assert 0.1 <= a["peg"][0] <= 0.2 and -0.2 <= a["socket"][0] <= -0.1
    # Resting, not dropped: a second of physics barely moves them.
    w.reset(seed=7)
    w.step(500)
    for k in a:
        np.testing.assert_allclose(w.body_pose(k)[:3], a[k][:3], atol=2e-3)


def test_ik_reaches_a_pose_without_flipping_the_wrist():
    w = SimWorld("transfer_cube", name="t_ik")
    kin = Kinematics(w)
    p0, _ = kin.fk("right", START_ARM_POSE)
    target = p0 + [-0.1, -0.05, -0.15]
    R = gripper_frame(np.arctan2(-0.05, -0.4), pitch=np.deg2rad(60))
    q, ep, er = kin.ik("right", target, R, START_ARM_POSE)
    assert ep < 1e-3 and er < 1e-2
    p, Rq = kin.fk("right", q)
    np.testing.assert_allclose(p, target, atol=1e-3)
    assert abs(q[3]) < 0.5 and abs(q[5]) < 0.5  # forearm_roll / wrist_rotate stay near 0
