"""Where one lab keeps its state (pids, logs, data) and its downloads.

``MQLAB_STATE_DIR`` and ``MQLAB_CACHE_DIR`` override the platform directories, which is how the
tests and several developers run separate labs side by side (together with
``MQLAB_PORT_OFFSET``, see :mod:`mqlab.lab.endpoints`).
"""

from __future__ import annotations

import os
from pathlib import Path

from mqlab.lab.spec import LabPaths

__all__ = ["LabPaths", "lab_paths"]


def lab_paths() -> LabPaths:
    """The state and cache directories of the lab this process talks to (not created here)."""
    import platformdirs

    state = os.environ.get("MQLAB_STATE_DIR") or platformdirs.user_state_dir("mqlab")
    cache = os.environ.get("MQLAB_CACHE_DIR") or platformdirs.user_cache_dir("mqlab")
    return LabPaths(
        state=Path(state).expanduser().absolute(), cache=Path(cache).expanduser().absolute()
    )
