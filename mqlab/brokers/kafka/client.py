"""The real Kafka adapter: aiokafka against the lab's KRaft cluster (or any Kafka 3.x).

Layout (the same in every system's package): this module is the adapter, :class:`KafkaBroker`,
with lifecycle, topics, producers and consumers, ``inspect()`` and ``cleanup()``; its producer
and consumer are in :mod:`~mqlab.brokers.kafka.producer` and :mod:`~mqlab.brokers.kafka.consumer`,
the cluster watcher in :mod:`~mqlab.brokers.kafka.watcher`, and the requests aiokafka lacks in
:mod:`~mqlab.brokers.kafka.wire`.

What it adds on top of aiokafka, and why:

* **Bounded waits.** aiokafka retries many failures for as long as its request timeout allows
  and an idempotent producer retries forever. Learners must get an answer instead of a hang,
  so every call here runs under a deadline and ends in a :class:`BrokerError` subclass with a
  one-line message: :class:`BrokerUnavailable` from ``connect()``, ``NotEnoughReplicas`` /
  ``ProduceTimedOut`` from ``send()``, :class:`OperationTimedOut` elsewhere.
* **Observations.** Every send, delivery, commit (explicit, automatic or transactional) and
  rebalance is reported on the bus. Kafka itself has no "redelivered" flag and no delivery
  count, so a record read again (a consumer died before committing, a rebalance, a ``seek``)
  is reported like a first delivery, on the real cluster and on the simulator alike: what
  shows the re-read is the same offset delivered twice, and the ledger's duplicates.
* **A cluster watcher** (:class:`~mqlab.brokers.kafka.watcher.ClusterWatcher`) reports
  BrokerDown / BrokerUp and LeaderChanged from metadata rounds twice a second.
* **Never stranded on dead brokers.** aiokafka asks only the brokers of the last metadata
  answer, which omits fenced ones; after "followers fenced, then the leader killed" a client
  would know only the dead leader and stay stuck until that process returns. Every client the
  adapter creates falls back to the bootstrap addresses when no known broker answers (see
  :func:`mqlab.brokers.kafka.wire.fall_back_to_bootstrap`), and so do the adapter's own
  requests and the watcher.
* **Never held up by a paused broker at the start.** aiokafka starts a client from the
  bootstrap addresses one at a time, in a shuffled order, waiting each one's request timeout,
  and a paused broker takes connections without ever answering: with one broker of three
  paused, one start in three failed. Every client starts from the address that answers first
  (:func:`mqlab.brokers.kafka.wire.bootstrap_from_first_answer`), and ``connect()`` reads its
  first metadata that way too.
* **The controller.** In KRaft the metadata answer names a random broker as "controller"; the
  snapshot's ``controller_id`` is the leader of the KRaft quorum instead (DescribeQuorum,
  which brokers forward to the controllers), so with the lab's dedicated controller it is 0
  and no broker is flagged as controller.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, Unpack

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import (
    IllegalStateError,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)

from mqlab.brokers.base import AdapterOptions, BrokerError, BrokerUnavailable, OperationTimedOut
from mqlab.brokers.kafka import wire
from mqlab.brokers.kafka.api import (
    ConsumerSettings,
    GroupInfo,
    GroupMember,
    GroupOffset,
    KafkaAPI,
    KafkaConsumer,
    KafkaNode,
    KafkaProducer,
    KafkaRecord,
    KafkaSnapshot,
    PartitionInfo,
    ProducerSettings,
    TopicInfo,
    TopicPartition,
)
from mqlab.brokers.kafka.consumer import Consumer, RebalanceListener
from mqlab.brokers.kafka.producer import Producer
from mqlab.brokers.kafka.watcher import ClusterWatcher
from mqlab.brokers.kafka.wire import REBOOTSTRAP_TIMEOUT, error_text, key_text

__all__ = ["KafkaBroker"]

# aiokafka logs connection failures at ERROR level. With no logging configured, Python would
# print them raw on stderr next to the adapter's own one-line error; a NullHandler stops that
# fallback while an application that does configure logging still receives the records.
logging.getLogger("aiokafka").addHandler(logging.NullHandler())

_T = TypeVar("_T")

_ASSIGNORS = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}

_ALWAYS_REPORTED_CONFIGS = ("min.insync.replicas",)
"""Topic configs reported in TopicInfo.config even when inherited from the broker default:
acks=all lessons hinge on min.insync.replicas, whatever set it."""


# --- the broker ---------------------------------------------------------------------------


COORDINATOR_MOVE_SECONDS = 10.0
"""How long a group's coordinator may take to settle on a broker after a kill or restart."""


class KafkaBroker(KafkaAPI):
    """Kafka through aiokafka, in Kafka's vocabulary (see :class:`KafkaAPI`).

    Args:
        request_timeout: seconds any single operation (admin call, send, commit, close) may
            take before it fails with a BrokerError; producers default to the value they are
            given in :meth:`producer`.
        watch_interval: seconds between two metadata rounds of the cluster watcher.
    """

    def __init__(
        self,
        *,
        request_timeout: float = 10.0,
        watch_interval: float = 0.5,
        **options: Unpack[AdapterOptions],
    ) -> None:
        super().__init__(**options)
        self.request_timeout = request_timeout
        self.watch_interval = watch_interval
        self._admin: AIOKafkaAdminClient | None = None
        self._watcher: ClusterWatcher | None = None
        self._created_topics: set[str] = set()
        self._used_groups: set[str] = set()

    @property
    def bootstrap(self) -> str:
        """The bootstrap addresses (``host:port,...``) this adapter connects to."""
        return self.endpoints.kafka_bootstrap

    # -- small helpers shared by producers and consumers -----------------------------------

    async def bounded(
        self, awaitable: Awaitable[_T], what: str, timeout: float | None = None
    ) -> _T:
        """Await ``awaitable`` for at most ``timeout`` (default: request_timeout) seconds.

        Raises:
            OperationTimedOut: it did not finish in time.
            BrokerError: aiokafka raised; the message names the operation and the error.
        """
        seconds = self.request_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(seconds):
                return await awaitable
        except TimeoutError:
            raise OperationTimedOut(
                f"kafka: {what} did not finish within {seconds:g}s (cluster at {self.bootstrap})"
            ) from None
        except (KafkaError, OSError) as error:
            raise BrokerError(f"kafka: {what} failed: {error_text(error)}") from error
        except (IllegalStateError, AssertionError) as error:  # aiokafka's usage errors
            raise BrokerError(f"kafka: {what}: {error_text(error)}") from error

    async def let_go(
        self, closed: Consumer | Producer, stopping: Awaitable[object], timeout: float
    ) -> None:
        """A producer or consumer closed by its owner: forget it, then await its aiokafka
        client's ``stopping`` (a flush, a LeaveGroup) for at most ``timeout`` seconds, ignoring
        its errors, because against a dead cluster that goodbye would wait for ever."""
        self.forget(closed)
        await wire.stop_within(timeout, stopping, ignoring=(KafkaError, OSError))

    def report_delivery(self, consumer: Consumer, record: KafkaRecord) -> None:
        """Emit Delivered for a fetched record. Kafka has no redelivered flag and no delivery
        count: a record read again (after a crash, a rebalance or a seek) is delivered like the
        first time, and only the consumer's own bookkeeping can tell it apart."""
        self.report_delivered(
            record.topic,
            record.message_id,
            consumer.name,
            key=key_text(record.key),
            partition=record.partition,
            position=record.offset,
        )

    @property
    def _client(self) -> AIOKafkaClient:
        if self._admin is None:
            raise BrokerError("kafka: the adapter is not connected (call connect() first)")
        client: AIOKafkaClient = self._admin._client
        return client

    def _node_order(self) -> list[int]:
        """Nodes to ask, the ones believed up first (shuffled so load spreads).

        Every node the client knows is in the list: the watcher's states only decide the
        order, they may lag behind the client's metadata (a node the watcher last saw fenced).
        """
        nodes = self._watcher.nodes if self._watcher is not None else {}
        up = [n for n, state in nodes.items() if state.up]
        down = [n for n, state in nodes.items() if not state.up and state.registered]
        random.shuffle(up)
        known = {b.nodeId for b in self._client.cluster.brokers()}
        ordered = [n for n in up + down if n in known]
        return ordered + sorted(known.difference(ordered))

    async def _ask_any(self, what: str, ask: Any) -> Any:
        """Run ``ask(node_id)`` against the first node that answers (bounded).

        When no known node answers, the broker list itself may be stale (only dead brokers
        left in it): the client's metadata is then refreshed from the bootstrap addresses and
        the nodes it did not know yet are asked too.
        """
        failures: dict[str, list[str]] = {}

        async def first_answer() -> Any:
            asked: set[int] = set()
            rebootstrapped = False
            while True:
                for node_id in self._node_order():
                    if node_id in asked:
                        continue
                    asked.add(node_id)
                    try:
                        async with asyncio.timeout(min(self.request_timeout, 3.0)):
                            return await ask(node_id)
                    except (KafkaError, OSError, TimeoutError) as error:
                        failures.setdefault(error_text(error), []).append(str(node_id))
                if rebootstrapped or not await wire.rebootstrap(self._client, REBOOTSTRAP_TIMEOUT):
                    break
                rebootstrapped = True
            why = "; ".join(
                f"node{'s' if len(nodes) > 1 else ''} {', '.join(nodes)}: {text}"
                for text, nodes in failures.items()
            )
            raise BrokerError(f"kafka: {what}: no broker answered ({why or 'none known'})")

        return await self.bounded(first_answer(), what)

    async def _metadata(self, topics: list[str] | None = None) -> wire.ClusterView:
        async def ask(node_id: int) -> wire.ClusterView:
            view, response = await wire.fetch_metadata(self._client, node_id, topics)
            if topics is None:
                self._client.cluster.update_metadata(response)
            return view

        view: wire.ClusterView = await self._ask_any("metadata", ask)
        return view

    # -- lifecycle -------------------------------------------------------------------------

    async def _connect(self) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.namespace}-admin",
            request_timeout_ms=int(self.request_timeout * 1000),
        )
        wire.fall_back_to_bootstrap(admin._client, REBOOTSTRAP_TIMEOUT)
        wire.bootstrap_from_first_answer(admin._client)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await admin.start()
                self._admin = admin
                # Asked of every address at once: no watcher says yet which nodes answer, and
                # asking node by node would first wait out a paused one.
                first = await wire.view_from_bootstrap(
                    admin._client, min(self.request_timeout, 3.0)
                )
                view = first if first is not None else await self._metadata()
                if not view.brokers:
                    raise BrokerError("the cluster reports no live brokers")
        except (TimeoutError, KafkaError, OSError, BrokerError) as error:
            self._admin = None
            await wire.stop_within(2.0, admin.close())
            detail = (
                f"no answer within {self.connect_timeout:g}s"
                if isinstance(error, TimeoutError)
                else error_text(error)
            )
            raise BrokerUnavailable("kafka", self.bootstrap, detail) from None
        self._watcher = ClusterWatcher(self, view)
        self._watcher.start()

    async def _close(self) -> None:
        await self.close_clients()
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
        if self._admin is not None:
            await wire.stop_within(5.0, self._admin.close())
        self._admin = None

    # -- topics ----------------------------------------------------------------------------

    async def _create_topic(
        self, name: str, partitions: int, replication_factor: int, config: dict[str, str]
    ) -> TopicInfo:
        timeout_ms = int(self.request_timeout * 1000)

        async def ask(node_id: int) -> tuple[int, str | None]:
            return await wire.create_topic(
                self._client,
                node_id,
                name,
                partitions,
                replication_factor,
                config,
                timeout_ms,
            )

        error_code, message = await self._ask_any(f"create topic {name}", ask)
        if error_code != 0:
            error = for_code(error_code)
            if error is TopicAlreadyExistsError:
                raise BrokerError(f"kafka: topic {name} already exists")
            raise BrokerError(f"kafka: cannot create topic {name}: {message or error.__name__}")
        self._created_topics.add(name)
        await self._wait_for_leaders(name, partitions)
        return await self.describe_topic(name)

    async def _wait_for_leaders(self, name: str, partitions: int) -> None:
        """Wait until every live broker reports a leader for every partition of ``name``."""

        def complete(view: wire.ClusterView) -> bool:
            states = view.partitions(name)
            return len(states) == partitions and all(s.leader >= 0 for s in states.values())

        await self._until_every_broker_agrees([name], complete, f"wait for leaders of {name}")

    async def _until_every_broker_agrees(
        self, topics: list[str], condition: Callable[[wire.ClusterView], bool], what: str
    ) -> None:
        """Poll every live broker's metadata for ``topics`` until ``condition`` holds for all.

        Each broker learns about topic changes from the controller on its own schedule; a
        client asking one that has not caught up would be told a new topic does not exist
        (or see a deleted one), so creation and deletion wait for all of them (bounded).
        """

        async def agreed() -> None:
            while True:
                view = await self._metadata(topics)
                if condition(view):
                    answers = await asyncio.gather(
                        *(wire.fetch_metadata(self._client, node, topics) for node in view.brokers),
                        return_exceptions=True,
                    )
                    if all(
                        not isinstance(answer, BaseException) and condition(answer[0])
                        for answer in answers
                    ):
                        return
                await asyncio.sleep(0.05)

        await self.bounded(agreed(), what)

    async def delete_topic(self, name: str) -> None:
        await self._delete_topics([name])
        self._created_topics.discard(name)

    async def _delete_topics(self, names: list[str]) -> None:
        if not names:
            return
        timeout_ms = int(self.request_timeout * 1000)

        async def ask(node_id: int) -> dict[str, int]:
            return await wire.delete_topics(self._client, node_id, names, timeout_ms)

        results = await self._ask_any(f"delete topics {', '.join(names)}", ask)
        for topic, error_code in sorted(results.items()):
            if error_code not in (0, wire.UNKNOWN_TOPIC_OR_PARTITION):
                raise BrokerError(
                    f"kafka: cannot delete topic {topic}: {for_code(error_code).__name__}"
                )

        await self._until_every_broker_agrees(
            names,
            lambda view: not any(name in view.topics for name in names),
            f"wait for deletion of {', '.join(names)}",
        )

    async def describe_topic(self, name: str) -> TopicInfo:
        view = await self._metadata([name])
        if name not in view.topics:
            raise BrokerError(f"kafka: topic {name} does not exist")
        (info,) = await self._topic_infos(view, [name])
        return info

    async def _topic_infos(self, view: wire.ClusterView, names: list[str]) -> list[TopicInfo]:
        """TopicInfo for ``names`` (all in ``view``): offsets and configs fetched in bulk."""
        leaders = {
            (name, p): state.leader
            for name in names
            for p, state in view.partitions(name).items()
            if state.leader >= 0
        }
        client = self._client
        earliest, latest, configs = await self.bounded(
            asyncio.gather(
                wire.list_offsets(client, leaders, wire.EARLIEST),
                wire.list_offsets(client, leaders, wire.LATEST),
                self._topic_configs(names),
            ),
            "describe topics",
        )
        infos = []
        for name in names:
            states = view.partitions(name)
            partitions = tuple(
                PartitionInfo(
                    partition=p,
                    leader=state.leader,
                    replicas=state.replicas,
                    isr=state.isr,
                    log_start=earliest.get((name, p), 0),
                    # ListOffsets(latest) answers the high watermark; the leader's log end
                    # offset is not exposed to clients, so both fields carry that answer.
                    high_watermark=latest.get((name, p), 0),
                    log_end=latest.get((name, p), 0),
                )
                for p, state in sorted(states.items())
            )
            replication = len(partitions[0].replicas) if partitions else 0
            infos.append(
                TopicInfo(
                    name=name,
                    partitions=partitions,
                    replication_factor=replication,
                    config=configs.get(name, {}),
                )
            )
        return infos

    async def _topic_configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        """Topic-level overrides of ``names`` plus the always-reported effective configs."""
        if not names:
            return {}

        async def ask(node_id: int) -> dict[str, dict[str, str]]:
            return await wire.topic_configs(self._client, node_id, names, _ALWAYS_REPORTED_CONFIGS)

        configs: dict[str, dict[str, str]] = await self._ask_any("describe topic configs", ask)
        return configs

    # -- producers and consumers -----------------------------------------------------------

    async def _open_producer(self, settings: ProducerSettings) -> KafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self.namespace}-{settings.name}",
            acks=settings.acks,
            enable_idempotence=settings.idempotent,
            transactional_id=settings.transactional_id,
            request_timeout_ms=int(settings.request_timeout * 1000),
            linger_ms=settings.linger_ms,
            transaction_timeout_ms=int(settings.transaction_timeout * 1000),
        )
        wire.fall_back_to_bootstrap(producer.client, REBOOTSTRAP_TIMEOUT)
        wire.bootstrap_from_first_answer(producer.client)
        await self._start_client(producer.start(), producer.stop, f"producer {settings.name}")
        return Producer(self, producer, settings)

    async def _open_consumer(
        self, topics: tuple[str, ...], settings: ConsumerSettings
    ) -> KafkaConsumer:
        name = settings.name
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            # The member id the broker assigns is "<client_id>-<uuid>", and both assignors
            # order members by it: naming the client after the consumer makes the assignment
            # predictable from the names (and readable in Kafka's own tools).
            client_id=name,
            group_id=settings.group_id,
            enable_auto_commit=settings.auto_commit,
            auto_commit_interval_ms=int(settings.auto_commit_interval * 1000),
            auto_offset_reset=settings.auto_offset_reset,
            isolation_level=settings.isolation_level,
            partition_assignment_strategy=(_ASSIGNORS[settings.assignment_strategy],),
            # Short on purpose (see KafkaAPI.consumer): a heartbeat every 0.3 s notices a
            # rebalance within a heartbeat, and a 6 s session lets a crashed member's
            # partitions move on within seconds instead of Kafka's default 45 s.
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=int(settings.heartbeat_interval * 1000),
            max_poll_records=settings.max_poll_records,
            max_poll_interval_ms=int(settings.max_poll_interval * 1000),
            request_timeout_ms=int(self.request_timeout * 1000),
        )
        wire.fall_back_to_bootstrap(consumer._client, REBOOTSTRAP_TIMEOUT)
        wire.bootstrap_from_first_answer(consumer._client)
        await self._start_client(consumer.start(), consumer.stop, f"consumer {name}")
        wrapped = Consumer(self, consumer, settings, request_timeout=self.request_timeout)
        wrapped.watch_commits()
        # Subscribing after start() keeps connect bounded: the group join then happens in the
        # background and the first polls return nothing until the assignment arrives.
        try:
            consumer.subscribe(list(topics), listener=RebalanceListener(wrapped))
        except (KafkaError, TypeError, ValueError) as error:
            await wrapped.close()
            raise BrokerError(
                f"kafka: {name} cannot subscribe to {list(topics)}: {error}"
            ) from error
        self._used_groups.add(settings.group_id)
        return wrapped

    async def _start_client(self, start: Awaitable[Any], stop: Any, what: str) -> None:
        """Start an aiokafka client within connect_timeout, or stop it and explain."""
        self._require_admin()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await start
        except (TimeoutError, KafkaError, OSError) as error:
            await wire.stop_within(2.0, stop())
            detail = (
                f"{what} got no answer within {self.connect_timeout:g}s"
                if isinstance(error, TimeoutError)
                else f"{what}: {error_text(error)}"
            )
            raise BrokerUnavailable("kafka", self.bootstrap, detail) from None

    async def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        offsets = await self._at_coordinator(
            group_id,
            lambda coordinator: wire.committed_offsets(self._client, coordinator, group_id),
            f"offsets of group {group_id}",
        )
        return {TopicPartition(t, p): offset for (t, p), offset in offsets.items()}

    async def _at_coordinator(
        self,
        group_id: str,
        call: Callable[[int], Awaitable[_T]],
        what: str,
        *,
        unsettled: Callable[[_T], bool] = lambda _answer: False,
        pause: float = 0.2,
    ) -> _T:
        """``call(coordinator)`` at ``group_id``'s coordinator, looked up again while it moves
        (NOT_COORDINATOR, loading, unavailable, from the lookup or from the call: a broker was
        just killed, restarted or resumed, and a grader's read of the offsets failed on it, so
        did a cleanup right after a resume) for up to :data:`COORDINATOR_MOVE_SECONDS`.

        Args:
            group_id: the group whose coordinator answers.
            call: the request, given the coordinator's node id.
            what: the operation, for error messages.
            unsettled: whether an answer that came back (rather than raised) says to ask again:
                requests that report per-group error codes in their answer, such as
                DeleteGroups, signal a moving coordinator that way.
            pause: seconds between two attempts.

        Returns:
            The first settled answer, or the last answer when the time is up.

        Raises:
            BrokerError: any other error, or the coordinator still moving after that.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + COORDINATOR_MOVE_SECONDS
        while True:
            coordinator = await self._coordinator(group_id)
            if coordinator is None:
                if loop.time() >= deadline:
                    raise BrokerError(
                        f"kafka: {what}: group {group_id} still has no coordinator after "
                        f"{COORDINATOR_MOVE_SECONDS:g}s"
                    )
                await asyncio.sleep(pause)
                continue
            try:
                answer = await self.bounded(call(coordinator), what)
            except BrokerError as error:
                moving = getattr(error.__cause__, "errno", None) in wire.COORDINATOR_MOVING
                if not moving or loop.time() >= deadline:
                    raise
            else:
                if not unsettled(answer) or loop.time() >= deadline:
                    return answer
            await asyncio.sleep(pause)

    async def _coordinator(self, group_id: str) -> int | None:
        """The node that coordinates ``group_id``; None while the broker asked can name none
        (COORDINATOR_NOT_AVAILABLE and the like: right after a broker died or came back, the
        coordinator is moving, and every broker would say the same)."""

        async def ask(node_id: int) -> int | None:
            try:
                return await wire.find_coordinator(self._client, node_id, group_id)
            except KafkaError as error:
                if getattr(error, "errno", None) in wire.COORDINATOR_MOVING:
                    return None
                raise

        coordinator: int | None = await self._ask_any(f"find the coordinator of {group_id}", ask)
        return coordinator

    def _require_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise BrokerError("kafka: the adapter is not connected (call connect() first)")
        return self._admin

    # -- inspect ---------------------------------------------------------------------------

    def _in_namespace(self, name: str) -> bool:
        return name.startswith(f"{self.namespace}-")

    def owns_topic(self, name: str) -> bool:
        """Whether ``name`` belongs to this adapter: inside its namespace, or created by it."""
        return self._in_namespace(name) or name in self._created_topics

    def learn_metadata(self, response: Any) -> None:
        """Feed a metadata answer someone else got (the watcher) to the admin client's cache."""
        if self._admin is not None:
            self._client.cluster.update_metadata(response)

    async def inspect(self) -> KafkaSnapshot:
        view = await self._metadata(None)
        topic_names = sorted(name for name in view.topics if self.owns_topic(name))
        topics = await self._topic_infos(view, topic_names)
        high_watermarks = {
            (topic.name, p.partition): p.high_watermark
            for topic in topics
            for p in topic.partitions
        }
        group_ids = sorted(
            group
            for group in await self.bounded(
                wire.list_groups(self._client, view.brokers), "list consumer groups"
            )
            if self._in_namespace(group) or group in self._used_groups
        )
        groups = [await self._group_info(group_id, high_watermarks) for group_id in group_ids]

        async def ask_quorum(node_id: int) -> int | None:
            return await wire.quorum_leader(self._client, node_id)

        try:
            controller_id: int | None = await self._ask_any("describe the quorum", ask_quorum)
        except BrokerError:
            controller_id = None
        nodes = self._watcher.nodes if self._watcher is not None else {}
        known = {node_id: (state.host, state.port) for node_id, state in nodes.items()}
        known.update(view.brokers)
        brokers = tuple(
            KafkaNode(
                node_id=node_id,
                host=host,
                port=port,
                alive=node_id in view.brokers,
                controller=node_id == controller_id,
            )
            for node_id, (host, port) in sorted(known.items())
        )
        return KafkaSnapshot(
            brokers=brokers, topics=tuple(topics), groups=tuple(groups), controller_id=controller_id
        )

    async def _group_info(
        self, group_id: str, high_watermarks: dict[tuple[str, int], int]
    ) -> GroupInfo:
        client = self._client
        state, committed = await self._at_coordinator(
            group_id,
            lambda coordinator: asyncio.gather(
                wire.describe_group(client, coordinator, group_id),
                wire.committed_offsets(client, coordinator, group_id),
            ),
            f"describe group {group_id}",
        )
        members = tuple(
            GroupMember(
                member_id=member.member_id,
                client_id=member.client_id,
                assignment=tuple(TopicPartition(t, p) for t, p in member.assignment),
            )
            for member in sorted(state.members, key=lambda m: m.member_id)
        )
        partitions = set(committed)
        partitions.update((tp.topic, tp.partition) for m in members for tp in m.assignment)
        outside = sorted({topic for topic, p in partitions if (topic, p) not in high_watermarks})
        if outside:  # the group reads topics outside this namespace: ask their leaders too
            view = await self._metadata(outside)
            leaders = {
                (topic, p): state.leader
                for topic in outside
                for p, state in view.partitions(topic).items()
                if state.leader >= 0
            }
            high_watermarks = {
                **high_watermarks,
                **await self.bounded(
                    wire.list_offsets(client, leaders, wire.LATEST), "list offsets"
                ),
            }
        offsets = tuple(
            GroupOffset(
                topic=topic,
                partition=partition,
                committed=committed.get((topic, partition)),
                high_watermark=high_watermarks.get((topic, partition), 0),
            )
            for topic, partition in sorted(partitions)
        )
        return GroupInfo(
            group_id=group_id,
            state=state.state,
            members=members,
            offsets=offsets,
            protocol=state.protocol,
        )

    # -- cleanup ---------------------------------------------------------------------------

    async def cleanup(self) -> None:
        """Close this adapter's clients, then delete the namespace's groups and topics.

        Clients are closed first because Kafka refuses to delete a group that still has
        members. Groups and topics already gone are fine; a group that still has members
        from somewhere else is retried until its members' session would have expired.
        """
        await self.close_clients()
        if self._admin is None:
            return
        try:
            await self._delete_namespace()
        except BrokerError as error:
            raise BrokerError(
                f"{error} (namespace {self.namespace} not cleaned up; a later "
                f"KafkaBroker(namespace={self.namespace!r}) cleans it up on close)"
            ) from error

    async def _delete_namespace(self) -> None:
        problems: list[str] = []
        view = await self._metadata(None)
        listed = await self.bounded(
            wire.list_groups(self._client, view.brokers), "list consumer groups"
        )
        # The groups this adapter used are deleted even when unlisted (their coordinator may
        # be the broker that did not answer); deleting a group that is gone is fine.
        groups = sorted({g for g in listed if self._in_namespace(g)} | self._used_groups)
        for group_id in groups:
            problem = await self._delete_group(group_id)
            if problem:
                problems.append(problem)
        topics = sorted(name for name in view.topics if self.owns_topic(name))
        await self._delete_topics(topics)
        self._created_topics.clear()
        self._used_groups.clear()
        if problems:
            raise BrokerError("kafka: cleanup incomplete: " + "; ".join(problems))

    async def _delete_group(self, group_id: str) -> str | None:
        """Delete one group; returns a problem description instead of raising."""

        def unsettled(codes: dict[str, int]) -> bool:
            # A member that vanished without leaving keeps the group non-empty until its
            # session times out (the consumer default is 6 s): wait that long, not for ever.
            code = codes.get(group_id, 0)
            return code == wire.NON_EMPTY_GROUP or code in wire.COORDINATOR_MOVING

        codes = await self._at_coordinator(
            group_id,
            lambda coordinator: wire.delete_groups(self._client, coordinator, [group_id]),
            f"delete group {group_id}",
            unsettled=unsettled,
            pause=0.5,
        )
        code = codes.get(group_id, 0)
        if code in (0, wire.GROUP_ID_NOT_FOUND):
            return None
        return f"group {group_id} not deleted ({for_code(code).__name__})"
