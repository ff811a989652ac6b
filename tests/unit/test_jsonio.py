import dataclasses
import enum
import json
import math
from pathlib import Path

import numpy as np

from duet.clock import utc_now_iso
from duet.jsonio import jsonable


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: np.float32
    where: Path


def test_jsonable_gives_plain_json_types():
    obj = {
        1: np.float32(1.5),
        "t": (np.int64(3), {3, 1}),
        "a": np.arange(3),
        "b": np.bool_(True),
        "p": Path("/x"),
        "c": Color.RED,
        "d": Point(np.float32(2.0), Path("y")),
        "o": object,
    }
    out = jsonable(obj)
    assert out == {
        "1": 1.5,
        "t": [3, [1, 3]],
        "a": [0, 1, 2],
        "b": True,
        "p": "/x",
        "c": "red",
        "d": {"x": 2.0, "where": "y"},
        "o": str(object),
    }
    assert json.loads(json.dumps(out)) == out


def test_jsonable_finite_turns_nan_and_inf_into_none():
    obj = {"n": float("nan"), "a": np.array([1.0, np.inf]), "s": np.float64(-np.inf)}
    assert jsonable(obj, finite=True) == {"n": None, "a": [1.0, None], "s": None}
    kept = jsonable(obj)
    assert math.isnan(kept["n"]) and kept["a"][1] == math.inf


def test_utc_now_iso_is_seconds_with_utc_offset():
    s = utc_now_iso()
    assert len(s) == 25 and s[10] == "T" and s.endswith("+00:00")
