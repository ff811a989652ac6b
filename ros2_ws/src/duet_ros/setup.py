"""duet_ros: ament_python package (colcon build) that also installs with pip.

colcon: `colcon build --base-paths ros2_ws/src` puts the console scripts in
lib/duet_ros (setup.cfg), where `ros2 run duet_ros <executable>` and launch_ros find them.
pip:    `pip install --no-deps -e ros2_ws/src/duet_ros` (the Makefile does this) puts them
on the virtual environment's PATH for `duet up`.
The executables must match the kinds in launch/graph.yaml (a test checks it).
"""

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

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="duet maintainers",
    maintainer_email="duet@example.com",
    description="duet ROS 2 nodes: arms, cameras and teleop over the duet cores",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in NODES.items()]},
)
