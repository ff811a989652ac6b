"""duet.hardware.mock: product code, selected by use_mock_hardware on a rig whose mock_backend
is mock (hardware/factory.py): the wire-level fake Dynamixel bus with fault scenarios,
scripted leader motions and mock cameras. See docs/ARCHITECTURE.md."""
