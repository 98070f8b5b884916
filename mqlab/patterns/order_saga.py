"""The course's example saga, "place an order": reserve stock, charge the customer, confirm.

The three services are accounts in the :class:`~mqlab.patterns.database.BusinessDatabase`
(``stock:<sku>``, ``wallet:<customer>``, ``orders:<customer>``), so the saga runs the same way
on the lab's PostgreSQL and on the simulator's memory database, and a test can check the end
state with plain balances and postings. It is written to show how a saga's steps are made
safe to repeat:

* **An action is idempotent by its key.** Each action is one database transaction that first
  claims ``StepContext.idempotency_key`` in ``processed`` (the service's own dedup table) and
  only then moves money or stock. Run it twice and the second run finds the key and does
  nothing.
* **A compensation is idempotent by its compensation id, and safe when the action never
  happened.** In one transaction it claims ``StepContext.compensation_id`` (a second run does
  nothing) and then tries to claim the *action's* key too. If that claim succeeds, the action
  never applied: the claim now stands as a tombstone, so an action request still in flight
  that arrives later is a duplicate and does nothing. If the claim fails, the action did
  apply, and the compensation reverses it.

:class:`OrderFaults` injects what the scenarios show: a step that says no, a step whose service
fails (maybe after applying), a step whose answer comes after its timeout, and compensations
that fail a number of times (enough of them and the saga is parked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mqlab.patterns.database import BusinessDatabase, Transaction
from mqlab.patterns.saga import SagaDefinition, SagaStep, StepContext, StepRejected

SAGA_NAME = "place-order"
STEPS = ("reserve_stock", "charge_payment", "confirm_order")


class ServiceUnavailable(Exception):
    """What a faulty service raises (a connection refused: the action may or may not have
    reached the service before it broke)."""


@dataclass(frozen=True, slots=True)
class OrderFaults:
    """Faults for one run of the example saga.

    Attributes:
        reject: step whose action says no (out of stock, card declined): nothing applied.
        fail_before: step whose service fails before applying (the saga cannot tell).
        fail_after: step whose service applies, then fails before answering.
        slow: step whose service applies and answers ``slow_by`` seconds after the step's
            timeout.
        compensation_failures: step -> how many attempts of its compensation fail before one
            works (more than the retry allows and the saga is parked).
    """

    reject: str | None = None
    fail_before: str | None = None
    fail_after: str | None = None
    slow: str | None = None
    slow_by: float = 1.0
    compensation_failures: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = [self.reject, self.fail_before, self.fail_after, self.slow]
        unknown = sorted({s for s in [*named, *self.compensation_failures] if s} - set(STEPS))
        if unknown:
            raise ValueError(
                f"unknown step(s) {', '.join(unknown)} (the steps: {', '.join(STEPS)})"
            )


@dataclass(frozen=True, slots=True)
class Order:
    """What the saga is started with (its data, as stored in the saga log)."""

    order_id: str
    customer: str
    sku: str
    quantity: int
    amount: int

    def as_data(self) -> dict[str, Any]:
        """The saga's start data: every field, by its name."""
        return asdict(self)


def stock_account(sku: str) -> str:
    """The inventory service's account for ``sku``."""
    return f"stock:{sku}"


def wallet_account(customer: str) -> str:
    """The payment service's account for ``customer``."""
    return f"wallet:{customer}"


def orders_account(customer: str) -> str:
    """The order service's count of confirmed orders of ``customer``."""
    return f"orders:{customer}"


class OrderSaga:
    """The example saga's services and definition on ``db``.

    Args:
        db: where the services keep their accounts.
        faults: what goes wrong in this run.
        timeout: each step's timeout in seconds.
        idempotent_steps: declare the steps idempotent (they are, by their keys), so recovery
            resumes a saga whose crash left a step in doubt; with False recovery compensates
            instead (the other branch of the rule).
    """

    def __init__(
        self,
        db: BusinessDatabase,
        *,
        faults: OrderFaults | None = None,
        timeout: float = 2.0,
        idempotent_steps: bool = True,
    ) -> None:
        self.db = db
        self.faults = faults or OrderFaults()
        self.timeout = timeout
        self._compensation_failures: dict[str, int] = dict(self.faults.compensation_failures)
        self.definition = SagaDefinition(
            SAGA_NAME,
            tuple(
                SagaStep(
                    name,
                    action=self._action(name),
                    compensation=self._compensation(name),
                    timeout=timeout,
                    idempotent=idempotent_steps,
                )
                for name in STEPS
            ),
        )

    async def open_accounts(self, order: Order, *, stock: int, wallet: int) -> None:
        """Give the services their opening balances (before any saga runs)."""
        async with self.db.transaction() as tx:
            await tx.set_balance(stock_account(order.sku), stock, message_id="opening")
            await tx.set_balance(wallet_account(order.customer), wallet, message_id="opening")
            await tx.set_balance(orders_account(order.customer), 0, message_id="opening")

    @staticmethod
    def _change(step: str, data: Mapping[str, Any]) -> tuple[str, str, int]:
        """(service, account, amount) the action of ``step`` applies."""
        match step:
            case "reserve_stock":
                return "inventory", stock_account(data["sku"]), -int(data["quantity"])
            case "charge_payment":
                return "payments", wallet_account(data["customer"]), -int(data["amount"])
            case _:
                return "orders", orders_account(data["customer"]), 1

    def _action(self, step: str) -> Any:
        async def action(context: StepContext) -> Mapping[str, Any] | None:
            faults = self.faults
            if faults.fail_before == step:
                raise ServiceUnavailable(f"{step}: service unavailable")
            service, account, amount = self._change(step, context.data)

            async def apply(tx: Transaction) -> None:
                if amount < 0 and await tx.balance(account) + amount < 0:
                    raise StepRejected(f"{account} is short of {-amount}")
                await tx.credit(account, amount, message_id=context.idempotency_key)

            if faults.reject == step:
                raise StepRejected(f"{step}: refused")
            async with self.db.transaction() as tx:
                if await tx.claim(service, context.idempotency_key):
                    await apply(tx)
            if faults.fail_after == step:
                raise ServiceUnavailable(f"{step}: connection lost after the request")
            if faults.slow == step:
                await asyncio.sleep(self.timeout + faults.slow_by)
            return {f"{step}_done": True}

        return action

    def _compensation(self, step: str) -> Any:
        async def compensation(context: StepContext) -> Mapping[str, Any] | None:
            left = self._compensation_failures.get(step, 0)
            if left > 0:
                self._compensation_failures[step] = left - 1
                raise ServiceUnavailable(f"{step}: compensation service unavailable")
            service, account, amount = self._change(step, context.data)
            async with self.db.transaction() as tx:
                if not await tx.claim(service, context.compensation_id):
                    return None  # this compensation already ran
                if await tx.claim(service, context.idempotency_key):
                    return None  # the action never applied; the key now blocks a late one
                await tx.credit(account, -amount, message_id=context.compensation_id)
            return None

        return compensation
