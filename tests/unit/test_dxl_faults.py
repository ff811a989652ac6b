"""Fault rules and scenario parsing (hardware/mock/faults.py)."""

import pytest

from duet.errors import ConfigError
from duet.hardware.mock.faults import SCENARIOS, FaultInjector, FaultRule, parse_scenario


def test_every_scenario_parses():
    for name in SCENARIOS:
        spec = f"{name}:3" if name == "dead_servo" else name
        inj = parse_scenario(spec)
        assert isinstance(inj, FaultInjector)
    assert parse_scenario("").rules == [] and parse_scenario(None).rules == []


def test_unknown_scenario_lists_valid_names():
    with pytest.raises(ConfigError) as e:
        parse_scenario("lossy_99pct")
    msg = str(e.value)
    assert "\n" not in msg and "'lossy_99pct'" in msg
    for name in ("none", "lossy_1pct", "bad_crc_1pct", "overload_gripper_at_2s", "reboot_at_2s", "slow_bus"):
        assert name in msg


def test_parameters():
    assert parse_scenario("lossy:5").rules[0].rate == pytest.approx(0.05)
    assert parse_scenario("lossy_10pct").rules[0].rate == pytest.approx(0.10)
    assert parse_scenario("slow_bus:3").rules[0].latency_s == pytest.approx(0.003)
    assert parse_scenario("overload_gripper_at_2s:7").rules[0].ids == (7,)
    assert parse_scenario("dead_servo:4").rules[0].ids == (4,)
    combo = parse_scenario("lossy_1pct+slow_bus:1")
    assert [r.kind for r in combo.rules] == ["no_reply", "latency"]
    with pytest.raises(ConfigError, match="percent"):
        parse_scenario("lossy:abc")
    with pytest.raises(ConfigError, match="servo ID"):
        parse_scenario("dead_servo")
    with pytest.raises(ConfigError, match="rate"):
        FaultRule("no_reply", rate=1.5)
    with pytest.raises(ConfigError, match="flag"):
        FaultRule("hardware_error", flags=("melted",))


def _run(inj, n=2000, dt=0.01, addressed=(1, 2, 3)):
    fired = []
    for k in range(1, n + 1):
        a = inj.decide(k, k * dt, addressed)
        fired.append(a)
    return fired


def test_rate_is_seeded_and_close_to_nominal():
    a = _run(parse_scenario("lossy:10", seed=7))
    b = _run(parse_scenario("lossy:10", seed=7))
    c = _run(parse_scenario("lossy:10", seed=8))
    hits = [bool(x.deaf) for x in a]
    assert hits == [bool(x.deaf) for x in b]
    assert hits != [bool(x.deaf) for x in c]
    assert 120 < sum(hits) < 280  # 10 % of 2000, loosely
    assert all(len(x.deaf) <= 1 and x.deaf <= {1, 2, 3} for x in a)


def test_schedule_fires_once_at_time_on_last_servo():
    inj = parse_scenario("overload_gripper_at_2s")
    inj.bind([1, 2, 9])
    out = _run(inj, n=400, dt=0.01, addressed=(1,))
    when = [k + 1 for k, a in enumerate(out) if a.hardware_errors]
    assert when == [200]  # first transaction at t >= 2 s
    assert out[199].hardware_errors == {9: ("overload",)}
    assert inj.fired["hardware_error"] == 1


def test_schedule_by_transaction_count_and_duration():
    inj = FaultInjector(
        [
            FaultRule("no_reply", ids=(2,), start_transaction=5, count=2),
            FaultRule("latency", latency_s=0.01, start_s=1.0, duration_s=0.5),
        ]
    )
    out = _run(inj, n=200, dt=0.01, addressed=(1, 2))
    assert [k + 1 for k, a in enumerate(out) if a.deaf] == [5, 6]
    assert all(a.deaf == {2} for a in out[4:6])
    lat = [k + 1 for k, a in enumerate(out) if a.latency_s]
    assert lat[0] == 100 and lat[-1] == 150


def test_ids_not_addressed_are_not_hit():
    inj = FaultInjector([FaultRule("bad_crc", ids=(5,))])
    assert not inj.decide(1, 0.0, [1, 2])
    assert inj.decide(2, 0.0, [1, 5]).bad_crc == {5}
