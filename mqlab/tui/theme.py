"""The app's two themes, and which one a terminal gets.

Textual paints its own background, so any theme is legible on any terminal; what matters is
that the app does not look like a black hole in a light terminal. The dark theme is the
default; a terminal that says it is light (``COLORFGBG`` with a light background, as xterm,
rxvt and many others set it) or ``MQLAB_THEME=light`` gets the light one, and Ctrl+T or the
command palette switches at any time.
"""

from __future__ import annotations

import os

from textual.theme import Theme

DARK = Theme(
    name="mqlab-dark",
    primary="#5fafff",
    secondary="#87d7af",
    accent="#ffaf5f",
    warning="#ffd75f",
    error="#ff5f5f",
    success="#5fd75f",
    foreground="#e4e4e4",
    background="#1c1c1c",
    surface="#262626",
    panel="#303030",
    dark=True,
)
LIGHT = Theme(
    name="mqlab-light",
    primary="#005fd7",
    secondary="#008787",
    accent="#af5f00",
    warning="#875f00",
    error="#d70000",
    success="#008700",
    foreground="#1c1c1c",
    background="#fafafa",
    surface="#eeeeee",
    panel="#e4e4e4",
    dark=False,
)
THEMES = (DARK, LIGHT)


def default_theme(environment: dict[str, str] | None = None) -> str:
    """``mqlab-light`` for a terminal that says it is light, else ``mqlab-dark``."""
    env = os.environ if environment is None else environment
    asked = env.get("MQLAB_THEME", "").strip().lower()
    if asked in ("light", "dark"):
        return f"mqlab-{asked}"
    colours = env.get("COLORFGBG", "")
    background = colours.rsplit(";", 1)[-1]
    # COLORFGBG's background is an ANSI colour number: 7 and 9-15 are the light ones.
    if background.isdigit() and (int(background) == 7 or 9 <= int(background) <= 15):
        return LIGHT.name
    return DARK.name
