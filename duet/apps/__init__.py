"""The applications: the `duet` commands and the demo, composed from the libraries.

Every arrow runs one way:

    duet core (errors, clock, config, ...) <- hardware <- teleop, data <- policy <- apps <- duet_ros

hardware/, teleop/, data/ and policy/ are libraries and import no application; an
application may use any library. Each module here registers its commands with
register(subparsers); duet/cli.py (the composition root, the one entry point) lists them.
Nothing here imports duet_ros: the commands that drive the ROS graph get their runners from
duet_ros.cli (see duet/apps/sim.py).
"""
