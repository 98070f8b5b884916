"""The TUI's widgets, one per module, grouped by the screen that shows them."""
