"""What the live widgets draw, folded from observations and broker snapshots.

Plain Python, no Textual: each model takes a run's observations (live or replayed) and, where
the broker can be asked, its ``inspect()`` snapshots, and keeps exactly the state one widget
draws. Observations alone give a picture during a replay (there is no broker to ask); a
snapshot, when it comes, is the broker's own word and replaces what was inferred.
"""

from __future__ import annotations

import functools
import re

_NAMESPACE = re.compile(r"^(?:mq|sim)-[0-9a-z]+-")


@functools.lru_cache(maxsize=4096)
def short_name(name: str) -> str:
    """A resource name without the run's namespace (``mq-3f2a9c-orders`` -> ``orders``)."""
    return _NAMESPACE.sub("", name)
