"""duet.teleop: see ARCHITECTURE.md."""
