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


@dataclass
class Knobs:
    compile: Literal["auto", "on", "off"] = field("auto", "an enum whose words YAML reads as booleans")
    name: str = field("x", "free text")
    flag: bool = field(False, "a boolean")
    n: int = field(1, "an integer")
    lr: float = field(0.1, "a float")
    clip: float | None = field(1.0, "optional float")
    size: tuple[int, int] | None = field(None, "optional pair")
    tags: list[str] = field(factory=list, help="words")


def test_override_values_take_the_type_of_their_field():
    over = [
        "compile=off",
        "name=yes",
        "flag=on",
        "n=7",
        "lr=1e-4",
        "clip=null",
        "size=[96, 128]",
        "tags=[on, 'no', 12]",
    ]
    cfg = from_dict(Knobs, apply_overrides({}, over, Knobs))
    assert (cfg.compile, cfg.name, cfg.flag, cfg.n, cfg.lr, cfg.clip, cfg.size, cfg.tags) == (
        "off",
        "yes",
        True,
        7,
        1e-4,
        None,
        (96, 128),
        ["on", "no", "12"],
    )
    cfg = from_dict(
        Knobs, apply_overrides({}, ["compile=on", "name=123", "name='quoted'", "flag=false"], Knobs)
    )
    assert (cfg.compile, cfg.name, cfg.flag) == ("on", "quoted", False)
    # a word the field does not take is still an error that names it
    with pytest.raises(ConfigError, match=r"'offf' is not one of 'auto', 'on', 'off'"):
        from_dict(Knobs, apply_overrides({}, ["compile=offf"], Knobs))
    with pytest.raises(ConfigError, match="expected an integer, got 'many'"):
        from_dict(Knobs, apply_overrides({}, ["n=many"], Knobs))
    # without a schema, values are YAML as before
    assert apply_overrides({}, ["a=off", "b=[1, 2]"]) == {"a": False, "b": [1, 2]}


@dataclass
class Slot:
    name: str = field(help="slot name")
    port: str = field("", "port")
    fault_scenario: str = field("", "fault")


@dataclass
class Station:
    name: str = field("st", "station name")
    slots: list[Slot] = field(factory=list, help="slots")
    inner: Inner = field(factory=Inner, help="inner")


STATION = {"slots": [{"name": "left", "port": "/dev/a"}, {"name": "right", "port": "/dev/b"}]}


def test_overrides_reach_list_items_by_index_or_name(tmp_path):
    data = apply_overrides(
        STATION,
        ["slots.0.port=/dev/ttyUSB0", "slots.right.fault_scenario=overload_gripper_at_2s", "inner.names.1=z"],
        Station,
    )
    cfg = from_dict(Station, data)
    assert [s.port for s in cfg.slots] == ["/dev/ttyUSB0", "/dev/b"]
    assert [s.fault_scenario for s in cfg.slots] == ["", "overload_gripper_at_2s"]
    assert cfg.inner.names == ["a", "z"]  # a default list, materialized to be indexed
    assert STATION["slots"][0]["port"] == "/dev/a"  # the input is not modified
    p = tmp_path / "st.yaml"
    p.write_text("slots: [{name: left}, {name: right}]\n")
    assert load_yaml(Station, p, ["slots.left.port=/dev/x"]).slots[0].port == "/dev/x"
    # a whole item
    cfg = from_dict(Station, apply_overrides(STATION, ["slots.1={name: r2, port: /dev/c}"], Station))
    assert (cfg.slots[1].name, cfg.slots[1].port) == ("r2", "/dev/c")


@pytest.mark.parametrize(
    "override, words",
    [
        ("slots.2.port=/dev/x", ["'slots.2'", "no item 2", "0 left", "1 right"]),
        ("slots.middle.port=/dev/x", ["'slots.middle'", "no item 'middle'", "0 left", "1 right"]),
        ("slots.0.prot=/dev/x", ["'slots.0.prot'", "unknown key 'prot'", "fault_scenario, name, port"]),
        ("slot.0.port=/dev/x", ["'slot'", "unknown key 'slot'", "inner, name, slots"]),
        ("name.x=1", ["'name.x'", "'name' is a str"]),
    ],
)
def test_bad_override_paths_are_one_line_naming_what_exists(override, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(STATION, [override], Station)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)
