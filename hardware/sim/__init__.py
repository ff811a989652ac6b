"""duet.hardware.sim: the MuJoCo bimanual backend behind the Arm and Camera interfaces.

Selected by configuration: a rig with `mock_backend: sim` (hardware/configs/rigs/aloha_sim.yaml)
and use_mock_hardware makes the hardware factory call make_sim_arm / make_sim_camera. Every
device of one rig shares one SimWorld (world.py); the clock given to the devices picks the
mode: the world's SimClock for lockstep, a wall clock for real time.

Heavy imports (mujoco, OpenGL) happen on first use, not on `import duet.hardware.sim`.
"""

from __future__ import annotations

from typing import Any


def make_sim_arm(rig: Any, name: str, clock: Any):
    """The sim Arm for rig arm `name`: a MuJoCo follower, or a virtual leader puppet."""
    from duet.hardware.sim.arms import SimFollowerArm, SimLeaderArm
    from duet.hardware.sim.world import world_for

    slot = rig.arm(name)
    world = world_for(rig)
    cls = SimLeaderArm if slot.role == "leader" else SimFollowerArm
    return cls(world, name, clock, model=slot.model, rate_hz=rig.control_rate_hz)


def make_sim_camera(rig: Any, name: str, clock: Any):
    """The sim Camera for rig camera `name` (rendered from the shared world)."""
    from duet.hardware.sim.cameras import SimCamera
    from duet.hardware.sim.world import world_for

    slot = rig.camera(name)
    return SimCamera(
        world_for(rig),
        name,
        clock,
        width=slot.width,
        height=slot.height,
        fps=slot.fps,
        depth=slot.depth,
        max_age_s=slot.max_age_s,
    )


def sim_world(rig: Any, task: str | None = None):
    """The shared SimWorld of a rig (see duet.hardware.sim.world.world_for)."""
    from duet.hardware.sim.world import world_for

    return world_for(rig, task)


__all__ = ["make_sim_arm", "make_sim_camera", "sim_world"]
