"""duet.teleop: leader -> follower teleoperation, ROS-free: the mapping, the core's state
machine (core.py), a paced loop over Arm objects (loop.py), operator inputs and episode
replay. Its place among the layers: docs/ARCHITECTURE.md."""
