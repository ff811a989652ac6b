"""duet: ROS 2 teleoperation and policy deployment for low-cost bimanual arms.

The cores live in duet.hardware, duet.teleop, duet.data and duet.policy (the repository's
hardware/, teleop/, data/ and policy/ folders) and never import ROS.
"""

__version__ = "0.1.0"
