"""duet.data: see ARCHITECTURE.md."""
