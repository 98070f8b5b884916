"""The lab's services by name, imported only when first used.

A learner types ``mqlab lab up kafka``; the name maps to an import path here (like kombu's
transport aliases), so that ``mqlab --help`` and ``mqlab lab status`` never import the code of
services they do not touch. The order of :data:`SERVICE_PATHS` is the start order of
``mqlab lab up`` with no arguments (Toxiproxy first: the brokers' proxies live in it).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping

from mqlab.lab.errors import LabError
from mqlab.lab.spec import Service

SERVICE_PATHS: dict[str, str] = {
    "toxiproxy": "mqlab.lab.native.toxiproxy:ToxiproxyService",
    "kafka": "mqlab.lab.kafka:KafkaService",
    "rabbitmq": "mqlab.lab.native.rabbitmq:RabbitMQService",
    "nats": "mqlab.lab.native.nats:NatsService",
    "sqs": "mqlab.lab.native.sqs:SqsService",
    "redis": "mqlab.lab.native.redis:RedisService",
    "postgres": "mqlab.lab.native.postgres:PostgresService",
}


def _load(name: str) -> Service:
    module_name, _, attribute = SERVICE_PATHS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise LabError(f"the {name} service cannot be loaded: {error}") from None
    service_class = getattr(module, attribute)
    service = service_class()
    if not isinstance(service, Service):
        raise TypeError(f"{SERVICE_PATHS[name]} is not a lab Service")
    return service


class _LazyServices(Mapping[str, Service]):
    """A read-only ``name -> Service`` mapping that builds each service on first access."""

    def __init__(self) -> None:
        self._built: dict[str, Service] = {}

    def __getitem__(self, name: str) -> Service:
        if name not in SERVICE_PATHS:
            raise KeyError(name)
        if name not in self._built:
            self._built[name] = _load(name)
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(SERVICE_PATHS)

    def __len__(self) -> int:
        return len(SERVICE_PATHS)


SERVICES: Mapping[str, Service] = _LazyServices()


def resolve_service_name(name: str) -> str:
    """Normalise ``name`` (case, spaces) and check it is a service.

    Raises:
        LabError: unknown name, with a "did you mean" suggestion when one is close.
    """
    normalised = name.strip().lower()
    if normalised in SERVICE_PATHS:
        return normalised
    close = difflib.get_close_matches(normalised, SERVICE_PATHS, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise LabError(f"unknown service {name!r}{hint} (services: {', '.join(SERVICE_PATHS)})")


def get_service(name: str) -> Service:
    """The service called ``name``.

    Raises:
        LabError: unknown name ("did you mean ...") or its module cannot be imported.
    """
    return SERVICES[resolve_service_name(name)]
