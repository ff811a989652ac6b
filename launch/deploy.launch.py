"""Bringup (every arm and camera) + the policy node: a trained policy drives the followers.

    ros2 launch duet_ros deploy.launch.py use_mock_hardware:=true checkpoint:=runs/act/checkpoint
    ros2 service call /policy/start std_srvs/srv/Trigger

Without ros2 launch: duet up deploy --mock --checkpoint runs/act/checkpoint
"""

from pathlib import Path

from duet_ros.launch_support import graph_file, graph_launch

GRAPH = "deploy"
GRAPH_FILE = graph_file(Path(__file__).with_name("graph.yaml"))  # the description `duet up` reads too
generate_launch_description = graph_launch(GRAPH, GRAPH_FILE)
