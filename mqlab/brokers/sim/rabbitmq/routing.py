"""How the simulated RabbitMQ node routes and dead-letters: direct, topic, fanout and headers
exchanges, and the ``x-death`` header it writes on every dead-lettering.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from mqlab.brokers.sim.rabbitmq.queues import Binding, Message


def topic_matches(pattern: str, routing_key: str) -> bool:
    """RabbitMQ's topic matching: words split on ``.``; ``*`` is exactly one word, ``#`` zero
    or more. An empty key has no words (so only patterns like ``#`` match it)."""
    words = routing_key.split(".") if routing_key else []
    parts = pattern.split(".") if pattern else []
    # matches[i][j]: parts[i:] matches words[j:]
    matches = [[False] * (len(words) + 1) for _ in range(len(parts) + 1)]
    matches[len(parts)][len(words)] = True
    for i in range(len(parts) - 1, -1, -1):
        for j in range(len(words), -1, -1):
            part = parts[i]
            if part == "#":
                matches[i][j] = matches[i + 1][j] or (j < len(words) and matches[i][j + 1])
            elif j < len(words) and part in ("*", words[j]):
                matches[i][j] = matches[i + 1][j + 1]
    return matches[0][0]


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any]) -> bool:
    """A headers-exchange binding: ``x-match`` ``all`` (default) or ``any``; keys starting with
    ``x-`` take part only with ``all-with-x`` / ``any-with-x``. A binding value of ``None``
    matches on the key's presence alone."""
    mode = str(arguments.get("x-match", "all"))
    with_x = mode.endswith("-with-x")
    wanted = {
        key: value
        for key, value in arguments.items()
        if key != "x-match" and (with_x or not key.startswith("x-"))
    }
    results = (
        key in headers and (value is None or headers[key] == value) for key, value in wanted.items()
    )
    if mode.startswith("any"):
        return any(results)
    return all(results)


def binding_matches(
    kind: str, binding: Binding, routing_key: str, headers: Mapping[str, Any]
) -> bool:
    if kind == "fanout":
        return True
    if kind == "direct":
        return binding.routing_key == routing_key
    if kind == "topic":
        return topic_matches(binding.routing_key, routing_key)
    return headers_match(binding.arguments, headers)


def record_death(message: Message, queue: str, reason: str, now: float) -> dict[str, Any]:
    """The message's headers with this death added to ``x-death`` the way RabbitMQ does it:
    a repeat of (queue, reason) increments that entry's count and moves it to the front."""
    headers = dict(message.headers)
    deaths: list[dict[str, Any]] = [dict(entry) for entry in headers.get("x-death") or []]
    for index, entry in enumerate(deaths):
        if entry.get("queue") == queue and entry.get("reason") == reason:
            deaths.pop(index)
            entry["count"] = int(entry.get("count", 0)) + 1
            break
    else:
        entry = {
            "count": 1,
            "reason": reason,
            "queue": queue,
            "time": datetime.datetime.fromtimestamp(int(now), tz=datetime.UTC),
            "exchange": message.exchange,
            "routing-keys": list(message.routing_keys),
        }
        if message.expiration_ms is not None:
            entry["original-expiration"] = str(message.expiration_ms)
    deaths.insert(0, entry)
    headers["x-death"] = deaths
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-exchange", message.exchange)
    return headers


def is_cycle(target: str, reason: str, deaths: list[dict[str, Any]]) -> bool:
    """RabbitMQ drops a dead letter that would go round a loop with no rejection in it (only
    expiries / overflows), which would otherwise circle forever."""
    if reason == "rejected":
        return False
    since: list[dict[str, Any]] = []
    for entry in deaths:  # newest first
        if entry.get("queue") == target:
            return all(e.get("reason") != "rejected" for e in (entry, *since))
        since.append(entry)
    return False
