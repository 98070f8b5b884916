"""Contract test suites shared by the real adapters and the simulator."""
