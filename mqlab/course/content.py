"""Where the course's content files live, installed or in a checkout.

A wheel carries ``lessons/``, ``scenarios/`` and ``compose/`` inside the package as
``mqlab/_content/<kind>`` (see pyproject's force-include), so an installed mqlab works outside
the repository. In a source checkout (an editable install) they are the top-level folders of
the repository. ``MQLAB_CONTENT_DIR`` overrides both, for course authors trying a new file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

ContentKind = Literal["lessons", "scenarios", "compose"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def content_dir(kind: ContentKind) -> Path:
    """The directory holding ``kind`` content (it may not exist if nothing was shipped)."""
    override = os.environ.get("MQLAB_CONTENT_DIR")
    if override:
        return Path(override) / kind
    packaged = _PACKAGE_DIR / "_content" / kind
    if packaged.is_dir():
        return packaged
    return _PACKAGE_DIR.parent / kind
