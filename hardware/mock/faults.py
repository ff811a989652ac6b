"""Fault injection for the wire-level fake Dynamixel bus.

A FaultInjector holds FaultRules and decides, for every instruction packet the fake bus
receives (a "transaction"), which faults fire. A rule fires on a schedule (from a time
after the bus's first transaction, or from a transaction number, optionally a limited
number of times or for a duration) and/or at a rate (probability per transaction, drawn from
a seeded RNG so runs are reproducible).

Fault kinds and their effect on the wire:
- no_reply:       the target servo misses the instruction (line noise): no effect, no status packet.
- bad_crc:        the target servo's status packet arrives with a corrupted CRC.
- hardware_error: the target servo latches Hardware Error Status `flags` (alert bit 0x80 in
                  every status packet from then on; torque off if its Shutdown register says so),
                  until it is rebooted.
- reboot:         the target servo reboots before handling the packet (a brown-out): torque off,
                  RAM back to defaults, hardware error cleared.
- latency:        the replies of this transaction arrive `latency_s` later.

Named scenarios (SCENARIOS) are what the rig's ArmSlot.fault_scenario selects:
"name", "name:param", or several joined with "+" (e.g. "lossy_1pct+slow_bus:1").
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from duet.errors import ConfigError

from ..dynamixel.errors import HARDWARE_ERROR_BITS

FAULT_KINDS = ("no_reply", "bad_crc", "hardware_error", "reboot", "latency")
TARGETS = ("one", "all", "last")


@dataclass
class FaultRule:
    kind: str  # one of FAULT_KINDS
    rate: float = 1.0  # probability per eligible transaction (1.0: every one)
    ids: tuple[int, ...] = ()  # servos hit; empty: chosen by `target`
    target: str = (
        "one"  # without ids: "one" addressed servo at random, "all" addressed, "last" (highest ID on the bus)
    )
    start_s: float = 0.0  # active from this many seconds after the bus's first transaction
    start_transaction: int = 0  # and from this transaction number (1 = the first)
    count: int | None = None  # fire at most this many times (None: no limit)
    duration_s: float | None = None  # active for this long after start_s (None: forever)
    flags: tuple[str, ...] = ("overload",)  # hardware_error: Hardware Error Status flags to latch
    latency_s: float = 0.0  # latency: added delay of the replies

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"fault kind {self.kind!r} unknown (valid: {', '.join(FAULT_KINDS)})")
        if not 0.0 <= self.rate <= 1.0:
            raise ConfigError(f"fault {self.kind}: rate must be within 0..1, got {self.rate}")
        if self.target not in TARGETS:
            raise ConfigError(
                f"fault {self.kind}: target {self.target!r} unknown (valid: {', '.join(TARGETS)})"
            )
        if self.count is not None and self.count < 1:
            raise ConfigError(f"fault {self.kind}: count must be >= 1 or None")
        if self.latency_s < 0:
            raise ConfigError(f"fault {self.kind}: latency_s must be >= 0")
        valid = set(HARDWARE_ERROR_BITS.values())
        bad = [f for f in self.flags if f not in valid]
        if bad:
            raise ConfigError(
                f"fault {self.kind}: flag {bad[0]!r} unknown (valid: {', '.join(sorted(valid))})"
            )
        self.ids = tuple(int(i) for i in self.ids)


@dataclass
class FaultActions:
    """What the fake bus must do for one transaction."""

    deaf: set[int] = field(default_factory=set)  # servos that miss the instruction
    bad_crc: set[int] = field(default_factory=set)  # servos whose status packet is corrupted
    hardware_errors: dict[int, tuple[str, ...]] = field(default_factory=dict)
    reboot: set[int] = field(default_factory=set)
    latency_s: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.deaf or self.bad_crc or self.hardware_errors or self.reboot or self.latency_s)


class FaultInjector:
    """Decides the faults of each transaction. `fired` counts firings per kind."""

    def __init__(self, rules: Sequence[FaultRule] = (), seed: int = 0, name: str = ""):
        self.rules = list(rules)
        self.seed = seed
        self.name = name or "+".join(r.kind for r in self.rules) or "none"
        self._rng = random.Random(seed)
        self._fired_per_rule = [0] * len(self.rules)
        self.fired: Counter[str] = Counter()
        self._bus_ids: tuple[int, ...] = ()

    def add(self, rule: FaultRule) -> None:
        self.rules.append(rule)
        self._fired_per_rule.append(0)

    def bind(self, servo_ids: Sequence[int]) -> None:
        """Called by the fake bus with the IDs on it ("last" resolves to the highest)."""
        self._bus_ids = tuple(sorted(servo_ids))

    def decide(self, transaction: int, t_s: float, addressed: Sequence[int]) -> FaultActions:
        """Faults of transaction number `transaction` (1-based), `t_s` seconds after the
        bus's first transaction, addressed to servo IDs `addressed`."""
        actions = FaultActions()
        for k, rule in enumerate(self.rules):
            if transaction < rule.start_transaction or t_s < rule.start_s:
                continue
            if rule.duration_s is not None and t_s > rule.start_s + rule.duration_s:
                continue
            if rule.count is not None and self._fired_per_rule[k] >= rule.count:
                continue
            targets = self._targets(rule, addressed)
            if not targets and rule.kind != "latency":
                continue
            if rule.rate < 1.0 and self._rng.random() >= rule.rate:
                continue
            self._fired_per_rule[k] += 1
            self.fired[rule.kind] += 1
            if rule.kind == "no_reply":
                actions.deaf.update(targets)
            elif rule.kind == "bad_crc":
                actions.bad_crc.update(targets)
            elif rule.kind == "hardware_error":
                for i in targets:
                    actions.hardware_errors[i] = rule.flags
            elif rule.kind == "reboot":
                actions.reboot.update(targets)
            elif rule.kind == "latency":
                actions.latency_s += rule.latency_s
        return actions

    def _targets(self, rule: FaultRule, addressed: Sequence[int]) -> list[int]:
        if rule.kind in ("hardware_error", "reboot"):
            # State faults hit the servo whatever the packet addresses.
            if rule.ids:
                return [i for i in rule.ids if i in self._bus_ids] if self._bus_ids else list(rule.ids)
            if rule.target == "last":
                return [self._bus_ids[-1]] if self._bus_ids else []
            if rule.target == "all":
                return list(self._bus_ids)
            return [self._rng.choice(self._bus_ids)] if self._bus_ids else []
        if rule.kind == "latency":
            return list(addressed)
        if rule.ids:
            return [i for i in addressed if i in rule.ids]
        if not addressed:
            return []
        if rule.target == "all":
            return list(addressed)
        if rule.target == "last":
            last = self._bus_ids[-1] if self._bus_ids else max(addressed)
            return [last] if last in addressed else []
        return [self._rng.choice(list(addressed))]


# ----------------------------------------------------------------------------- scenarios


def _number(name: str, param: str | None, default: float, what: str) -> float:
    if param is None or param == "":
        return default
    try:
        return float(param)
    except ValueError:
        raise ConfigError(
            f"fault scenario '{name}:{param}': the parameter is {what}, e.g. {name}:{default:g}"
        ) from None


def _servo_id(name: str, param: str | None) -> tuple[int, ...]:
    if param is None or param == "":
        return ()
    try:
        return (int(param),)
    except ValueError:
        raise ConfigError(
            f"fault scenario '{name}:{param}': the parameter is a servo ID, e.g. {name}:9"
        ) from None


def _lossy(pct: float | None) -> Callable[[str | None], list[FaultRule]]:
    def make(param: str | None) -> list[FaultRule]:
        p = pct if pct is not None else _number("lossy", param, 1.0, "a loss rate in percent")
        return [FaultRule("no_reply", rate=p / 100.0)]

    return make


def _bad_crc(pct: float | None) -> Callable[[str | None], list[FaultRule]]:
    def make(param: str | None) -> list[FaultRule]:
        p = pct if pct is not None else _number("bad_crc", param, 1.0, "a corruption rate in percent")
        return [FaultRule("bad_crc", rate=p / 100.0)]

    return make


def _dead_servo(param: str | None) -> list[FaultRule]:
    ids = _servo_id("dead_servo", param)
    if not ids:
        raise ConfigError("fault scenario 'dead_servo' needs a servo ID, e.g. dead_servo:3")
    return [FaultRule("no_reply", ids=ids)]


def _overload_gripper(param: str | None) -> list[FaultRule]:
    ids = _servo_id("overload_gripper_at_2s", param)
    return [FaultRule("hardware_error", ids=ids, target="last", start_s=2.0, count=1, flags=("overload",))]


def _overload_at(param: str | None) -> list[FaultRule]:
    t = _number("overload_at", param, 2.0, "the time in seconds after the bus's first transaction")
    return [FaultRule("hardware_error", target="last", start_s=t, count=1, flags=("overload",))]


def _overheat(param: str | None) -> list[FaultRule]:
    ids = _servo_id("overheat_at_2s", param)
    return [FaultRule("hardware_error", ids=ids, target="last", start_s=2.0, count=1, flags=("overheating",))]


def _reboot(param: str | None) -> list[FaultRule]:
    ids = _servo_id("reboot_at_2s", param)
    # Without an ID: a brown-out reboots every servo on the bus.
    return [FaultRule("reboot", ids=ids, target="all", start_s=2.0, count=1)]


def _slow_bus(param: str | None) -> list[FaultRule]:
    ms = _number("slow_bus", param, 2.0, "the added latency in ms")
    return [FaultRule("latency", latency_s=ms / 1000.0)]


SCENARIOS: dict[str, Callable[[str | None], list[FaultRule]]] = {
    "none": lambda param: [],
    "lossy": _lossy(None),  # lossy:PCT, default 1 %
    "lossy_1pct": _lossy(1.0),
    "lossy_10pct": _lossy(10.0),
    "bad_crc": _bad_crc(None),  # bad_crc:PCT, default 1 %
    "bad_crc_1pct": _bad_crc(1.0),
    "dead_servo": _dead_servo,  # dead_servo:ID: that servo never answers
    "overload_gripper_at_2s": _overload_gripper,  # :ID, default the highest ID (the gripper)
    "overload_at": _overload_at,  # :SECONDS, the highest ID (the gripper), default 2 s
    "overheat_at_2s": _overheat,  # :ID, default the highest ID
    "reboot_at_2s": _reboot,  # :ID, default every servo (brown-out)
    "slow_bus": _slow_bus,  # slow_bus:MS, default 2 ms per transaction
}
SCENARIO_HELP: dict[str, str] = {
    "none": "no faults",
    "lossy": "lossy[:PCT] - PCT % of transactions lose one servo's packet (default 1)",
    "lossy_1pct": "1 % of transactions lose one servo's packet",
    "lossy_10pct": "10 % of transactions lose one servo's packet",
    "bad_crc": "bad_crc[:PCT] - PCT % of transactions get one status packet with a bad CRC",
    "bad_crc_1pct": "1 % of transactions get one status packet with a bad CRC",
    "dead_servo": "dead_servo:ID - that servo never answers",
    "overload_gripper_at_2s": "overload_gripper_at_2s[:ID] - overload error latched at 2 s (default: highest ID)",
    "overload_at": "overload_at[:S] - the highest ID (the gripper) latches an overload error S s after the bus "
    "starts (default 2)",
    "overheat_at_2s": "overheat_at_2s[:ID] - overheating error latched at 2 s (default: highest ID)",
    "reboot_at_2s": "reboot_at_2s[:ID] - the servo (default: all, a brown-out) reboots at 2 s: torque off",
    "slow_bus": "slow_bus[:MS] - every reply MS ms late (default 2)",
}


def parse_scenario(spec: str | None, seed: int = 0) -> FaultInjector:
    """ "name", "name:param" or "a+b:param" -> FaultInjector. Empty or None means "none".
    Raises ConfigError (one line, listing the valid names) for an unknown name."""
    spec = (spec or "").strip()
    rules: list[FaultRule] = []
    if not spec:
        return FaultInjector([], seed=seed, name="none")
    for part in spec.split("+"):
        part = part.strip()
        name, _, param = part.partition(":")
        name = name.strip()
        if name not in SCENARIOS:
            raise ConfigError(
                f"fault scenario {name!r} unknown (valid: {', '.join(sorted(SCENARIOS))}; "
                f"'name:param' and 'a+b' also work)"
            )
        rules.extend(SCENARIOS[name](param.strip() if _ else None))
    return FaultInjector(rules, seed=seed, name=spec)
