"""Real-adapter tests (each marked with its lab service)."""
