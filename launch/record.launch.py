"""Teleop (every arm and camera + the teleop node) + the recorder node: demonstrations to zarr.

    ros2 launch duet_ros record.launch.py use_mock_hardware:=true dataset:=demos.zarr task:=fold_towel
    ros2 service call /recorder/start std_srvs/srv/Trigger      # or teleop mirroring (gesture, /teleop/start)
    ros2 service call /recorder/stop std_srvs/srv/Trigger       # commit; /recorder/discard drops it
    ros2 topic echo /recorder/health                            # one health line per episode

Without ros2 launch: duet up record --mock --dataset demos.zarr --task fold_towel
"""

from pathlib import Path

from duet_ros.launch_support import graph_file, graph_launch

GRAPH = "record"
GRAPH_FILE = graph_file(Path(__file__).with_name("graph.yaml"))  # the description `duet up` reads too
generate_launch_description = graph_launch(GRAPH, GRAPH_FILE)
