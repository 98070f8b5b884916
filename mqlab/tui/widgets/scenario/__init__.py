"""Widgets of the scenario screen: the timeline, the ledger and the live broker and pattern
views."""
