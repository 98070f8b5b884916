"""Lesson validation with everything the player knows (its pattern experiments included).

:func:`mqlab.course.library.validate` checks a lesson against scenarios, exercises and
diagrams; the pattern experiments are the player's, so ``mqlab lessons validate`` (and anything
else that wants the complete check) calls this.
"""

from __future__ import annotations

from pathlib import Path

from mqlab.course.library import validate
from mqlab.course.loader import ContentError
from mqlab.player.patterns import PATTERNS


def validate_lessons(
    path: Path | None = None, *, scenarios: Path | None = None
) -> list[ContentError]:
    """Every problem in the course (default) or at ``path``, one ContentError each."""
    return validate(path, patterns=PATTERNS, scenarios=scenarios)
