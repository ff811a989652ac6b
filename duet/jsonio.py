"""Plain JSON data from what duet produces: the one sanitiser for metadata, health and reports."""

from __future__ import annotations

import dataclasses
import enum
import math
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(obj: Any, finite: bool = False) -> Any:
    """`obj` as JSON types (dict with str keys, list, str, int, float, bool, None).

    dicts -> str keys; lists, tuples -> lists; sets -> sorted lists; numpy arrays and scalars
    -> Python; Path -> str; enums -> their value; dataclasses -> dicts of their fields; any
    other object -> str(obj). finite=True: NaN and +-inf -> None (strict JSON, e.g. reports
    read by other tools); else they stay floats (Python's json writes NaN / Infinity).
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if not finite or math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v, finite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, finite) for v in obj]
    if isinstance(obj, (set, frozenset)):
        try:
            items = sorted(obj)
        except TypeError:  # mixed types
            items = sorted(obj, key=str)
        return [jsonable(v, finite) for v in items]
    if isinstance(obj, (np.ndarray, np.generic)):
        return jsonable(obj.tolist(), finite)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return jsonable(obj.value, finite)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name), finite) for f in dataclasses.fields(obj)}
    return str(obj)
