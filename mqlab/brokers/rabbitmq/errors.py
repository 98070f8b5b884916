"""The errors of the RabbitMQ interface, one class per way an operation fails.

They are a module of their own because both halves of the interface raise them: the adapter's
(:mod:`mqlab.brokers.rabbitmq.api`) and its deliveries' and consumers'
(:mod:`mqlab.brokers.rabbitmq.delivery`). Import them from ``api``, like the rest of the
interface.
"""

from __future__ import annotations

from mqlab.brokers.base import BrokerError


class RabbitMQError(BrokerError):
    """A RabbitMQ operation failed; the message is one line naming what and why.

    These error classes live in the interface so that code written against it can catch
    them whichever backend (the real node or the simulator) raised them.
    """


class Unroutable(RabbitMQError):
    """A ``mandatory`` publish matched no queue, so RabbitMQ returned it (basic.return)."""


class PublishRejected(RabbitMQError):
    """RabbitMQ answered a publish with a negative confirm (basic.nack)."""


class NotFound(RabbitMQError):
    """The exchange or queue does not exist (AMQP 404 NOT_FOUND)."""


class PreconditionFailed(RabbitMQError):
    """A declaration clashes with what exists, or a settle used a stale tag (AMQP 406)."""


class ConnectionLost(RabbitMQError):
    """The connection or channel closed under an operation; the adapter is reconnecting."""


class AlreadySettled(RabbitMQError):
    """A delivery was acked/nacked twice, or fetched with ``no_ack`` (nothing to settle)."""
