"""duet_ros: thin rclpy nodes over the duet cores (arms, cameras, teleop).

Every node kind is registered in launch/graph.yaml (kind -> console script + parameter
dataclass); launch/*.launch.py and `duet up` both read that one description.
"""
