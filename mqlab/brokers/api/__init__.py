"""The adapter interfaces, one module per system, shared by the real adapters and the simulator."""
