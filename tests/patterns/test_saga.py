"""The saga orchestrator on the in-memory log and database (virtual time): order of steps and
compensations, timeouts, rejection, retries with backoff, parking, saga ids, and a crash at
every boundary followed by recovery."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from mqlab.observe.bus import ObservationBus, Recorder
from mqlab.observe.events import (
    CompensationFailed,
    CompensationStarted,
    Observation,
    SagaObservation,
    SagaParked,
    SagaRecovered,
)
from mqlab.patterns.database import MemoryDatabase
from mqlab.patterns.harness import Boundary, BoundaryRecorder, Crashed, Reporter, crash_at
from mqlab.patterns.order_saga import (
    STEPS,
    Order,
    OrderFaults,
    OrderSaga,
    orders_account,
    stock_account,
    wallet_account,
)
from mqlab.patterns.retry import Backoff, Strategy
from mqlab.patterns.saga import (
    CompensationRetry,
    EntryKind,
    LogEntry,
    MemorySagaLog,
    SagaDefinition,
    SagaOrchestrator,
    SagaRecord,
    SagaResult,
    SagaStep,
    StepContext,
)

VIRTUAL_TIME = True

ORDER = Order("o1", "alice", "sku1", quantity=2, amount=30)
STOCK, WALLET = 5, 100


async def balances(db: MemoryDatabase) -> tuple[int, int, int]:
    return (
        await db.balance(stock_account(ORDER.sku)),
        await db.balance(wallet_account(ORDER.customer)),
        await db.balance(orders_account(ORDER.customer)),
    )


COMPLETED = (STOCK - ORDER.quantity, WALLET - ORDER.amount, 1)
UNDONE = (STOCK, WALLET, 0)


async def no_message_applied_twice(db: MemoryDatabase) -> None:
    """Every posting's message id (action key or compensation id) appears once per account."""
    postings = Counter((p.account, p.message_id) for p in await db.postings())
    assert all(count == 1 for count in postings.values()), postings


class Lab:
    """One saga run's world: database, services, log, orchestrator, observations."""

    def __init__(
        self,
        bus: ObservationBus,
        faults: OrderFaults | None = None,
        *,
        idempotent_steps: bool = True,
        attempts: int = 5,
    ) -> None:
        self.db = MemoryDatabase()
        self.log = MemorySagaLog()
        self.bus = bus
        self.saga = OrderSaga(self.db, faults=faults, idempotent_steps=idempotent_steps)
        self.retry = CompensationRetry(attempts, Backoff(Strategy.EXPONENTIAL, base=0.5, cap=4.0))

    def orchestrator(self, crash: Any = None) -> SagaOrchestrator:
        kwargs: dict[str, Any] = {"crash": crash} if crash is not None else {}
        return SagaOrchestrator(
            self.log,
            [self.saga.definition],
            reporter=Reporter(self.bus, "memory"),
            compensation_retry=self.retry,
            **kwargs,
        )

    async def run(self, crash: Any = None) -> SagaResult:
        await self.saga.open_accounts(ORDER, stock=STOCK, wallet=WALLET)
        return await self.orchestrator(crash).run("place-order", "s1", ORDER.as_data())


def saga_lines(recorder: Recorder) -> list[str]:
    """``kind step`` of every saga observation, in order."""
    lines = []
    for o in recorder.observations:
        if isinstance(o, SagaObservation):
            step = getattr(o, "step", "")
            lines.append(f"{o.kind} {step}".strip())
    return lines


async def test_the_happy_path(bus: ObservationBus, recorder: Recorder) -> None:
    lab = Lab(bus)
    result = await lab.run()
    assert result.status == "completed"
    assert await balances(lab.db) == COMPLETED
    assert result.data["charge_payment_done"] is True
    assert saga_lines(recorder) == [
        "saga_started",
        *[
            line
            for step in STEPS
            for line in (f"saga_step_started {step}", f"saga_step_succeeded {step}")
        ],
        "saga_ended",
    ]


@pytest.mark.parametrize("failing", STEPS)
async def test_a_failing_step_compensates_itself_and_the_ones_before_in_reverse(
    failing: str, bus: ObservationBus, recorder: Recorder
) -> None:
    lab = Lab(bus, OrderFaults(fail_after=failing))
    result = await lab.run()
    assert (result.status, result.failed_step) == ("compensated", failing)
    assert await balances(lab.db) == UNDONE
    upto = STEPS[: STEPS.index(failing) + 1]
    compensated = [o.step for o in recorder.of_kind(CompensationStarted)]  # type: ignore[attr-defined]
    assert compensated == list(reversed(upto))
    await no_message_applied_twice(lab.db)


@pytest.mark.parametrize("failing", STEPS)
async def test_a_step_that_failed_before_applying_is_compensated_as_a_no_op(
    failing: str, bus: ObservationBus
) -> None:
    lab = Lab(bus, OrderFaults(fail_before=failing))
    result = await lab.run()
    assert result.status == "compensated"
    assert await balances(lab.db) == UNDONE
    # The failed step's compensation found nothing to undo and left a tombstone: a late
    # action with the same key is now a duplicate and changes nothing.
    async with lab.db.transaction() as tx:
        assert not await tx.claim(lab.saga._change(failing, ORDER.as_data())[0], f"s1/{failing}")


async def test_a_rejected_step_is_not_compensated(bus: ObservationBus, recorder: Recorder) -> None:
    lab = Lab(bus, OrderFaults(reject="charge_payment"))
    result = await lab.run()
    assert result.status == "compensated"
    assert [o.step for o in recorder.of_kind(CompensationStarted)] == ["reserve_stock"]  # type: ignore[attr-defined]
    assert await balances(lab.db) == UNDONE


async def test_a_timed_out_step_is_compensated_after_its_own_timeout(
    bus: ObservationBus, recorder: Recorder
) -> None:
    lab = Lab(bus, OrderFaults(slow="charge_payment", slow_by=10.0))
    start = asyncio.get_running_loop().time()
    result = await lab.run()
    assert result.status == "compensated"
    assert "no answer within 2s" in result.error
    failed = [o for o in recorder.observations if o.kind == "saga_step_failed"]
    assert failed[0].timed_out  # type: ignore[attr-defined]
    assert failed[0].at - start == pytest.approx(2.0)
    # The charge went through before the answer was lost: the refund undid it.
    assert await balances(lab.db) == UNDONE


async def test_a_failing_compensation_is_retried_with_backoff(
    bus: ObservationBus, recorder: Recorder
) -> None:
    lab = Lab(bus, OrderFaults(reject="confirm_order", compensation_failures={"charge_payment": 3}))
    result = await lab.run()
    assert result.status == "compensated"
    failures = [o for o in recorder.observations if isinstance(o, CompensationFailed)]
    assert [(f.attempt, f.retry_in) for f in failures] == [(1, 0.5), (2, 1.0), (3, 2.0)]
    starts = [o.at for o in recorder.of_kind(CompensationStarted) if o.step == "charge_payment"]  # type: ignore[attr-defined]
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [0.5, 1.0, 2.0]
    assert await balances(lab.db) == UNDONE


async def test_a_compensation_that_keeps_failing_parks_the_saga_with_its_state(
    bus: ObservationBus, recorder: Recorder
) -> None:
    lab = Lab(
        bus,
        OrderFaults(reject="confirm_order", compensation_failures={"charge_payment": 99}),
        attempts=3,
    )
    result = await lab.run()
    assert result.status == "parked"
    parked = recorder.of_kind(SagaParked)
    assert len(parked) == 1
    assert parked[0].step == "charge_payment"  # type: ignore[attr-defined]
    assert parked[0].pending == ("charge_payment", "reserve_stock")  # type: ignore[attr-defined]
    # The state is in the log, not only in a log line: listed for a human, step by step.
    [record] = await lab.orchestrator().parked()
    assert record.status == "parked"
    assert record.compensation_state("charge_payment") == "failed"
    assert record.step_state("charge_payment") == "succeeded"
    assert record.compensation_state("reserve_stock") == "none"
    assert await balances(lab.db) == (*COMPLETED[:2], 0)
    # Recovery leaves a parked saga alone ...
    assert await lab.orchestrator().recover() == []
    # ... until the human fixed the cause and retries it.
    lab.saga._compensation_failures.clear()
    retried = await lab.orchestrator().retry_parked("s1")
    assert retried.status == "compensated"
    assert await balances(lab.db) == UNDONE
    await no_message_applied_twice(lab.db)


async def test_a_saga_id_runs_once(bus: ObservationBus) -> None:
    lab = Lab(bus)
    first = await lab.run()
    again = await lab.orchestrator().run("place-order", "s1", ORDER.as_data())
    assert (first.status, again.status) == ("completed", "completed")
    assert await balances(lab.db) == COMPLETED
    other = await lab.orchestrator().run("place-order", "s2", ORDER.as_data())
    assert other.status == "completed"
    assert await balances(lab.db) == (STOCK - 4, WALLET - 60, 2)


def test_definitions_are_checked() -> None:
    async def nothing(context: StepContext) -> Mapping[str, Any] | None:
        return None

    with pytest.raises(ValueError, match="timeout must be positive"):
        SagaStep("a", nothing, nothing, timeout=0)
    with pytest.raises(ValueError, match="step names repeat: a"):
        SagaDefinition(
            "s", (SagaStep("a", nothing, nothing, 1), SagaStep("a", nothing, nothing, 1))
        )
    with pytest.raises(ValueError, match="no steps"):
        SagaDefinition("s", ())
    with pytest.raises(ValueError, match="unknown step"):
        OrderFaults(reject="ship")


# --- crashes at every boundary, then recovery -------------------------------------------------


async def boundaries(bus: ObservationBus, faults: OrderFaults | None) -> list[Boundary]:
    lab, recorder = Lab(bus, faults), BoundaryRecorder()
    await lab.run(recorder)
    return recorder.boundaries


SCENARIOS = {
    "happy": None,
    "failing": OrderFaults(fail_after="confirm_order"),
    "flaky compensation": OrderFaults(
        reject="confirm_order", compensation_failures={"charge_payment": 1}
    ),
}


@pytest.mark.parametrize("idempotent", [True, False])
@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_a_crash_at_every_boundary_is_recovered_consistently(
    scenario: str, idempotent: bool, bus: ObservationBus
) -> None:
    faults = SCENARIOS[scenario]
    every = await boundaries(bus, faults)
    assert len(every) >= 10
    for boundary in every:
        lab = Lab(bus, faults, idempotent_steps=idempotent)
        with pytest.raises(Crashed):
            await lab.run(boundary.hook())
        recorder = Recorder()
        unsubscribe = bus.subscribe(recorder)
        [result] = await lab.orchestrator().recover()
        unsubscribe()
        state = await balances(lab.db)
        assert result.status in ("completed", "compensated"), boundary
        assert state == (COMPLETED if result.status == "completed" else UNDONE), boundary
        await no_message_applied_twice(lab.db)
        assert recorder.of_kind(SagaRecovered), boundary
        if faults is not None:
            assert result.status == "compensated", boundary


async def test_recovery_resumes_an_idempotent_step_in_doubt(
    bus: ObservationBus, recorder: Recorder
) -> None:
    lab = Lab(bus, idempotent_steps=True)
    with pytest.raises(Crashed):
        await lab.run(crash_at("action_done", detail="charge_payment"))
    [result] = await lab.orchestrator().recover()
    assert result.status == "completed"
    [recovered] = recorder.of_kind(SagaRecovered)
    assert (recovered.decision, recovered.in_doubt) == ("resume", "charge_payment")  # type: ignore[attr-defined]
    restarted = [o for o in recorder.observations if o.kind == "saga_step_started"]
    assert restarted[-2].attempt == 2  # type: ignore[attr-defined]
    assert await balances(lab.db) == COMPLETED


async def test_recovery_compensates_a_step_in_doubt_that_is_not_idempotent(
    bus: ObservationBus, recorder: Recorder
) -> None:
    lab = Lab(bus, idempotent_steps=False)
    with pytest.raises(Crashed):
        await lab.run(crash_at("action_done", detail="charge_payment"))
    [result] = await lab.orchestrator().recover()
    assert (result.status, result.failed_step) == ("compensated", "charge_payment")
    [recovered] = recorder.of_kind(SagaRecovered)
    assert recovered.decision == "compensate"  # type: ignore[attr-defined]
    assert await balances(lab.db) == UNDONE


async def test_recovery_resumes_between_two_records_even_without_idempotent_steps(
    bus: ObservationBus,
) -> None:
    lab = Lab(bus, idempotent_steps=False)
    with pytest.raises(Crashed):
        await lab.run(crash_at("step_succeeded", detail="reserve_stock"))
    [result] = await lab.orchestrator().recover()
    assert result.status == "completed"
    assert await balances(lab.db) == COMPLETED


async def test_a_saga_of_an_unknown_type_is_parked_not_dropped(bus: ObservationBus) -> None:
    lab = Lab(bus)
    with pytest.raises(Crashed):
        await lab.run(crash_at("step_succeeded", detail="reserve_stock"))
    stranger = SagaOrchestrator(lab.log, [], reporter=Reporter(bus, "memory"))
    [result] = await stranger.recover()
    assert result.status == "parked"
    assert "no definition" in result.error


def observation_round_trip(observations: list[Observation]) -> None:
    for o in observations:
        assert Observation.from_dict(o.to_dict()) == o


async def test_saga_observations_round_trip_through_a_trace(
    bus: ObservationBus, recorder: Recorder
) -> None:
    lab = Lab(
        bus,
        OrderFaults(reject="confirm_order", compensation_failures={"charge_payment": 9}),
        attempts=2,
    )
    await lab.run()
    observation_round_trip(recorder.observations)
    assert {o.kind for o in recorder.observations} >= {
        "saga_started",
        "saga_step_started",
        "saga_step_succeeded",
        "saga_step_failed",
        "compensation_started",
        "compensation_failed",
        "saga_parked",
    }


@pytest.mark.parametrize(
    ("records", "step_state", "compensation_state"),
    [
        ((), "not_started", "none"),
        ((("step_started", False),), "in_doubt", "none"),
        ((("step_started", False), ("step_succeeded", False)), "succeeded", "none"),
        ((("step_started", False), ("step_failed", True)), "failed", "none"),
        ((("step_started", False), ("step_failed", False)), "rejected", "none"),
        # A record of another kind (recovery's decision, a parking) changes neither state.
        ((("step_started", False), ("recovered", False)), "in_doubt", "none"),
        ((("step_succeeded", False), ("compensation_started", False)), "succeeded", "in_doubt"),
        (
            (("compensation_started", False), ("compensation_failed", False)),
            "not_started",
            "failed",
        ),
        (
            (("compensation_failed", False), ("parked", False), ("compensation_succeeded", False)),
            "not_started",
            "succeeded",
        ),
        # An idempotent step run again after a crash left it in doubt: the latest record decides.
        ((("step_started", False), ("step_started", False)), "in_doubt", "none"),
        ((("step_succeeded", False), ("step_started", False)), "in_doubt", "none"),
    ],
)
def test_a_steps_state_is_what_its_latest_record_of_that_kind_says(
    records: tuple[tuple[EntryKind, bool], ...], step_state: str, compensation_state: str
) -> None:
    entries = [
        LogEntry(seq=n, kind=kind, step="pay", may_have_applied=may_have_applied)
        for n, (kind, may_have_applied) in enumerate(records, start=1)
    ]
    # Records of another step around them must not count.
    other = LogEntry(seq=0, kind="step_failed", step="ship", may_have_applied=True)
    record = SagaRecord("s1", "order", "running", {}, (other, *entries, other))
    assert record.step_state("pay") == step_state
    assert record.compensation_state("pay") == compensation_state
