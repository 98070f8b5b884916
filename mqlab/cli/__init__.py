"""The ``mqlab`` command line (Typer): presentation only.

Commands ask the layers below for results (the run session, the lab, the course library) and
print them; they never assemble a run themselves. ``mqlab.cli.app`` registers every command
group; this package re-exports ``app`` and ``main`` for the console script and the tests.
"""

from mqlab.cli.app import app, main

__all__ = ["app", "main"]
