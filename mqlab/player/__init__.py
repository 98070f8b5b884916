"""The headless lesson player: one state machine per lesson, driven by every interface.

``mqlab lessons show``, the TUI and the tests walk a lesson through the same
:class:`~mqlab.player.player.LessonPlayer`: the current step; a quiz answer and its feedback; a
prediction committed, its scenario run (on the simulator or the lab) and the reveal; the
variants of an experiment run and set side by side; a decision tree walked to a leaf and back;
an exercise's state. Progress is recorded as the learner goes.

This is the activities layer: it may import :mod:`mqlab.scenarios` (every run goes through
:func:`mqlab.player.runs.run_scenario`) and :mod:`mqlab.patterns`; the knowledge layer
(:mod:`mqlab.course`) never imports it.
"""
