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
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from duet_ros.graph import expand, load_graph
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
        nodes = []
        for spec in expand(graph, rig, mock, desc):
            kwargs = spec.launch_kwargs()
            if spec.name in extra:
                kwargs["parameters"] = [*kwargs["parameters"], extra[spec.name]]
            nodes.append(Node(**kwargs))
        return nodes

    def generate_launch_description() -> LaunchDescription:
        graph_args = [
            DeclareLaunchArgument(a.name, description=a.help) if a.required
            else DeclareLaunchArgument(a.name, default_value="", description=a.help)
            for a in load_graph(graph_file).arguments(graph).values()
        ]
        return LaunchDescription([
            DeclareLaunchArgument("use_mock_hardware", default_value="false",
                                  description="drive mock hardware instead of the real arms and cameras"),
            DeclareLaunchArgument("config", default_value="aloha",
                                  description="rig: a shipped rig name or a rig YAML path"),
            *graph_args,
            OpaqueFunction(function=_nodes),
        ])

    return generate_launch_description
