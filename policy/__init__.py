"""duet.policy: see ARCHITECTURE.md."""
