"""duet_ros: ament_python package (colcon build) that also installs with pip.

colcon: `colcon build --base-paths ros2_ws/src` puts the console scripts in
lib/duet_ros (setup.cfg), where `ros2 run duet_ros <executable>` and launch_ros find them.
pip:    `pip install --no-deps -e ros2_ws/src/duet_ros` (the Makefile does this) puts them
on the virtual environment's PATH for `duet up`.
The executables must match the kinds in launch/graph.yaml (a test checks it).

Both install the repository's launch/ folder (launch files, graph.yaml, params/, rviz/) into
share/duet_ros/launch, where `ros2 launch duet_ros teleop.launch.py` finds the launch files
and they find graph.yaml beside them. The sources stay in the repository's launch/ (two levels
above ros2_ws/): data_files name them relative to the directory setup.py runs in (colcon runs
it in this folder, or for --symlink-install in a build folder of symlinks to it).
"""

import os
from pathlib import Path

from setuptools import setup

PACKAGE = "duet_ros"

# console script -> module:function; one line per node kind of launch/graph.yaml
NODES = {
    "duet_arm_node": "duet_ros.arm_node:main",
    "duet_camera_node": "duet_ros.camera_node:main",
    "duet_teleop_node": "duet_ros.teleop_node:main",
    "duet_policy_node": "duet_ros.policy_node:main",
    "duet_recorder_node": "duet_ros.recorder_node:main",
    "duet_sim_node": "duet_ros.sim_node:main",
    "duet_state_publisher_node": "duet_ros.state_publisher_node:main",
}

# the repository's launch/ folder, found from this file (resolved: colcon's --symlink-install
# runs a symlink to it); absent when this package is built outside the repository
LAUNCH = Path(__file__).resolve().parent.parents[2] / "launch"
LAUNCH_PATTERNS = {
    "launch": ("*.launch.py", "graph.yaml"),
    "launch/params": ("*.yaml",),
    "launch/rviz": ("*.rviz",),
}


def launch_data_files() -> list[tuple[str, list[str]]]:
    out = []
    for folder, patterns in LAUNCH_PATTERNS.items():
        src = LAUNCH.parent / folder
        found = sorted(os.path.relpath(p, os.getcwd()) for pat in patterns for p in src.glob(pat))
        if found:
            out.append((f"share/{PACKAGE}/{folder}", found))
    return out


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *launch_data_files(),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="duet maintainers",
    maintainer_email="duet@example.com",
    description="duet ROS 2 nodes: arms, cameras and teleop over the duet cores",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in NODES.items()]},
)
