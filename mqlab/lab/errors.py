"""The lab's one user-facing error type.

It lives in its own module so that service modules (which raise it from ``install()``) and the
supervisor (which re-exports it as ``mqlab.lab.supervisor.LabError``) can both import it without
importing each other.
"""

from __future__ import annotations


class LabError(Exception):
    """Something a learner can fix: a service not installed, a port taken, a name mistyped.

    ``str(error)`` is one line and names the fix. ``details`` holds optional extra lines that
    help (the tail of a log file); the CLI prints them after the message, never a traceback.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details
