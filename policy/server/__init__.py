"""Policy server: action-chunked inference streaming safe joint commands at the control rate.

ROS-free core. A ROS node or a plain loop (run_loop) drives a PolicyServer:
observe(...) the latest readings, tick(now) once per control period, send the command.
"""

from duet.policy.server.config import ServerConfig
from duet.policy.server.loop import LoopReport, action_names, run_loop, safety_limits, split_command
from duet.policy.server.observation import ObservationBuilder, ObsSnapshot, ObsStatus
from duet.policy.server.scheduler import (
    ChunkRules,
    ChunkTimeError,
    EnsembleBuffer,
    GridChunk,
    InvalidChunk,
    to_grid,
)
from duet.policy.server.server import PolicyServer, ServerEvent, TickResult
from duet.policy.server.stats import ServerStats
from duet.policy.server.worker import InferenceResult, InferenceWorker

__all__ = [
    "ChunkRules",
    "ChunkTimeError",
    "EnsembleBuffer",
    "GridChunk",
    "InferenceResult",
    "InferenceWorker",
    "InvalidChunk",
    "LoopReport",
    "ObsSnapshot",
    "ObsStatus",
    "ObservationBuilder",
    "PolicyServer",
    "ServerConfig",
    "ServerEvent",
    "ServerStats",
    "TickResult",
    "action_names",
    "run_loop",
    "safety_limits",
    "split_command",
    "to_grid",
]
