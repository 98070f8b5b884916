"""The TUI tests' own waiting helper fails when it should: one text on screen is not all."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mqlab.tui.app import MqlabApp
from tests.tui.conftest import until_shown

pytestmark = pytest.mark.sim


async def test_until_shown_waits_for_every_text_it_is_given(
    make: Callable[..., MqlabApp],
) -> None:
    app = make()
    async with app.run_test(size=(80, 24)) as pilot:
        await until_shown(pilot, "Every kind of step")
        with pytest.raises(pytest.fail.Exception, match="'not on this screen'"):
            await until_shown(pilot, "Every kind of step", "not on this screen", timeout=0.5)
