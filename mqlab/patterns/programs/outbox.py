"""Outbox programs: an order service that tells the world, by dual write or by outbox.

``place-order`` books each order (a credit of the shop's sales account in the run's business
database) and announces it as the event ``order-<n>`` on the scenario's channel (a Kafka
topic): with ``dual-write`` it commits and then publishes (a crash at ``after_commit`` leaves a
committed order that nobody hears of: ``events_unpublished``); with ``outbox`` the event is a
row written in the same transaction, and ``outbox-relay`` publishes the rows later, at least
once (a crash at ``after_publish`` publishes its batch again: consumers deduplicate on the
event's id).
"""

from __future__ import annotations

import json

from mqlab.brokers.kafka.api import KafkaAPI
from mqlab.observe.events import Note
from mqlab.patterns.database import OutboxMessage, Transaction
from mqlab.patterns.outbox import OutboxRelay, dual_write, kafka_publisher, write_with_outbox
from mqlab.patterns.programs import Param, ProgramContext, program

SALES = "sales:shop"
"""The account each order credits."""


def _kafka(ctx: ProgramContext, program_id: str) -> KafkaAPI:
    if not isinstance(ctx.broker, KafkaAPI):
        raise ValueError(f"{program_id} runs in a scenario with brokers: [kafka, sim]")
    return ctx.broker


@program(
    "place-order",
    "Book orders and announce each one: commit then publish (dual write), or an outbox row",
    params={
        "orders": Param((list,), [1, 2, 3], "Order numbers to place, in order."),
        "mode": Param(
            (str,),
            "outbox",
            "dual-write: commit, then publish; outbox: the event in the same transaction.",
            ("dual-write", "outbox"),
        ),
        "amount": Param((int,), 30, "What each order is worth."),
    },
    crash_points=("after_commit",),
    services=("postgres",),
)
async def place_order(ctx: ProgramContext) -> None:
    """Place each order; the crash hook decides where the service dies."""
    kafka = _kafka(ctx, "place-order")
    db = await ctx.database()
    numbers = ctx.params["orders"]
    assert isinstance(numbers, list)
    amount, topic = ctx.int_param("amount"), kafka.qualify(ctx.channel)
    dual = ctx.str_param("mode") == "dual-write"
    producer = await kafka.producer(acks="all", name="order-service") if dual else None
    try:
        for number in numbers:
            order_id = f"order-{number}"
            message = OutboxMessage(
                message_id=order_id,
                destination=topic,
                payload=json.dumps({"order": order_id, "amount": amount}).encode(),
                key="ada",
            )

            async def book(tx: Transaction, order_id: str = order_id) -> None:
                await tx.credit(SALES, amount, message_id=order_id)

            if producer is not None:
                await dual_write(
                    db,
                    order_id,
                    book,
                    message,
                    kafka_publisher(producer),
                    reporter=ctx.reporter,
                    crash=ctx.crash,
                )
            else:
                await write_with_outbox(
                    db, order_id, book, message, reporter=ctx.reporter, crash=ctx.crash
                )
    finally:
        if producer is not None:
            await producer.close()


@program(
    "outbox-relay",
    "Publish the outbox's rows in order and mark them relayed (at least once)",
    params={"batch": Param((int,), 100, "Rows per relay transaction.")},
    crash_points=("after_publish", "after_relay_commit"),
    services=("postgres",),
)
async def outbox_relay(ctx: ProgramContext) -> None:
    """Relay until the outbox has no unrelayed row left."""
    kafka = _kafka(ctx, "outbox-relay")
    db = await ctx.database()
    producer = await kafka.producer(acks="all", idempotent=True, name="outbox-relay")
    relay = OutboxRelay(
        db,
        kafka_publisher(producer),
        batch=ctx.int_param("batch"),
        reporter=ctx.reporter,
        crash=ctx.crash,
    )
    relayed = 0
    try:
        while count := await relay.relay_once():
            relayed += count
    finally:
        await producer.close()
    ctx.reporter.emit(Note, text=f"outbox relay: {relayed} row(s) published and marked")
