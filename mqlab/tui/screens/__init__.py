"""The TUI's screens: course map, lesson, scenario library, scenario run, replay, broker picker
and help."""
