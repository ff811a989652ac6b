"""`-o` overrides of a rig (shared with `duet train --set`: duet.config.apply_overrides): list items
by index or by arm name, per-arm fault scenarios, and one-line errors for keys that do not exist."""

import json

import pytest

from duet.cli import main
from duet.hardware.rig import load_rig

pytestmark = pytest.mark.timeout(120)


def test_arms_by_index_and_by_name():
    rig = load_rig(
        "aloha",
        [
            "arms.0.port=/dev/ttyUSB0",
            "arms.right_follower.fault_scenario=overload_gripper_at_2s",
            "arms.left_follower.on_disconnect=hold",
            "cameras.cam_high.depth=yes",
        ],
    )
    assert rig.arms[0].name == "left_leader" and rig.arms[0].port == "/dev/ttyUSB0"
    assert rig.arm("right_follower").fault_scenario == "overload_gripper_at_2s"
    assert rig.arm("left_follower").on_disconnect == "hold"
    assert rig.camera("cam_high").depth is True
    assert [a.fault_scenario for a in rig.arms if a.name != "right_follower"] == ["", "", ""]


def test_hw_info_takes_per_arm_overrides(tmp_path, capsys):
    argv = [
        "hw",
        "info",
        "--rig",
        "aloha",
        "--mock",
        "--arm",
        "right_follower",
        "--json",
        "-o",
        f"calibration_dir={tmp_path}",
        "-o",
        "arms.0.port=/dev/ttyUSB0",
        "-o",
        "arms.right_follower.fault_scenario=overload_gripper_at_2s",
    ]
    assert main(argv) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"right_follower"}


@pytest.mark.parametrize(
    "override, words",
    [
        ("arms.7.port=/dev/ttyUSB0", ["'arms.7'", "no item 7", "0 left_leader", "3 right_follower"]),
        (
            "arms.left_folower.port=/dev/ttyUSB0",
            ["'arms.left_folower'", "no item 'left_folower'", "2 left_follower"],
        ),
        ("arms.0.prot=/dev/ttyUSB0", ["'arms.0.prot'", "unknown key 'prot'", "fault_scenario", "port"]),
        ("arm.0.port=/dev/ttyUSB0", ["'arm'", "unknown key 'arm'", "arms", "cameras"]),
        ("arms.0.role=boss", ["'boss' is not one of 'leader', 'follower'"]),
    ],
)
def test_bad_overrides_are_one_line(capsys, override, words):
    rc = main(["hw", "info", "--rig", "aloha", "--mock", "-o", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0], err
    for w in words:
        assert w in err[0], (w, err[0])
