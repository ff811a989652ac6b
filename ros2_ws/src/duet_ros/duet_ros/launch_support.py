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

As `duet up` does: with mock hardware the nodes get ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
unless it (or ROS_LOCALHOST_ONLY) is set; the launch log says the discovery range and
ROS domain the nodes use.
"""

from __future__ import annotations

import os

from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from duet_ros import security
from duet_ros.graph import expand, load_graph
from duet_ros.launcher import discovery_environment, network_summary
from launch import LaunchDescription

TRUE = ("true", "1", "yes", "on")


def graph_launch(graph: str, graph_file=None):
    def _nodes(context, *args, **kwargs):
        rig = LaunchConfiguration("config").perform(context)
        mock = LaunchConfiguration("use_mock_hardware").perform(context).strip().lower() in TRUE
        desc = load_graph(graph_file)
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
        return actions

    def generate_launch_description() -> LaunchDescription:
        graph_args = [
            DeclareLaunchArgument(a.name, description=a.help)
            if a.required
            else DeclareLaunchArgument(a.name, default_value="", description=a.help)
            for a in load_graph(graph_file).arguments(graph).values()
        ]
        return LaunchDescription(
            [
                DeclareLaunchArgument(
                    "use_mock_hardware",
                    default_value="false",
                    description="drive mock hardware instead of the real arms and cameras",
                ),
                DeclareLaunchArgument(
                    "config", default_value="aloha", description="rig: a shipped rig name or a rig YAML path"
                ),
                DeclareLaunchArgument(
                    "keystore",
                    default_value="",
                    description="SROS2 keystore (duet security keystore): DDS security, Enforce",
                ),
                *graph_args,
                OpaqueFunction(function=_nodes),
            ]
        )

    return generate_launch_description
