"""ROS-free device layer: arm and camera interfaces, Dynamixel bus and arms, cameras,
safety and calibration. Mocks (hardware/mock) and the MuJoCo sim (hardware/sim) are product
code behind the same interfaces, selected by configuration."""
