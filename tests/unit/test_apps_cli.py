"""The `duet` entry point wires the applications (duet.apps) and duet_ros: `duet sim collect
--via-ros` and `duet sim deploy` get their ROS-graph runners from duet_ros.cli, and without
duet_ros they end in one line that says what to install (no ROS process is started here)."""

import importlib.util

import pytest

from duet import cli
from duet.apps import sim

HAVE_DUET_ROS = importlib.util.find_spec("duet_ros") is not None


@pytest.fixture
def without_duet_ros(monkeypatch):
    monkeypatch.setattr(
        cli, "COMMAND_MODULES", tuple(m for m in cli.COMMAND_MODULES if not m.startswith("duet_ros"))
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["sim", "collect", "--via-ros", "--out", "demos.zarr"],
        ["sim", "deploy", "--checkpoint", "."],
    ],
)
def test_ros_graph_commands_without_duet_ros_end_in_one_line(argv, without_duet_ros, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "needs ROS 2 (rclpy) and the duet_ros package" in err and "make setup" in err
    )


def test_sim_checks_come_before_the_ros_graph(without_duet_ros, capsys):
    assert cli.main(["sim", "collect", "--via-ros"]) == 2
    assert "give --out DIR" in capsys.readouterr().err
    assert cli.main(["sim", "deploy", "--checkpoint", "/no/such/checkpoint"]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_DUET_ROS, reason="duet_ros not installed")
def test_duet_ros_hands_sim_its_runners():
    from duet_ros import cli as ros_cli

    args = cli.build_parser().parse_args(["sim", "deploy", "--checkpoint", "x"])
    assert args.func.__module__ == sim.__name__
    assert (args.ros_collect, args.ros_deploy) == (ros_cli.cmd_sim_collect, ros_cli.cmd_sim_deploy)
