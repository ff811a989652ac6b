"""duet.hardware.mock: see ARCHITECTURE.md."""
