"""Saga programs: the course's order saga, run, failed, crashed and recovered.

``order-saga`` places one order (reserve stock, charge the customer, confirm) with the
orchestrator of :mod:`mqlab.patterns.saga` against the saga log and the business database of
the run: the lab's PostgreSQL, or the simulator's memory stand-ins that the run keeps between
steps. Every committed move of stock or money (an action or a compensation) is reported as an
``EffectApplied`` keyed by its idempotency key, so the ledger shows an effect applied twice.
A failure, a timeout or failing compensations come from :class:`OrderFaults`; a crash
from the step's ``crash:`` point. A later step with ``recover: true`` is the restarted
orchestrator: it reads the log and finishes (or undoes) every saga it finds unfinished.
"""

from __future__ import annotations

from mqlab.patterns.order_saga import STEPS, Order, OrderFaults, OrderSaga
from mqlab.patterns.programs import Param, ProgramContext, program
from mqlab.patterns.saga import CompensationRetry, SagaOrchestrator

_STEP = (str, type(None))
_CHOICES = STEPS


@program(
    "order-saga",
    "Place an order with a saga (reserve stock, charge, confirm); compensate on failure",
    params={
        "saga_id": Param((str,), "order-1", "The saga's id (the key of its log records)."),
        "reject": Param(_STEP, None, "A step whose service says no (nothing applied).", _CHOICES),
        "fail_before": Param(_STEP, None, "A step whose service fails before applying.", _CHOICES),
        "fail_after": Param(
            _STEP, None, "A step that applies, then fails before answering.", _CHOICES
        ),
        "slow": Param(_STEP, None, "A step that applies and answers after its timeout.", _CHOICES),
        "compensation_failures": Param(
            (dict,), {}, "Step -> how many attempts of its compensation fail."
        ),
        "compensation_attempts": Param(
            (int,), 3, "Attempts per compensation before the saga is parked."
        ),
        "timeout": Param((int, float), 2.0, "Each step's timeout in seconds."),
        "idempotent_steps": Param(
            (bool,), True, "Recovery may resume a step in doubt (it is idempotent by its key)."
        ),
        "recover": Param(
            (bool,), False, "Be the restarted orchestrator: finish the sagas the log has open."
        ),
        "stock": Param((int,), 10, "Opening stock of the item."),
        "wallet": Param((int,), 100, "Opening balance of the customer's wallet."),
    },
    crash_points=(
        "saga_started",
        "step_started",
        "action_done",
        "step_succeeded",
        "step_failed",
        "compensation_started",
        "compensation_done",
        "compensation_succeeded",
    ),
    services=("postgres",),
)
async def order_saga(ctx: ProgramContext) -> None:
    """Run (or recover) the order saga; its observations are the saga's story."""
    failures = ctx.params["compensation_failures"]
    assert isinstance(failures, dict)
    faults = OrderFaults(
        reject=ctx.optional_str("reject"),
        fail_before=ctx.optional_str("fail_before"),
        fail_after=ctx.optional_str("fail_after"),
        slow=ctx.optional_str("slow"),
        compensation_failures={
            str(step): int(count) for step, count in failures.items() if isinstance(count, int)
        },
    )
    database = await ctx.database()
    saga = OrderSaga(
        database,
        faults=faults,
        timeout=ctx.float_param("timeout"),
        idempotent_steps=bool(ctx.params["idempotent_steps"]),
    )
    orchestrator = SagaOrchestrator(
        await ctx.saga_log(),
        [saga.definition],
        reporter=ctx.reporter,
        crash=ctx.crash,
        compensation_retry=CompensationRetry(attempts=ctx.int_param("compensation_attempts")),
        rng=ctx.rng,
    )
    if ctx.params["recover"]:
        await orchestrator.recover()
        return
    order = Order(
        order_id=ctx.str_param("saga_id"),
        customer="ada",
        sku="lamp",
        quantity=1,
        amount=30,
    )
    # The opening balances are set up before the saga, not effects of it: not reported.
    opening = OrderSaga(database.inner)
    await opening.open_accounts(order, stock=ctx.int_param("stock"), wallet=ctx.int_param("wallet"))
    await orchestrator.run(saga.definition, order.order_id, order.as_data())
