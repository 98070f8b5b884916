"""Widgets of the lesson screen: one per step kind, each a view of the player's step.

The player is the state machine (:mod:`mqlab.player.player`); these widgets only show what it
returns and turn keys into its actions. Runs block, so they go to a thread worker and come
back as :class:`~mqlab.tui.messages.StepRunFinished`.
"""
