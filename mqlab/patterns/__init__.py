"""Patterns the course teaches, as working code that runs on the lab's services and on the
simulator's virtual clock, each reporting typed observations (see docs/patterns.md).

One module per pattern: ``retry`` / ``retry_budget`` / ``contention`` (retries),
``idempotency``, ``saga`` (with the example ``order_saga``), ``event_sourcing``, ``delivery``
(consumer loops per delivery guarantee), ``outbox``. Shared by them: ``harness`` (the
observation reporter and crash hooks every pattern takes), ``database`` (the business database
whose transactions the patterns rely on, PostgreSQL or in memory) and ``postgres`` (one schema
per namespace). ``programs`` packages them as the runnable programs of scenario steps.
"""
