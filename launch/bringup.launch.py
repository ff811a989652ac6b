"""Every arm and camera of the rig.

ros2 launch duet_ros bringup.launch.py use_mock_hardware:=true config:=aloha
"""

from pathlib import Path

from duet_ros.launch_support import graph_file, graph_launch

GRAPH = "bringup"
GRAPH_FILE = graph_file(Path(__file__).with_name("graph.yaml"))  # the description `duet up` reads too
generate_launch_description = graph_launch(GRAPH, GRAPH_FILE)
