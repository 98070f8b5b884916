"""Options and arguments shared by several commands (one definition, one help text)."""

from __future__ import annotations

from typing import Annotated

import typer

ServicesArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Services (kafka, rabbitmq, nats, sqs, redis, postgres, toxiproxy); none = all.",
        show_default=False,
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Only print errors and results.")]
ComposeOption = Annotated[
    bool,
    typer.Option("--compose", help="Use docker compose (compose/docker-compose.yml) instead."),
]


ProcessArgument = Annotated[
    str, typer.Argument(help="A lab process: kafka-broker-2, rabbitmq, nats, sqs, redis ...")
]
ProxyArgument = Annotated[
    str, typer.Argument(help="A proxy: rabbitmq, nats, sqs, kafka-broker-1 .. kafka-broker-3.")
]


BrokerOption = Annotated[
    str,
    typer.Option(
        "--broker",
        "-b",
        help="kafka, rabbitmq, sqs, nats (the lab's real brokers), sim (the simulator, "
        "for the scenario's first system) or sim:<system>.",
    ),
]
SeedOption = Annotated[
    int, typer.Option("--seed", min=0, help="Simulator seed, 0 or more (same seed, same run).")
]
