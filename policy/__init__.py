"""duet.policy: ACT and Diffusion Policy, training, checkpoints, sim evaluation and the
policy server (server/). ROS-free. See policy/README.md; the layers: docs/ARCHITECTURE.md."""
