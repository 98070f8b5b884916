"""Retry under contention against a real row in the lab's PostgreSQL (marker ``postgres``)."""

from __future__ import annotations

import random

import pytest

from mqlab.brokers.base import BrokerUnavailable
from mqlab.lab.endpoints import Endpoints
from mqlab.patterns.contention import ALL_STRATEGIES, ContentionSettings, run_trial
from mqlab.patterns.contention_postgres import (
    MAX_CLIENTS,
    PostgresRow,
    run_postgres,
    table_exists,
)
from mqlab.patterns.retry import Strategy

SETTINGS = {"base": 0.005, "cap": 0.2, "delay_mean": 0.004, "delay_sd": 0.001}


@pytest.mark.postgres
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
async def test_every_client_wrote_exactly_once_and_the_table_is_dropped(
    endpoints: Endpoints, strategy: Strategy
) -> None:
    clients = 6
    row = PostgresRow(endpoints.postgres_dsn, clients)
    async with row:
        assert await table_exists(endpoints.postgres_dsn, row.table)
        result = await run_trial(
            row, strategy, ContentionSettings(clients, **SETTINGS), random.Random(1)
        )
        writers = await row.writers()
    assert result.final_version == clients
    assert sorted(writers) == list(range(clients))
    assert result.calls == 2 * (clients + result.conflicts)
    assert not await table_exists(endpoints.postgres_dsn, row.table)


@pytest.mark.postgres
async def test_a_stale_write_changes_nothing(endpoints: Endpoints) -> None:
    async with PostgresRow(endpoints.postgres_dsn, 2) as row:
        seen = await row.read(0)
        assert await row.write(1, seen)
        assert not await row.write(0, seen)  # client 0 read before client 1 wrote
        assert await row.read(0) == 1
        assert await row.writers() == [1]
        await row.reset()
        assert (await row.read(1), await row.writers()) == (0, [])


@pytest.mark.postgres
async def test_the_experiment_summarises_real_trials(endpoints: Endpoints) -> None:
    summaries = await run_postgres(
        [Strategy.NONE, Strategy.FULL_JITTER],
        [3, 5],
        runs=2,
        seed=0,
        dsn=endpoints.postgres_dsn,
        **SETTINGS,
    )
    assert [(s.clients, s.strategy, s.runs) for s in summaries] == [
        (3, Strategy.NONE, 2),
        (3, Strategy.FULL_JITTER, 2),
        (5, Strategy.NONE, 2),
        (5, Strategy.FULL_JITTER, 2),
    ]
    assert all(s.mean_calls >= 2 * s.clients for s in summaries)


async def test_an_unreachable_server_names_the_command_that_starts_it() -> None:
    with pytest.raises(BrokerUnavailable, match=r"mqlab lab up postgres"):
        async with PostgresRow("postgresql://mqlab@127.0.0.1:1/mqlab", 2, connect_timeout=1):
            pass


def test_client_counts_are_bounded_by_the_connections_it_may_take() -> None:
    with pytest.raises(ValueError, match=str(MAX_CLIENTS)):
        PostgresRow("postgresql://mqlab@127.0.0.1:1/mqlab", MAX_CLIENTS + 1)
