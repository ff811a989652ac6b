"""Shared body of launch/*.launch.py (ROS 2 Python launch, for workstations; needs the
launch and launch_ros packages of a system ROS 2, which the wheels environment lacks).

Each <graph>.launch.py is `generate_launch_description = graph_launch("<graph>", <its
graph.yaml>)`: the nodes, executables and parameter files come from launch/graph.yaml through
duet_ros.graph.expand, the same description `duet up` reads. Arguments:

  use_mock_hardware:=true|false   (default false) the mock backend for every device;
                                  changes only that parameter, nothing downstream
  config:=<rig>                   a shipped rig name (aloha) or a rig YAML path
  NAME:=VALUE                     the graph's own arguments (graph.yaml `arguments:`),
                                  e.g. dataset:=PATH task:=NAME for the record graph
  keystore:=<dir>                 DDS security (duet security keystore): ROS_SECURITY_*
                                  (Enforce) and each node in its enclave /duet/<node>
  rviz:=true|false                (default false) start rviz2 with the shipped RViz config
                                  (launch/rviz/duet.rviz) where rviz2 is installed; a log
                                  line says why not otherwise
  (the robot description and TF come from the graph's own state_publisher node, built
  from the rig: duet.hardware.urdf; no robot_state_publisher needed)

Installed (colcon build; `ros2 launch duet_ros teleop.launch.py`) the launch files, graph.yaml,
params/ and rviz/ sit together in share/duet_ros/launch; in a checkout (`ros2 launch
launch/teleop.launch.py`) in launch/. graph_file() finds graph.yaml for either.

As `duet up` does: with mock hardware the nodes get ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
unless it (or ROS_LOCALHOST_ONLY) is set; the launch log says the discovery range and
ROS domain the nodes use.
"""

from __future__ import annotations

import os
from pathlib import Path

from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from duet_ros import security
from duet_ros.graph import expand, load_graph
from duet_ros.launcher import discovery_environment, network_summary
from launch import LaunchDescription

TRUE = ("true", "1", "yes", "on")
PACKAGE = "duet_ros"
RVIZ_CONFIG = Path("rviz") / "duet.rviz"  # relative to the graph file's folder
EXTRAS = ("rviz",)  # launch arguments for the non-duet nodes
HELP = {
    "mock": "drive mock hardware instead of the real arms and cameras",
    "config": "rig: a shipped rig name or a rig YAML path",
    "keystore": "SROS2 keystore (duet security keystore): DDS security, Enforce",
    "rviz": "start rviz2 with the shipped launch/rviz/duet.rviz (where rviz2 is installed)",
}


def _package_share(package: str) -> Path | None:
    """share/<package> of an installed ROS package (ament index), None where the package or
    ament_index_python (a system ROS 2 / colcon install) is absent."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(package))
    except (PackageNotFoundError, LookupError, ValueError):
        return None


def graph_file(beside_launch_file: Path) -> Path | None:
    """The graph description a launch file reads: the graph.yaml beside it (a checkout's launch/,
    or share/duet_ros/launch of a colcon install), else the installed package share's, else
    None: the one duet ships (duet.resources, through duet_ros.graph.load_graph)."""
    if beside_launch_file.is_file():
        return beside_launch_file
    share = _package_share(PACKAGE)
    if share is not None and (share / "launch" / beside_launch_file.name).is_file():
        return share / "launch" / beside_launch_file.name
    return None


def _extras(context, desc) -> list:
    """rviz2 where installed (else one log line why not)."""
    actions: list = []
    if LaunchConfiguration("rviz").perform(context).strip().lower() in TRUE:
        config = desc.path.parent / RVIZ_CONFIG
        if _package_share("rviz2") is None:
            actions.append(
                LogInfo(
                    msg="[duet] rviz:=true but rviz2 is not installed: sudo apt install ros-$ROS_DISTRO-rviz2"
                )
            )
        elif not config.is_file():
            actions.append(LogInfo(msg=f"[duet] rviz:=true but the RViz config {config} is missing"))
        else:
            actions.append(
                Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", str(config)])
            )
    return actions


def graph_launch(graph: str, graph_path: Path | None = None):
    def _nodes(context, *args, **kwargs):
        rig = LaunchConfiguration("config").perform(context)
        mock = LaunchConfiguration("use_mock_hardware").perform(context).strip().lower() in TRUE
        desc = load_graph(graph_path)
        # the graph's own arguments (graph.yaml `arguments:`), e.g. dataset:=PATH -> recorder:dataset
        values = {name: LaunchConfiguration(name).perform(context) or None for name in desc.arguments(graph)}
        extra = desc.argument_parameters(graph, values)
        specs = expand(graph, rig, mock, desc)
        keystore = LaunchConfiguration("keystore").perform(context).strip()
        env = {**os.environ, **context.environment}
        updates = discovery_environment(env, mock)
        if keystore:
            security.check_enclaves(keystore, [s.name for s in specs])
            updates.update(security.security_environment(keystore))
        actions = [SetEnvironmentVariable(k, v) for k, v in updates.items()]
        actions.append(
            LogInfo(
                msg=f"[duet] {graph}: network: "
                f"{network_summary({**env, **updates}, 'ROS_AUTOMATIC_DISCOVERY_RANGE' in updates)}"
            )
        )
        for spec in specs:
            kwargs = spec.launch_kwargs()
            if spec.name in extra:
                kwargs["parameters"] = [*kwargs["parameters"], extra[spec.name]]
            if keystore:
                kwargs["ros_arguments"] = ["--enclave", security.enclave_of(spec.name)]
            actions.append(Node(**kwargs))
        if keystore:  # under DDS security (Enforce) a node needs an enclave of the keystore
            if any(LaunchConfiguration(a).perform(context).strip().lower() in TRUE for a in EXTRAS):
                actions.append(LogInfo(msg="[duet] keystore:= set: rviz2 not started"))
            return actions
        return [*actions, *_extras(context, desc)]

    def generate_launch_description() -> LaunchDescription:
        graph_args = [
            DeclareLaunchArgument(a.name, description=a.help)
            if a.required
            else DeclareLaunchArgument(a.name, default_value="", description=a.help)
            for a in load_graph(graph_path).arguments(graph).values()
        ]
        return LaunchDescription(
            [
                DeclareLaunchArgument("use_mock_hardware", default_value="false", description=HELP["mock"]),
                DeclareLaunchArgument("config", default_value="aloha", description=HELP["config"]),
                DeclareLaunchArgument("keystore", default_value="", description=HELP["keystore"]),
                DeclareLaunchArgument("rviz", default_value="false", description=HELP["rviz"]),
                *graph_args,
                OpaqueFunction(function=_nodes),
            ]
        )

    return generate_launch_description
