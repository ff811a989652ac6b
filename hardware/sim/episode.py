"""Lockstep scripted episodes: the building block of `duet sim collect`.

One episode: reset the world (seeded object poses), plan the scripted operator's leader
trajectories, then every 50 Hz control tick, on simulated time paced by duet.clock.Pacer:
observe the followers (and cameras), read the leader puppets, send the leader poses 1:1 to
the followers (gripper normalized; every command through the arms' safety function), let
physics run to the next tick. The stage reached is tracked per tick and the episode is
reported a success when the task's final stage was reached.

The devices are the real sim backends of the rig (make_sim_arm / make_sim_camera), so a
demonstration here flows leader -> follower -> observation exactly as through the ROS graph.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duet.clock import Pacer
from duet.errors import ConfigError
from duet.hardware.sim import make_sim_arm, make_sim_camera
from duet.hardware.sim.operator import Plan, ScriptedOperator, plan_episode
from duet.hardware.sim.world import SimWorld, world_for

END_TICKS = 5  # the "end" of an episode, for EpisodeResult.completed (0.1 s at 50 Hz)


@dataclass
class Step:
    """What one control tick saw and did (time-aligned as a recorder stores it)."""

    tick: int
    t: float  # tick time on the world's SimClock (s)
    qpos: np.ndarray  # (14,) follower joints, left then right (gripper normalized)
    qvel: np.ndarray  # (14,)
    action: np.ndarray  # (14,) the commands sent to the followers this tick (after safety)
    leader: np.ndarray  # (14,) the leader puppets' poses this tick
    images: dict[str, np.ndarray]  # camera name -> (H, W, 3) uint8
    image_stamps: dict[str, float]
    stage: int  # task stage after the previous tick's physics


@dataclass
class EpisodeResult:
    task: str
    seed: int
    ticks: int
    success: bool
    max_stage: int  # highest stage reached
    final_stage: int  # stage at the end
    stage_names: tuple[str, ...]
    stages: np.ndarray  # (ticks + 1,) stage per tick, then after the last tick
    reachable: bool  # the operator's IK reached every waypoint
    ik_error_m: dict[str, float]
    sim_s: float
    wall_s: float
    frames: int
    clamped: int  # follower commands changed by the safety function
    object_poses: dict[str, list[float]] = field(default_factory=dict)
    stored_index: int | None = None  # episode index in the store, when recorded and kept

    @property
    def completed(self) -> bool:
        """The task is done at the end: its final stage was seen in the last END_TICKS ticks
        (contacts flicker at physics rate). Stricter than success, which, as in ACT's
        evaluation, counts the final stage reached at any tick."""
        return int(self.stages[-END_TICKS:].max()) >= len(self.stage_names)

    @property
    def flagged(self) -> bool:
        """A demonstration not to keep: it did not succeed, did not end with the task done,
        or the operator could not reach a waypoint."""
        return not (self.success and self.completed and self.reachable)

    def summary(self) -> str:
        why = "failed" if not self.success else ("not held at the end" if not self.completed else "IK")
        flag = f"  FLAGGED ({why})" if self.flagged else ""
        name = self.stage_names[self.max_stage - 1] if self.max_stage > 0 else "none"
        return (
            f"{self.task} seed {self.seed}: {'success' if self.success else 'failure'}, "
            f"max stage {self.max_stage}/{len(self.stage_names)} ({name}), {self.ticks} ticks, "
            f"{self.wall_s:.2f} s wall{flag}"
        )


class ScriptedCollector:
    """Runs scripted demonstrations on a sim rig in lockstep."""

    def __init__(
        self,
        rig: Any,
        task: str | None = None,
        cameras: list[str] | tuple[str, ...] | None = None,
        render: bool = True,
    ):
        if getattr(rig, "mock_backend", "sim") != "sim":
            raise ConfigError(
                f"rig {rig.name!r}: sim collection needs mock_backend: sim (e.g. rig aloha_sim)"
            )
        if task is not None:
            existing = None
            from duet.hardware.sim.world import get_world

            existing = get_world(rig.name)
            if existing is not None and existing.task.name != task:
                existing.close()
        self.rig = rig
        self.world: SimWorld = world_for(rig, task)
        self.clock = self.world.clock
        if not rig.pairs:
            raise ConfigError(
                f"rig {rig.name!r}: no teleop pairs (add pairs: [[left_leader, left_follower], ...])"
            )
        self.pairs = [
            (make_sim_arm(rig, ld, self.clock), make_sim_arm(rig, fo, self.clock)) for ld, fo in rig.pairs
        ]
        names = list(cameras) if cameras is not None else [c.name for c in rig.cameras]
        self.cameras = [make_sim_camera(rig, n, self.clock) for n in names] if render else []
        self._connected = False

    def connect(self) -> None:
        if self._connected:
            return
        for ld, fo in self.pairs:
            ld.connect()
            fo.connect()
        for c in self.cameras:
            c.connect()
        self._connected = True

    def close(self) -> None:
        for c in self.cameras:
            c.disconnect()
        for ld, fo in self.pairs:
            fo.disconnect()
            ld.disconnect()
        self._connected = False

    def __enter__(self) -> ScriptedCollector:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(
        self,
        seed: int,
        on_step: Callable[[Step], None] | None = None,
        plan: Plan | None = None,
        settle_ticks: int = 0,
        correct: bool = True,
        recorder: Any = None,
        keep_failed: bool = False,
    ) -> EpisodeResult:
        """One scripted episode with objects placed by `seed`; on_step gets every tick.
        correct=False: the operator plays its plan blind (no look at the scene mid-way).
        recorder: a recorder on this world's clock (duet.data.recorder.Recorder; the caller,
        e.g. `duet sim collect --out`, brings it and its store: hardware imports no data/)
        that records the episode; a flagged demonstration (see EpisodeResult.flagged) is
        discarded unless keep_failed."""
        self.connect()
        w = self.world
        wall0 = time.perf_counter()
        w.reset(seed=seed)
        plan = plan or plan_episode(w, rate_hz=w.control_rate_hz)
        w.set_operator(ScriptedOperator(plan, world=w if correct else None))
        if recorder is not None:
            recorder.start_episode(
                task=w.task.name,
                operator="scripted",
                seed=int(seed),
                sim=True,
                object_poses={k: [float(x) for x in v] for k, v in w.object_poses.items()},
            )
        pacer = Pacer(w.control_rate_hz, self.clock)
        t0 = self.clock.now()
        pacer.start(t0)
        ticks = plan.ticks + settle_ticks
        stages = np.zeros(ticks + 1, dtype=np.int16)
        frames = 0
        clamped0 = sum(fo.health()["clamped"] for _, fo in self.pairs)
        for k in range(ticks):
            t = pacer.wait()  # steps physics up to this tick
            stages[k] = w.stage
            obs = [fo.read() for _, fo in self.pairs]
            images, stamps = {}, {}
            reads = [c.read() for c in self.cameras]
            for c, r in zip(self.cameras, reads):
                if r.frame is not None:
                    images[c.name] = r.frame.color
                    stamps[c.name] = r.frame.stamp
                    frames += 1
            leaders = [ld.read() for ld, _ in self.pairs]
            sent = [fo.write(s.position) for (_, fo), s in zip(self.pairs, leaders)]
            if recorder is not None:
                self._record(recorder, t, obs, leaders, sent, reads)
            if on_step is not None:
                on_step(
                    Step(
                        tick=k,
                        t=t,
                        qpos=np.concatenate([o.position for o in obs]),
                        qvel=np.concatenate([o.velocity for o in obs]),
                        action=np.concatenate(sent),
                        leader=np.concatenate([s.position for s in leaders]),
                        images=images,
                        image_stamps=stamps,
                        stage=int(w.stage),
                    )
                )
        pacer.wait()  # the last command's physics
        stages[ticks] = w.stage
        w.set_operator(None)
        stored = None
        if recorder is not None:
            done = w.success and int(stages[-END_TICKS:].max()) >= w.task.max_stage and plan.reachable
            stored = recorder.stop_episode(discard=not (done or keep_failed)).index
        clamped = sum(fo.health()["clamped"] for _, fo in self.pairs) - clamped0
        return EpisodeResult(
            task=w.task.name,
            seed=int(seed),
            ticks=ticks,
            success=bool(w.success),
            max_stage=int(w.max_stage_reached),
            final_stage=int(w.stage),
            stage_names=tuple(w.task.stages),
            stages=stages,
            reachable=plan.reachable,
            ik_error_m={k: round(v, 6) for k, v in plan.ik_error.items()},
            sim_s=float(self.clock.now() - t0),
            wall_s=time.perf_counter() - wall0,
            frames=frames,
            clamped=int(clamped),
            object_poses={k: [round(float(x), 6) for x in v] for k, v in w.object_poses.items()},
            stored_index=stored,
        )

    def _record(self, rec: Any, t: float, obs: list, leaders: list, sent: list, reads: list) -> None:
        for (ld, fo), o, s, cmd in zip(self.pairs, obs, leaders, sent):
            rec.update_joints(ld.name, s)
            rec.update_joints(fo.name, o)
            rec.update_command(fo.name, cmd, t)
        for c, r in zip(self.cameras, reads):
            rec.update_frame(c.name, r.frame)
        # Lockstep: simulated time stands still while the writer catches up, so no frame
        # is ever dropped for lack of writer time.
        limit = rec.config.max_pending_frames - len(self.cameras)
        while rec.pending_frames > limit and rec.error is None:
            time.sleep(0.002)
        rec.tick(t)
