"""Sim tasks: which scene to load, how objects are placed per episode, and staged success.

Each task names one of the ALOHA scenes shipped with gym-aloha, samples the initial poses of
its free objects from a seeded generator, and scores the current contact set with a stage
(0 = nothing yet ... max_stage = success), as in the ACT paper's simulated tasks:

- transfer_cube: the right arm picks up a cube and hands it to the left arm.
  stages: 1 touched (right gripper touches the cube), 2 lifted (right gripper holds it off
  the table), 3 transfer attempted (left gripper touches it), 4 transferred (left gripper
  holds it off the table).
- insertion: the left arm grasps the socket, the right arm the peg, and they meet in the air.
  stages: 1 both touched, 2 both grasped (both off the table), 3 peg touches socket in the
  air, 4 inserted (peg touches the pin inside the socket).

A stage is computed from the contacts of one instant; an episode's result is the highest
stage it reached (success = max_stage reached at least once), as ACT scores rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duet.errors import ConfigError

# Geom names in gym-aloha's ALOHA scenes.
TABLE = "table"


def _fingers(side: str) -> tuple[str, str]:
    return (f"vx300s_{side}/10_left_gripper_finger", f"vx300s_{side}/10_right_gripper_finger")


@dataclass(frozen=True)
class ObjectRange:
    """Uniform box for an object's initial position (m, world frame); upright orientation."""

    body: str  # body name in the MJCF (its free joint is its first joint)
    low: tuple[float, float, float]
    high: tuple[float, float, float]


class Contacts:
    """The contact set of one instant, queried by geom name groups."""

    def __init__(self, pairs: set[tuple[int, int]]):
        self.pairs = pairs

    def any(self, a: tuple[int, ...], b: tuple[int, ...]) -> bool:
        for i in a:
            for j in b:
                if (min(i, j), max(i, j)) in self.pairs:
                    return True
        return False


class Task:
    """A task scene: its MJCF, object sampling, and stage from contacts."""

    name: str = ""
    xml: str = ""  # file name in gym_aloha/assets
    objects: tuple[ObjectRange, ...] = ()
    stages: tuple[str, ...] = ()  # names of stages 1..max_stage
    episode_ticks: int = 400  # scripted episode length at 50 Hz

    @property
    def max_stage(self) -> int:
        return len(self.stages)

    def stage_name(self, stage: int) -> str:
        return "none" if stage <= 0 else self.stages[stage - 1]

    def bind(self, model) -> None:
        """Resolve geom names to ids for `model` (called once per world)."""
        import mujoco

        def ids(*names: str) -> tuple[int, ...]:
            out = []
            for n in names:
                gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, n)
                if gid < 0:
                    raise ConfigError(f"sim task {self.name!r}: scene {self.xml} has no geom {n!r}")
                out.append(gid)
            return tuple(out)

        self._ids = ids
        self._bind(ids)

    def _bind(self, ids) -> None:
        raise NotImplementedError

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Initial pose (x, y, z, qw, qx, qy, qz) of every object."""
        out = {}
        for o in self.objects:
            pos = rng.uniform(o.low, o.high)
            out[o.body] = np.concatenate([pos, [1.0, 0.0, 0.0, 0.0]])
        return out

    def stage(self, c: Contacts) -> int:
        raise NotImplementedError


class TransferCube(Task):
    name = "transfer_cube"
    xml = "bimanual_viperx_transfer_cube.xml"
    objects = (ObjectRange("box", (0.0, 0.4, 0.05), (0.2, 0.6, 0.05)),)
    stages = ("touched", "lifted", "transfer_attempted", "transferred")

    def _bind(self, ids) -> None:
        self.box = ids("red_box")
        self.table = ids(TABLE)
        self.left = ids(*_fingers("left"))
        self.right = ids(*_fingers("right"))

    def stage(self, c: Contacts) -> int:
        right = c.any(self.box, self.right)
        left = c.any(self.box, self.left)
        on_table = c.any(self.box, self.table)
        if left:
            return 3 if on_table else 4
        if right:
            return 1 if on_table else 2
        return 0


class Insertion(Task):
    name = "insertion"
    xml = "bimanual_viperx_insertion.xml"
    objects = (
        ObjectRange("peg", (0.1, 0.4, 0.05), (0.2, 0.6, 0.05)),
        ObjectRange("socket", (-0.2, 0.4, 0.05), (-0.1, 0.6, 0.05)),
    )
    stages = ("touched_both", "grasped_both", "peg_socket_contact", "inserted")

    def _bind(self, ids) -> None:
        self.peg = ids("red_peg")
        self.socket = ids("socket-1", "socket-2", "socket-3", "socket-4")
        self.pin = ids("pin")
        self.table = ids(TABLE)
        self.left = ids(*_fingers("left"))
        self.right = ids(*_fingers("right"))

    def stage(self, c: Contacts) -> int:
        if c.any(self.peg, self.pin):
            return 4
        airborne = not c.any(self.peg, self.table) and not c.any(self.socket, self.table)
        if airborne and c.any(self.peg, self.socket):
            return 3
        both = c.any(self.socket, self.left) and c.any(self.peg, self.right)
        if both:
            return 2 if airborne else 1
        return 0


TASKS: dict[str, type[Task]] = {t.name: t for t in (TransferCube, Insertion)}


def make_task(name: str) -> Task:
    if name not in TASKS:
        raise ConfigError(f"sim task {name!r}: unknown (choose one of {', '.join(TASKS)})")
    return TASKS[name]()
