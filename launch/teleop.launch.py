"""Bringup (every arm and camera) + the teleop node: leaders drive followers at 50 Hz.

ros2 launch duet_ros teleop.launch.py use_mock_hardware:=true
ros2 service call /teleop/start std_srvs/srv/Trigger
"""

from pathlib import Path

from duet_ros.launch_support import graph_file, graph_launch

GRAPH = "teleop"
GRAPH_FILE = graph_file(Path(__file__).with_name("graph.yaml"))  # the description `duet up` reads too
generate_launch_description = graph_launch(GRAPH, GRAPH_FILE)
