"""The business database as a check hands it to learner code: the same tables, watched.

Exercises about effects (an idempotent consumer, offsets stored with the data) give the
learner the pattern library's :class:`~mqlab.patterns.database.BusinessDatabase`
(PostgreSQL on the lab, in memory on ``sim``). A check needs two more things from it, and the
library's :class:`~mqlab.patterns.database.ReportingDatabase` has both without changing what
the learner sees; :class:`WatchedDatabase` is that wrapper as a check builds it:

* **The committed truth.** A business write inside a transaction that later rolls back (the
  process died before COMMIT) never happened. So each business write is reported as an
  :class:`~mqlab.observe.events.EffectApplied` (from the grader) only once its transaction
  has committed: ``no-double-effect`` and ``nothing-lost`` judge what the database really
  holds.
* **Crash points at the database's boundaries**, awaited on the check's hook with the
  message id as detail: ``after_business_write`` (inside the transaction, after a credit or
  a balance set: the COMMIT has not happened), ``after_effect_commit`` (the COMMIT of a
  transaction with a business write) and ``after_offset_commit`` (the COMMIT of a
  transaction that moved a stored consumer offset; the detail names the record at that
  offset through ``record_at``). A transaction that does both reaches both, effect first.

:func:`business_database` opens the database a check wraps: in memory on ``sim``, the lab's
PostgreSQL in the run's namespace otherwise.
"""

from __future__ import annotations

from mqlab.grader.context import GRADER_SOURCE, GradingContext
from mqlab.patterns.database import (
    BusinessDatabase,
    MemoryDatabase,
    PostgresDatabase,
    RecordAt,
    ReportingDatabase,
    offset_text,
)
from mqlab.patterns.harness import CrashHook, Reporter, no_crash


class WatchedDatabase(ReportingDatabase):
    """``inner`` as the learner uses it, reporting committed effects on the check's bus and
    reaching the crash points of the module docstring on ``crash``.

    The check owns the database's lifetime (it opens ``inner`` and closes it after the
    learner's code has run, and reads the rows back), so ``setup``, ``close`` and ``drop``
    on the wrapper the learner holds do nothing.

    Args:
        inner: the database (memory on ``sim``, PostgreSQL on the lab).
        ctx: where the ``EffectApplied`` observations go.
        crash: the check's crash hook.
        record_at: names the record at a stored offset (the one before it), for the crash
            point's detail; ``topic:partition@offset`` when omitted.
    """

    def __init__(
        self,
        inner: BusinessDatabase,
        ctx: GradingContext,
        crash: CrashHook = no_crash,
        record_at: RecordAt = offset_text,
    ) -> None:
        super().__init__(inner, Reporter(ctx.bus, GRADER_SOURCE), crash, record_at)

    # The interface's do-nothing lifetime, not ReportingDatabase's forwarding to ``inner``.
    setup = BusinessDatabase.setup
    close = BusinessDatabase.close
    drop = BusinessDatabase.drop


async def business_database(ctx: GradingContext) -> BusinessDatabase:
    """The run's business database, ready: in memory on ``sim`` (it stands for the server,
    so its rows outlive a crashed consumer), else the lab's PostgreSQL in the run's
    namespace, its tables created. The caller closes it."""
    if ctx.simulated:
        return MemoryDatabase(name="memory")
    database = PostgresDatabase(ctx.postgres_dsn, ctx.namespace)
    await database.setup()
    return database
