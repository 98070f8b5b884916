"""Typed observation events, the bus that carries them, and JSONL traces."""
