"""NATS subjects: validation, wildcard matching and overlap, as nats-server decides them.

A subject is a list of non-empty tokens separated by dots. In a *filter* (a subscription, a
stream's subjects, a consumer's filter) the token ``*`` matches exactly one token and ``>``
matches one or more tokens and may only be the last one. Published subjects are taken
literally: nats-server itself stores ``orders.*`` published to a stream capturing ``orders.>``.
"""

from __future__ import annotations

_FORBIDDEN = frozenset(" \t\r\n")


def tokens(subject: str) -> list[str]:
    """The subject's tokens."""
    return subject.split(".")


def valid_subject(subject: str) -> bool:
    """A literal subject: non-empty tokens, no whitespace."""
    return bool(subject) and not (_FORBIDDEN & set(subject)) and all(tokens(subject))


def valid_filter(subject: str) -> bool:
    """A subject filter: a valid subject whose wildcards are whole tokens, ``>`` only last."""
    if not valid_subject(subject):
        return False
    parts = tokens(subject)
    for index, part in enumerate(parts):
        if part == ">" and index != len(parts) - 1:
            return False
        if part not in ("*", ">") and ("*" in part or ">" in part):
            return False
    return True


def matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` (taken literally) falls under the filter ``pattern``."""
    pattern_parts = tokens(pattern)
    subject_parts = tokens(subject)
    for index, part in enumerate(pattern_parts):
        if part == ">":
            return len(subject_parts) > index
        if index >= len(subject_parts):
            return False
        if part != "*" and part != subject_parts[index]:
            return False
    return len(pattern_parts) == len(subject_parts)


def overlap(first: str, second: str) -> bool:
    """Whether some subject matches both filters (why nats-server refuses two streams, or a
    stream's own subjects, that would capture the same messages)."""
    a, b = tokens(first), tokens(second)
    for index in range(max(len(a), len(b))):
        left = a[index] if index < len(a) else None
        right = b[index] if index < len(b) else None
        if left == ">":
            return right is not None
        if right == ">":
            return left is not None
        if left is None or right is None:
            return False
        if left != right and "*" not in (left, right):
            return False
    return True
