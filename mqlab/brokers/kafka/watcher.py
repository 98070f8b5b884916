"""The real Kafka adapter's cluster watcher: which brokers are up, who leads what.

A background task asks every broker for metadata every ``watch_interval`` seconds for as long
as the adapter is connected, whether or not anyone listens yet: a change can only be reported
against the state seen before it, and the cost (one small request per broker per half second)
is nothing next to a learner's missed "broker 2 is down". It emits BrokerDown / BrokerUp
(``node="kafka-broker-<id>"``, the lab's process and proxy names) when a node leaves or rejoins
the cluster's metadata (killed, or fenced by the controller) or stops answering this client (a
network toxic), and LeaderChanged when a partition of the adapter's namespace gets a new leader
or ISR.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from mqlab.brokers.kafka import wire
from mqlab.brokers.kafka.wire import REBOOTSTRAP_TIMEOUT
from mqlab.observe.events import LeaderChanged

if TYPE_CHECKING:
    from mqlab.brokers.kafka.client import KafkaBroker

WATCH_NODE_TIMEOUT = 1.5
"""Seconds the watcher waits for one broker's metadata answer before counting it unreachable."""


def node_name(node_id: int) -> str:
    """How observations name a broker: ``kafka-broker-<node id>``.

    The lab names its broker processes and their Toxiproxy proxies the same way (node id N is
    ``kafka-broker-N``), and so does the simulator, so a BrokerDown lines up with the fault
    that caused it (FaultInjected targets those names) on a real cluster and on ``sim``.
    """
    return f"kafka-broker-{node_id}"


@dataclass(slots=True)
class NodeState:
    """What the watcher last knew about one broker."""

    host: str
    port: int
    registered: bool = True
    reachable: bool = True

    @property
    def up(self) -> bool:
        """Registered in the cluster's metadata and answering this client."""
        return self.registered and self.reachable


class ClusterWatcher:
    """Watches one adapter's cluster from its own client (see the module docstring).

    Args:
        broker: the adapter whose bus gets the observations and whose namespace decides which
            partitions are reported.
        view: the metadata the adapter connected with (the state changes are measured from).
    """

    def __init__(self, broker: KafkaBroker, view: wire.ClusterView) -> None:
        self._broker = broker
        self.nodes: dict[int, NodeState] = {
            node_id: NodeState(host, port) for node_id, (host, port) in view.brokers.items()
        }
        """Every broker seen so far, by node id (fenced and unreachable ones included)."""
        self.partitions: dict[tuple[str, int], wire.PartitionState] = {}
        """The namespace's partitions as last seen."""
        self.remember_partitions(view, emit=False)
        self._client = AIOKafkaClient(
            bootstrap_servers=broker.bootstrap,
            client_id=f"{broker.namespace}-watcher",
            # A short request timeout recycles a connection stuck behind a network toxic or a
            # paused broker quickly, so the next round asks it afresh.
            request_timeout_ms=int(WATCH_NODE_TIMEOUT * 1000),
        )
        wire.fall_back_to_bootstrap(self._client, REBOOTSTRAP_TIMEOUT)
        wire.bootstrap_from_first_answer(self._client)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background rounds."""
        self._task = asyncio.create_task(self._run(), name=f"{self._broker.namespace}-watcher")

    async def stop(self) -> None:
        """Stop the rounds and close the watcher's client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await wire.stop_within(5.0, self._client.close())

    async def _run(self) -> None:
        """Every watch_interval: ask each broker for metadata and report what changed."""
        while True:
            await asyncio.sleep(self._broker.watch_interval)
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the watcher must outlive any single bad round
                logging.getLogger(__name__).debug("kafka watcher round failed: %r", error)

    async def _round(self) -> None:
        client = self._client
        if not client.cluster.brokers():
            # Not bootstrapped yet, or every broker vanished: start from the bootstrap list.
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                async with asyncio.timeout(WATCH_NODE_TIMEOUT * 2):
                    await client.bootstrap()

        async def ask_every_node() -> dict[int, tuple[wire.ClusterView, Any] | None]:
            known_to_client = {b.nodeId for b in client.cluster.brokers()}
            candidates = sorted(
                known_to_client | {n for n, s in self.nodes.items() if s.registered}
            )

            async def ask(node_id: int) -> tuple[wire.ClusterView, Any] | None:
                if node_id not in known_to_client:
                    return None
                try:
                    async with asyncio.timeout(WATCH_NODE_TIMEOUT):
                        return await wire.fetch_metadata(client, node_id, None)
                except (KafkaError, OSError, TimeoutError):
                    return None

            answers = await asyncio.gather(*(ask(n) for n in candidates))
            return dict(zip(candidates, answers, strict=True))

        answers = await ask_every_node()
        if not any(answers.values()) and await wire.rebootstrap(client, REBOOTSTRAP_TIMEOUT):
            # No known broker answered, yet one of the bootstrap addresses did: the client's
            # list held only dead brokers (the live ones were fenced when it was last
            # refreshed). Ask again with the fresh list rather than report the cluster down.
            answers = await ask_every_node()
        answered = sorted(n for n, answer in answers.items() if answer is not None)
        if not answered:
            self._report_nodes(None, set())
            return
        # The lowest answering node's view: a stable choice, so two brokers that are a few
        # milliseconds apart in applying a change do not make leaders seem to flap.
        reply = answers[answered[0]]
        assert reply is not None
        view, response = reply
        client.cluster.update_metadata(response)
        # Keeps the adapter's own idea of the brokers fresh too.
        self._broker.learn_metadata(response)
        self._report_nodes(view, set(answered))
        self.remember_partitions(view, emit=True)

    def _report_nodes(self, view: wire.ClusterView | None, answered: set[int]) -> None:
        """Update node states from one round and emit BrokerDown / BrokerUp for changes."""
        registered = view.brokers if view is not None else {}
        for node_id, (host, port) in registered.items():
            self.nodes.setdefault(node_id, NodeState(host, port, registered=False))
        for node_id, state in sorted(self.nodes.items()):
            was_up = state.up
            if view is not None:
                state.registered = node_id in registered
                if node_id in registered:
                    state.host, state.port = registered[node_id]
            state.reachable = node_id in answered
            if was_up and not state.up:
                if view is None:
                    detail = "no broker of the cluster answers this client"
                elif not state.registered:
                    detail = "left the cluster metadata (stopped, or fenced by the controller)"
                else:
                    detail = "registered in the cluster but not answering this client"
                self._broker.report_node_down(
                    node_name(node_id), f"{state.host}:{state.port} {detail}"
                )
            elif not was_up and state.up:
                self._broker.report_node_up(
                    node_name(node_id),
                    f"{state.host}:{state.port} is registered and answering again",
                )

    def remember_partitions(self, view: wire.ClusterView, *, emit: bool) -> None:
        """Keep this namespace's partition states; emit LeaderChanged for the changes."""
        current = {
            (topic, p): state
            for topic, states in view.topics.items()
            if self._broker.owns_topic(topic)
            for p, state in states.items()
        }
        if emit:
            for (topic, p), state in sorted(current.items()):
                before = self.partitions.get((topic, p))
                if before is None or (before.leader, before.isr) == (state.leader, state.isr):
                    continue
                self._broker.emit(
                    LeaderChanged(
                        at=self._broker.bus.now(),
                        broker=self._broker.name,
                        topic=topic,
                        partition=p,
                        leader=state.leader,
                        isr=state.isr,
                        previous_leader=before.leader,
                        previous_isr=before.isr,
                    )
                )
        self.partitions = current
