"""The hardware factory (shipped aloha rig on mock hardware) and the `duet calibrate` /
`duet hw` commands, including their one-line errors."""

import importlib.util
import io
import json

import numpy as np
import pytest
import yaml

from duet.cli import main
from duet.clock import FakeClock
from duet.hardware.calibration import Calibration, calibration_path
from duet.hardware.dynamixel.bus import Motor, MotorBus
from duet.hardware.dynamixel.control_table import Reg
from duet.hardware.factory import make_rig
from duet.hardware.mock.fake_dynamixel import FakeDynamixelBus
from duet.hardware.rig import load_rig, rig_path

pytestmark = pytest.mark.timeout(120)


def test_mock_aloha_rig_four_arms_connect(tmp_path):
    rig = load_rig("aloha", [f"calibration_dir={tmp_path}"])
    clock = FakeClock()
    with make_rig(rig, use_mock=True, clock=clock, cameras=[]) as r:
        assert set(r.arms) == {"left_leader", "right_leader", "left_follower", "right_follower"}
        assert r.is_connected
        for name, arm in r.arms.items():
            clock.advance(0.02)
            state = arm.read()
            assert state.position.shape == (7,) and np.all(np.isfinite(state.position))
            assert arm.torque_enabled == (rig.arm(name).role == "follower")
        for leader, follower in rig.pairs:  # one teleop tick: the follower takes the leader's pose
            sent = r.arms[follower].write(r.arms[leader].read().position)
            assert sent.shape == (7,)
        h = r.health()
        assert set(h["arms"]) == set(r.arms)
    assert not any(a.is_connected for a in r.arms.values())


@pytest.mark.skipif(
    importlib.util.find_spec("duet.hardware.sim") is None, reason="no duet.hardware.sim in the tree"
)
def test_sim_backend_is_selected_by_the_rig(tmp_path):
    from duet.hardware.factory import make_arm

    rig = load_rig("aloha", ["mock_backend=sim"])
    arm = make_arm(rig, "left_follower", use_mock=True)
    assert type(arm).__module__ == "duet.hardware.sim.arms"
    real = make_arm(rig, "left_follower", use_mock=False)  # use_mock=False ignores mock_backend
    assert type(real).__name__ == "DynamixelArm"


@pytest.mark.skipif(
    importlib.util.find_spec("duet.hardware.cameras") is None,
    reason="the camera engineer's duet.hardware.cameras is not in the tree",
)
def test_mock_aloha_rig_with_cameras(tmp_path):
    rig = load_rig("aloha", [f"calibration_dir={tmp_path}"])
    r = make_rig(rig, use_mock=True)
    assert set(r.cameras) == {c.name for c in rig.cameras}
    r.connect()
    try:
        import time

        deadline = time.monotonic() + 10
        cam = r.cameras["cam_high"]
        while cam.read().frame is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cam.read().frame is not None
    finally:
        r.disconnect()


def _one_line_error(capsys, argv, *, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", stdin)
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and err[0].startswith("duet "), err
    assert "Traceback" not in err[0]
    return err[0]


def _rig_file(tmp_path, **arm_changes):
    data = yaml.safe_load(rig_path("aloha").read_text())
    data["calibration_dir"] = str(tmp_path / "cal")
    data["name"] = "testrig"
    for arm in data["arms"]:
        arm.update(arm_changes)
    p = tmp_path / "rig.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_calibrate_mock_then_info(tmp_path, capsys, monkeypatch):
    rig_file = _rig_file(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n\n\n"))
    assert main(["calibrate", "--rig", str(rig_file), "--arm", "left_leader", "--mock"]) == 0
    out = capsys.readouterr().out
    rig = load_rig(str(rig_file))
    path = calibration_path(rig, rig.arm("left_leader"), mock=True)
    assert f"saved {path}" in out
    from duet.hardware.arm_model import load_arm_model

    cal = Calibration.load(path, load_arm_model("wx250s"))
    assert cal.gripper_open == pytest.approx(-0.8, abs=0.002)
    assert cal.gripper_closed == pytest.approx(-1.65, abs=0.002)
    assert all(c.zero_ticks == 2048 for n, c in cal.joints.items())
    assert main(["hw", "info", "--rig", str(rig_file), "--mock", "--arm", "left_leader", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["left_leader"]["joints"]) >= {"waist", "gripper"}
    assert report["left_leader"]["health"]["calibration"] == str(path)


def test_hw_scan_mock(capsys):
    assert main(["hw", "scan", "--mock", "--ids", "1-3,9,20"]) == 0
    out = capsys.readouterr().out
    assert "XM540-W270" in out and "XM430-W350" in out
    assert "  20 " not in out
    assert main(["hw", "scan", "--mock", "--mock-model", "wx250s"]) == 0
    out = capsys.readouterr().out
    assert out.count("XL430-W250") == 2 and "9 servo(s)" in out


def test_bad_input_one_liners(tmp_path, capsys, monkeypatch):
    # wrong or unsupported baud rate
    line = _one_line_error(capsys, ["hw", "scan", "--mock", "--baud", "1234"])
    assert "baud rate 1234 is not supported" in line
    line = _one_line_error(capsys, ["hw", "scan", "--mock", "--baud", "57600"])
    assert "no servo answered at 57600 baud" in line and "--baud all" in line
    # missing port
    line = _one_line_error(capsys, ["hw", "scan", "--port", str(tmp_path / "ttyNOPE")])
    assert "not found" in line and "ttyNOPE" in line
    # unknown servo model in an arm config
    arm = yaml.safe_load((rig_path("aloha").parent.parent / "arms" / "vx300s.yaml").read_text())
    arm["joints"][2]["servos"][0]["model"] = "XM999-W1"
    arm_file = tmp_path / "bad_arm.yaml"
    arm_file.write_text(yaml.safe_dump(arm))
    rig_file = _rig_file(tmp_path, model=str(arm_file))
    line = _one_line_error(capsys, ["hw", "info", "--rig", str(rig_file), "--mock"])
    assert str(arm_file) in line and "joint 'elbow'" in line and "XM999-W1" in line
    # an ID that does not answer
    rig_file = _rig_file(tmp_path, fault_scenario="dead_servo:5")
    line = _one_line_error(capsys, ["hw", "info", "--rig", str(rig_file), "--mock", "--arm", "left_follower"])
    assert "servo ID 5 (elbow_shadow) did not answer" in line and "left_follower" in line
    # a calibration with the wrong number of joints
    rig_file = _rig_file(tmp_path)
    rig = load_rig(str(rig_file))
    path = calibration_path(rig, rig.arm("left_follower"), mock=True)
    from duet.hardware.arm_model import load_arm_model

    data = Calibration.nominal_for(load_arm_model("vx300s")).to_json()
    data["joints"].pop("wrist_rotate")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    line = _one_line_error(capsys, ["hw", "info", "--rig", str(rig_file), "--mock", "--arm", "left_follower"])
    assert (
        str(path) in line
        and "wrist_rotate" in line
        and "duet calibrate --rig testrig --arm left_follower" in line
    )
    # unknown arm
    line = _one_line_error(capsys, ["calibrate", "--rig", "aloha", "--arm", "nope", "--mock"])
    assert "no arm named 'nope'" in line


@pytest.fixture
def pty_rig(tmp_path):
    """The aloha rig with left_follower on a pseudo-terminal served by the fake bus: the
    REAL path (dynamixel_sdk.PortHandler on an OS port, use_mock=False)."""
    from duet.hardware.arm_model import load_arm_model

    model = load_arm_model("vx300s")
    fake = FakeDynamixelBus(dict(model.servo_models))
    for sid in (2, 4, 7):  # Drive Modes as Interbotix ships the arm
        fake.servo(sid).set(Reg.DRIVE_MODE, 1)
        fake.servo(sid).set_present_position(2048)
    port = fake.serve_pty()
    data = yaml.safe_load(rig_path("aloha").read_text())
    data.update(name="ptyrig", calibration_dir=str(tmp_path / "cal"))
    data["arms"] = [dict(name="left_follower", role="follower", model="vx300s", port=port)]
    data["pairs"] = []
    p = tmp_path / "ptyrig.yaml"
    p.write_text(yaml.safe_dump(data))
    yield p, fake, port
    fake.close()


def test_real_path_uncalibrated_busy_then_calibrate(pty_rig, capsys, monkeypatch):
    rig_file, fake, port = pty_rig
    # uncalibrated real arm: one line with the command to run
    line = _one_line_error(capsys, ["hw", "info", "--rig", str(rig_file)])
    assert "not calibrated" in line and "duet calibrate --rig ptyrig --arm left_follower" in line

    class Operator(io.StringIO):
        """stdin whose Enter presses move the arm as the prompts ask."""

        def __init__(self):
            super().__init__()
            self.step = 0

        def readline(self, *a):
            if self.step == 0:  # zero pose: shoulder 40 ticks off the servo center
                for sid in (2, 3):
                    fake.servo(sid).set_present_position(2088)
            elif self.step == 1:
                fake.servo(9).set_present_position(2048 + 970)  # gripper open
            else:
                fake.servo(9).set_present_position(2048 - 400)  # gripper closed
            self.step += 1
            return "\n"

    monkeypatch.setattr("sys.stdin", Operator())
    assert main(["calibrate", "--rig", str(rig_file), "--arm", "left_follower"]) == 0
    capsys.readouterr()
    rig = load_rig(str(rig_file))
    from duet.hardware.arm_model import load_arm_model

    cal = Calibration.load(calibration_path(rig, rig.arm("left_follower")), load_arm_model("vx300s"))
    assert cal.joints["shoulder"].zero_ticks == 2088
    assert cal.gripper_open > cal.gripper_closed
    # calibrated: info works over the OS port
    assert main(["hw", "info", "--rig", str(rig_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["left_follower"]["joints"]["shoulder"]["position"] == pytest.approx(0.0, abs=1e-9)
    # busy: another bus holds the port
    other = MotorBus(port, 1_000_000, [Motor(1, "XM540-W270", "waist")], label="other")
    other.connect()
    try:
        line = _one_line_error(capsys, ["hw", "info", "--rig", str(rig_file)])
        assert "busy" in line and port in line
    finally:
        other.disconnect()
