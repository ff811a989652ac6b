"""Sim arms and cameras honour the Arm / Camera interfaces (lockstep on the world's SimClock)."""

import numpy as np
import pytest

pytest.importorskip("mujoco")

from duet.errors import DuetError  # noqa: E402
from duet.hardware.interfaces import Arm, Camera  # noqa: E402
from duet.hardware.rig import load_rig  # noqa: E402
from duet.hardware.sim import make_sim_arm, make_sim_camera, sim_world  # noqa: E402
from duet.hardware.sim.world import JOINT_NAMES, start_pose  # noqa: E402


@pytest.fixture
def rig(request):
    # A unique rig name per test: each gets its own world from the registry.
    r = load_rig("aloha_sim", [f"name=sim_{request.node.name[:40].replace('[', '_').replace(']', '_')}"])
    yield r
    sim_world(r).close()


@pytest.mark.timeout(60)
def test_follower_interface_and_tracking(rig):
    world = sim_world(rig)
    clock = world.clock
    arm = make_sim_arm(rig, "left_follower", clock)
    assert isinstance(arm, Arm)
    assert arm.features.joint_names == JOINT_NAMES and arm.features.role == "follower"
    assert arm.features.lower[-1] == 0.0 and arm.features.upper[-1] == 1.0
    with pytest.raises(DuetError):
        arm.read()
    arm.connect()
    s0 = arm.read()
    np.testing.assert_allclose(s0.position[:6], start_pose()[:6], atol=1e-6)
    assert 0.0 <= s0.position[6] <= 1.0 and np.isfinite(s0.gripper_raw)

    # Out-of-range target: clamped to the joint limits and step-limited from the last command.
    wild = s0.position + np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0])
    sent = arm.write(wild)
    assert sent[6] <= 1.0 and np.all(np.abs(sent - s0.position) <= arm.features.max_step + 1e-12)

    # Track a pose by stepping towards it within the step limit, on simulated time.
    target = np.array([0.3, -0.6, 0.9, 0.0, 0.4, 0.2, 0.8])
    stamps = []
    t = clock.now()
    for _ in range(200):
        arm.write(target)
        t += 1.0 / rig.control_rate_hz
        clock.sleep_until(t)
        stamps.append(arm.read().stamp)
    s = arm.read()
    assert np.all(np.diff(stamps) > 0)
    np.testing.assert_allclose(s.position[:6], target[:6], atol=0.03)
    assert abs(s.position[6] - target[6]) < 0.05
    with pytest.raises(DuetError):
        arm.write(np.full(7, np.nan))

    # Effort is servo current (mA) as on the real arm: holding the arm out against gravity
    # loads the shoulder (two XM540 sharing it) far more than the wrist rotation, and no
    # reading exceeds a servo's stall current.
    from duet.hardware.dynamixel.control_table import MODELS

    for _ in range(25):
        arm.write(target)
        t += 1.0 / rig.control_rate_hz
        clock.sleep_until(t)
    eff = arm.read().effort
    assert abs(eff[1]) > 100.0 and abs(eff[1]) > 10 * abs(eff[5])
    assert np.all(np.abs(eff) <= 1000 * MODELS["XM540-W270"].stall_current_a)
    arm.disconnect()
    arm.disconnect()  # idempotent
    assert not arm.is_connected


@pytest.mark.timeout(60)
def test_leader_puppet_follows_operator_and_ignores_writes_when_limp(rig):
    world = sim_world(rig)
    leader = make_sim_arm(rig, "right_leader", world.clock)
    assert leader.features.role == "leader"
    leader.connect()
    np.testing.assert_allclose(leader.read().position, start_pose())

    class Wave:
        def pose(self, side, t):
            p = start_pose()
            p[0] = 0.1 * t
            return p

    world.set_operator(Wave())
    world.clock.sleep_until(world.clock.now() + 1.0)
    assert leader.read().position[0] == pytest.approx(0.1 * world.episode_time(), abs=1e-9)
    world.set_operator(None)
    before = leader.read().position
    leader.write(before + 0.01)  # torque off: no effect, like a real leader
    np.testing.assert_allclose(leader.read().position, before)
    leader.set_torque(True)
    sent = leader.write(before + 0.01)
    np.testing.assert_allclose(leader.read().position, sent)
    leader.disconnect()


@pytest.mark.timeout(90)
def test_camera_renders_on_sim_time_grid(rig):
    world = sim_world(rig)
    cam = make_sim_camera(rig, "cam_high", world.clock)
    assert isinstance(cam, Camera)
    assert (cam.features.width, cam.features.height) == (320, 240)
    r = cam.read()
    assert not r.connected and r.frame is None
    cam.connect()
    r1 = cam.read()
    assert r1.frame is not None and r1.frame.color.shape == (240, 320, 3) and r1.frame.color.dtype == np.uint8
    assert r1.frame.color.std() > 5  # a scene, not a blank buffer
    assert r1.age == 0.0 and not r1.stale
    # Same simulated instant: the same frame, no new render.
    assert cam.read().frame.index == r1.frame.index
    world.clock.sleep_until(world.clock.now() + 1.0 / cam.features.fps)
    r2 = cam.read()
    assert r2.frame.index == r1.frame.index + 1 and r2.frame.stamp > r1.frame.stamp
    cam.disconnect()
    assert not cam.read().connected


def test_unknown_camera_and_task_are_config_errors(rig):
    from duet.errors import ConfigError
    from duet.hardware.sim.cameras import SimCamera
    from duet.hardware.sim.tasks import make_task

    with pytest.raises(ConfigError, match="no scene camera"):
        SimCamera(sim_world(rig), "cam_nowhere", sim_world(rig).clock)
    with pytest.raises(ConfigError, match="unknown"):
        make_task("juggling")
