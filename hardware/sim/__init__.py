"""duet.hardware.sim: see ARCHITECTURE.md."""
