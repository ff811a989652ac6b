from dataclasses import dataclass
from typing import Literal

import pytest

from duet.config import apply_overrides, field, flatten, from_dict, load_yaml, to_dict, unflatten
from duet.errors import ConfigError


@dataclass
class Inner:
    gain: float = field(1.0, "gain")
    names: list[str] = field(["a", "b"], "names")


@dataclass
class Outer:
    rate_hz: float = field(50.0, "rate")
    mode: Literal["hold", "ramp"] = field("hold", "mode")
    inner: Inner = field(factory=Inner, help="inner")
    path: str | None = field(None, "optional path")

    def __post_init__(self):
        if self.rate_hz <= 0:
            raise ConfigError("rate_hz must be > 0")


def test_round_trip_through_ros_params():
    cfg = from_dict(Outer, {"rate_hz": 30, "inner": {"gain": 2, "names": ["x"]}})
    assert cfg.rate_hz == 30.0 and cfg.inner.gain == 2.0 and cfg.inner.names == ["x"]
    flat = flatten(cfg)
    assert flat["inner.gain"] == 2.0 and flat["path"] == ""
    assert from_dict(Outer, unflatten(flat, Outer)) == cfg


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown key 'rat_hz'"):
        from_dict(Outer, {"rat_hz": 1})
    with pytest.raises(ConfigError, match=r"Outer.mode: 'jump' is not one of"):
        from_dict(Outer, {"mode": "jump"})
    with pytest.raises(ConfigError, match="rate_hz must be > 0"):
        from_dict(Outer, {"rate_hz": -1})
    with pytest.raises(ConfigError, match="expected a number"):
        from_dict(Outer, {"rate_hz": "fast"})


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rate_hz: 20\ninner: {gain: 3}\n")
    cfg = load_yaml(Outer, p, ["inner.names=[q, r]", "mode=ramp"])
    assert (cfg.rate_hz, cfg.mode, cfg.inner.names, cfg.inner.gain) == (20.0, "ramp", ["q", "r"], 3.0)
    assert to_dict(cfg)["inner"] == {"gain": 3.0, "names": ["q", "r"]}
    assert apply_overrides({}, ["a.b=1"]) == {"a": {"b": 1}}
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(Outer, tmp_path / "missing.yaml")
