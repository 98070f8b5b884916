"""mqlab: learn message queues and event-driven architecture against real brokers.

The package is layered (see docs/ARCHITECTURE.md): ``lab`` starts brokers, ``brokers`` and
``observe`` talk to them and record what happens, ``scenarios`` drive failures, and the CLI/TUI
sit on top. Importing ``mqlab`` itself is cheap: nothing heavy is imported here.
"""

__version__ = "0.1.0"
