"""The duet episode layout (version 1): names, shapes and codecs of every array.

A store is one zarr v3 group (see data/README.md for the full description)::

    zarr.json                      attributes {"duet": {"layout": "duet.episodes", "version": 1, "spec": {...}}}
    data/t                         float64 (T,)        tick time, process monotonic clock (s)
    data/<arm>.position            float32 (T, n)      joint positions (rad; gripper normalized 0..1)
    data/<arm>.velocity            float32 (T, n)
    data/<arm>.effort              float32 (T, n)
    data/<arm>.stamp               float64 (T,)        capture time of the sample used at this tick
    data/<arm>.age                 float32 (T,)        t - stamp (s)
    data/action                    float32 (T, A)      follower commands, concatenated in rig pair order
    data/action.stamp              float64 (T, F)      time each follower's command was issued
    data/action.age                float32 (T, F)
    data/<cam>.color               uint8   (T, H, W, 3) RGB, one frame per chunk (JPEG or zstd)
    data/<cam>.depth               uint16  (T, H, W)   optional, zstd (lossless)
    data/<cam>.stamp / .age / .index                    capture time, age at the tick, device frame index
    meta/episode_ends              int64   (E,)        exclusive end of each episode (ReplayBuffer convention)
    meta (attributes)              {"episodes": [per-episode metadata], "rigs": {hash: rig config}}
    meta/recording (attributes)    the episode being recorded, if any (crash recovery marker)

Readers trust only meta/episode_ends: data arrays may be longer (an episode in progress).
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

from duet.config import field, from_dict, to_dict
from duet.errors import ConfigError

LAYOUT_NAME = "duet.episodes"
LAYOUT_VERSION = 1

DEFAULT_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")

# Chunk length (time steps) of the low-dimensional arrays. Images use one frame per chunk.
LOWDIM_CHUNK = 1024
EPISODE_ENDS_CHUNK = 1024


@dataclass
class ArmSpec:
    name: str = field(help="arm name, e.g. left_follower")
    role: Literal["leader", "follower"] = field("follower", help="leader or follower")
    joints: list[str] = field(list(DEFAULT_JOINTS), help="joint names in order, gripper last")

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ConfigError(f"arm name {self.name!r}: use letters, digits and _ only")
        if not self.joints:
            raise ConfigError(f"arm {self.name!r}: needs at least one joint")


@dataclass
class CameraSpec:
    name: str = field(help="camera name, e.g. cam_high")
    width: int = field(640, help="image width, px")
    height: int = field(480, help="image height, px")
    depth: bool = field(False, help="also store depth (uint16, lossless)")
    max_age_s: float = field(0.1, help="a frame older than this at a tick counts as stale")

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ConfigError(f"camera name {self.name!r}: use letters, digits and _ only")
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(f"camera {self.name!r}: width and height must be > 0")


@dataclass
class DatasetSpec:
    """What a store holds: arms, cameras, rates and image encoding. Fixed at creation."""

    rate_hz: float = field(50.0, help="recording (tick) rate, Hz")
    arms: list[ArmSpec] = field(factory=list, help="recorded arms (leaders and followers)")
    followers: list[str] = field(
        factory=list,
        help="follower arms in rig pair order (defines action/state order); default: all followers",
    )
    cameras: list[CameraSpec] = field(factory=list, help="recorded cameras")
    image_codec: Literal["jpeg", "lossless"] = field("jpeg", help="jpeg (default) or lossless (zstd)")
    jpeg_quality: int = field(90, help="JPEG quality 1..100 for frames that arrive raw")
    arm_max_age_s: float = field(0.05, help="a joint sample older than this at a tick counts as stale")

    def __post_init__(self):
        if self.rate_hz <= 0:
            raise ConfigError(f"dataset spec: rate_hz must be > 0, got {self.rate_hz}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"dataset spec: jpeg_quality must be 1..100, got {self.jpeg_quality}")
        names = [a.name for a in self.arms] + [c.name for c in self.cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"dataset spec: name {dup[0]!r} is used twice")
        if not self.followers:
            self.followers = [a.name for a in self.arms if a.role == "follower"]
        arms = {a.name: a for a in self.arms}
        for f in self.followers:
            if f not in arms:
                raise ConfigError(f"dataset spec: follower {f!r} is not among the arms ({', '.join(arms)})")

    # ------------------------------------------------------------------ derived
    def arm(self, name: str) -> ArmSpec:
        for a in self.arms:
            if a.name == name:
                return a
        raise ConfigError(f"dataset spec: no arm named {name!r}")

    def camera(self, name: str) -> CameraSpec:
        for c in self.cameras:
            if c.name == name:
                return c
        raise ConfigError(f"dataset spec: no camera named {name!r} (have {', '.join(self.camera_names)})")

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def action_dim(self) -> int:
        return sum(len(self.arm(f).joints) for f in self.followers)

    @property
    def state_dim(self) -> int:
        return self.action_dim

    def lowdim_arrays(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per-step shape and dtype of every low-dimensional array."""
        out: dict[str, tuple[tuple[int, ...], str]] = {"t": ((), "float64")}
        for a in self.arms:
            n = len(a.joints)
            out[f"{a.name}.position"] = ((n,), "float32")
            out[f"{a.name}.velocity"] = ((n,), "float32")
            out[f"{a.name}.effort"] = ((n,), "float32")
            out[f"{a.name}.stamp"] = ((), "float64")
            out[f"{a.name}.age"] = ((), "float32")
        nf = len(self.followers)
        out["action"] = ((self.action_dim,), "float32")
        out["action.stamp"] = ((nf,), "float64")
        out["action.age"] = ((nf,), "float32")
        for c in self.cameras:
            out[f"{c.name}.stamp"] = ((), "float64")
            out[f"{c.name}.age"] = ((), "float32")
            out[f"{c.name}.index"] = ((), "int64")
        return out

    def image_arrays(self) -> dict[str, tuple[tuple[int, ...], str]]:
        out: dict[str, tuple[tuple[int, ...], str]] = {}
        for c in self.cameras:
            out[f"{c.name}.color"] = ((c.height, c.width, 3), "uint8")
            if c.depth:
                out[f"{c.name}.depth"] = ((c.height, c.width), "uint16")
        return out

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        return from_dict(cls, data, where="dataset spec")

    @classmethod
    def from_rig(cls, rig: Any, joints: dict[str, list[str]] | None = None, **kw: Any) -> DatasetSpec:
        """A spec for a hardware.rig.RigConfig. `joints` maps arm name -> joint names
        (default: the 7 ALOHA joints for every arm)."""
        joints = joints or {}
        arms = [ArmSpec(a.name, a.role, list(joints.get(a.name, DEFAULT_JOINTS))) for a in rig.arms]
        followers = [f for _, f in rig.pairs] or [a.name for a in rig.arms if a.role == "follower"]
        cams = [CameraSpec(c.name, c.width, c.height, bool(c.depth), float(c.max_age_s)) for c in rig.cameras]
        return cls(rate_hz=float(rig.control_rate_hz), arms=arms, followers=followers, cameras=cams, **kw)


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (rig configs, calibrations)."""
    text = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- JPEG as a zarr v3 codec


def jpeg_size(buf: bytes) -> tuple[int, int, int]:
    """(height, width, components) from a JPEG's SOF marker, without decoding.

    Raises ValueError for data that is not a baseline/progressive JPEG."""
    mv = memoryview(buf)
    if len(mv) < 4 or mv[0] != 0xFF or mv[1] != 0xD8:
        raise ValueError("not a JPEG (no SOI marker)")
    i = 2
    n = len(mv)
    while i + 4 <= n:
        if mv[i] != 0xFF:
            raise ValueError(f"corrupt JPEG marker at byte {i}")
        marker = mv[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", mv[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 10 > n:
                break
            h, w = struct.unpack(">HH", mv[i + 5 : i + 9])
            return int(h), int(w), int(mv[i + 9])
        i += 2 + length
    raise ValueError("JPEG has no frame header (SOF)")


JPEG_CODEC_NAME = "numcodecs.imagecodecs_jpeg"
_registered = False


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """One image per chunk, stored as a plain JPEG file (baseline, RGB or gray).

    The chunk bytes are exactly a .jpg file, so frames that arrive as JPEG are stored
    as they came. Configuration is compatible with imagecodecs.numcodecs.Jpeg."""

    level: int = 90
    is_fixed_size = False

    def __init__(self, *, level: int = 90, **_ignored: Any) -> None:
        object.__setattr__(self, "level", int(level))

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        _, cfg = parse_named_configuration(data, JPEG_CODEC_NAME, require_configuration=False)
        return cls(**cast(dict[str, Any], cfg or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"name": JPEG_CODEC_NAME, "configuration": {"level": self.level}}

    def validate(self, *, shape, dtype, chunk_grid) -> None:  # noqa: ANN001
        if dtype.to_native_dtype() != np.dtype("uint8"):
            raise ValueError("the JPEG codec stores uint8 images only")

    async def _decode_single(self, chunk_bytes, chunk_spec):  # noqa: ANN001
        import imagecodecs

        img = imagecodecs.jpeg8_decode(chunk_bytes.to_bytes())
        want = chunk_spec.shape
        if img.ndim == 2 and len(want) >= 3 and want[-1] == 3:
            img = np.repeat(img[..., None], 3, axis=-1)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(img.reshape(want))

    async def _encode_single(self, chunk_array, chunk_spec):  # noqa: ANN001
        import imagecodecs

        arr = np.asarray(chunk_array.as_ndarray_like())
        img = arr.reshape(arr.shape[-3:] if arr.shape[-1] in (1, 3) and arr.ndim >= 3 else arr.shape[-2:])
        return chunk_spec.prototype.buffer.from_bytes(imagecodecs.jpeg8_encode(img, level=self.level))

    def compute_encoded_size(self, input_byte_length: int, chunk_spec) -> int:  # noqa: ANN001
        raise NotImplementedError


def register_codecs() -> None:
    """Register the JPEG chunk codec with zarr (idempotent). Normally done by the
    'zarr.codecs' entry point of the duet package, so plain zarr reads JPEG arrays."""
    global _registered
    if _registered:
        return
    import zarr.registry

    try:
        zarr.registry.get_codec_class(JPEG_CODEC_NAME)
    except KeyError:
        zarr.registry.register_codec(JPEG_CODEC_NAME, JpegCodec)
    _registered = True
