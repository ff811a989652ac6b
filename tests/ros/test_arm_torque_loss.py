"""A follower whose servos reboot (a brown-out: torque off, silent on the wire) while its arm
node is active: the node notices it in its health read, publishes the fault on the latched
~/fault topic (teleop pauses and refuses to ramp a limp arm), and goes to its safe state.
One arm node process (real rclpy), no graph."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.mark.timeout(90)
def test_torque_lost_on_an_active_follower_is_a_published_fault(tmp_path, ros_tools):
    from std_msgs.msg import String

    from duet_ros.runtime import LATCHED

    up = ros_tools.DuetUp(
        "bringup",
        "--only",
        "right_follower",
        "--set",
        "right_follower:fault_scenario=reboot_at_2s",
        log_dir=tmp_path / "logs",
    )
    probe = ros_tools.make_probe(["right_follower"], ["right_follower"], [])
    faults: list[str] = []
    probe.node.create_subscription(String, "/right_follower/fault", lambda m: faults.append(m.data), LATCHED)
    try:
        probe.wait_for(lambda: any(faults), 40, "a fault from right_follower (latched)")
        diag = probe.wait_for(
            lambda: next(
                (
                    d
                    for d in probe.diag["duet/arm/right_follower"]
                    if d[1] == b"\x02" and "safe state (" in d[2]
                ),
                None,
            ),
            10,
            "the safe state in diagnostics",
        )
    except AssertionError as e:
        probe.close()
        up.stop()
        pytest.fail(f"{e}\n{up.logs()}")
    probe.close()
    up.stop()
    fault = next(f for f in faults if f)
    assert "right_follower" in fault and "torque off on servo IDs 1, 2, 3, 4, 5, 6, 7, 8, 9" in fault, fault
    assert "\n" not in fault
    assert "torque off on servo" in diag[2] and "arm in its safe state (torque off)" in diag[2], diag[2]
    log = (tmp_path / "logs" / "right_follower.log").read_text(errors="replace")
    assert len(re.findall(r"safe state \(torque lost\)", log)) == 1, log
    assert "safe state (torque lost): torque off" in log and "NOT reached" not in log, log
