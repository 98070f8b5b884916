"""The course in the terminal: a Textual app over the headless core.

This is the only package that imports Textual. ``mqlab`` (and ``mqlab course``) import it
lazily, inside the command, so ``mqlab --help``, ``mqlab run`` and ``mqlab check`` never pay for
it. Everything the app shows comes from below: lessons through the headless
:class:`~mqlab.player.player.LessonPlayer`, runs through
:class:`~mqlab.scenarios.session.RunSession`, the lab's state through the doctor. The app only
draws, and turns key presses into calls on those.

Build it with :func:`mqlab.tui.app.make_app` (the CLI and the tests do it the same way).
"""
