"""Low-level Kafka requests behind :mod:`mqlab.brokers.kafka.client`, and a parsed view of the
cluster.

Why this module exists: aiokafka's admin client covers most of what the adapter needs, but its
helpers give up on the first broker that does not answer (``list_consumer_groups`` asks every
broker in turn and raises on the first failure), pick a random node for metadata, and lack two
requests mqlab needs: DeleteGroups (``cleanup()`` must remove the namespace's consumer groups)
and DescribeQuorum (in KRaft the metadata answer names a *random* broker as "controller"; the
quorum leader is the real active controller). It also never goes back to its bootstrap
addresses once it has a broker list, which strands a client whose list holds only dead brokers
(see :func:`fall_back_to_bootstrap`). The functions here send aiokafka's own request classes (or
the two small ones defined below) to a chosen node and turn the answers into plain Python
values, leaving retries, timeouts and error wording to the adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.conn import create_conn
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError, NodeNotReadyError, RequestTimedOutError, for_code
from aiokafka.protocol.admin import (
    CreateTopicsRequest,
    DeleteGroupsRequest,
    DeleteTopicsRequest,
    DescribeConfigsRequest,
    DescribeGroupsRequest,
    ListGroupsRequest,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.protocol.coordination import FindCoordinatorRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.protocol.types import (
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import TopicPartition as AioTopicPartition

from mqlab.brokers.kafka.api import TopicPartition

EARLIEST = -2
"""ListOffsets timestamp that asks for the log start offset."""
LATEST = -1
"""ListOffsets timestamp that asks for the high watermark (with read_uncommitted)."""

GROUP_ID_NOT_FOUND = 69
NON_EMPTY_GROUP = 68
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
COORDINATOR_MOVING = frozenset(
    {COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR}
)
"""A group's coordinator is moving (a broker died or came back): ask again where it is."""
UNKNOWN_TOPIC_OR_PARTITION = 3

CLUSTER_METADATA_TOPIC = "__cluster_metadata"
"""The KRaft metadata log; DescribeQuorum asks about its single partition."""


@dataclass(frozen=True, slots=True)
class PartitionState:
    """Leader, replicas and in-sync replicas of one partition (leader -1: offline)."""

    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One metadata answer: the registered (unfenced) brokers and every topic's partitions."""

    brokers: dict[int, tuple[str, int]]
    topics: dict[str, dict[int, PartitionState]]

    def partitions(self, topic: str) -> dict[int, PartitionState]:
        """The partitions of ``topic`` (empty when the cluster does not know it)."""
        return self.topics.get(topic, {})


def parse_metadata(response: Any) -> ClusterView:
    """Turn a MetadataResponse (any version aiokafka speaks) into a :class:`ClusterView`."""
    body = response.to_object()
    brokers = {b["node_id"]: (b["host"], b["port"]) for b in body["brokers"]}
    topics: dict[str, dict[int, PartitionState]] = {}
    for topic in body["topics"]:
        if topic["error_code"] != 0:
            continue
        topics[topic["topic"]] = {
            p["partition"]: PartitionState(
                leader=p["leader"], replicas=tuple(p["replicas"]), isr=tuple(p["isr"])
            )
            for p in topic["partitions"]
        }
    return ClusterView(brokers=brokers, topics=topics)


async def fetch_metadata(
    client: AIOKafkaClient, node_id: int, topics: list[str] | None = None
) -> tuple[ClusterView, Any]:
    """Ask ``node_id`` for metadata of ``topics`` (all topics when None).

    Returns the parsed view and the raw response (the caller may feed it to aiokafka's own
    cluster cache so later requests go to the right nodes).
    """
    # Never auto-create: on a cluster with auto.create.topics.enable (Kafka's default), asking
    # about a topic that was just deleted would otherwise bring it back.
    response = await client.send(node_id, MetadataRequest(topics, allow_auto_topic_creation=False))
    return parse_metadata(response), response


REBOOTSTRAP_TIMEOUT = 2.0
"""Seconds to wait for any bootstrap address to answer once no known broker does."""


# --- between aiokafka's values and the interface's ------------------------------------------


async def stop_within(
    seconds: float,
    stopping: Awaitable[object],
    *,
    ignoring: tuple[type[Exception], ...] = (Exception,),
) -> None:
    """Await an aiokafka client's ``stop()`` / ``close()`` for at most ``seconds``, ignoring
    ``ignoring`` and the timeout: the client is being given up either way, and against a dead
    cluster its goodbye (a flush, a LeaveGroup) would wait for ever."""
    with contextlib.suppress(TimeoutError, *ignoring):
        async with asyncio.timeout(seconds):
            await stopping


async def stop_consumer(consumer: Any) -> None:
    """An :class:`AIOKafkaConsumer`'s ``stop()``, finished when aiokafka leaks a cancellation.

    aiokafka's ``Fetcher.close()`` cancels its pending fetch tasks and awaits each without
    catching their CancelledError, so a fetch caught in its retry back-off (a broker just cut
    off or killed) ends ``stop()`` with a CancelledError before the client's connections are
    closed (aiokafka issue 647 is this family). That error is not ours: this task is not being
    cancelled. So it is swallowed and the rest of the stop done here; a real cancellation of
    this task still passes.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        fetcher = getattr(consumer, "_fetcher", None)
        pending = list(getattr(fetcher, "_pending_tasks", ()))
        for leftover in pending:
            leftover.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await consumer._client.close()


def error_text(error: BaseException) -> str:
    """A short, one-line description of an aiokafka (or OS) error."""
    if isinstance(error, NodeNotReadyError):  # aiokafka's wording is long and says less
        return "broker not reachable"
    if isinstance(error, RequestTimedOutError | TimeoutError):
        return "no answer in time"
    name = type(error).__name__
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if not text:
        return name
    return text if name in text else f"{name}: {text}"


def key_text(key: bytes | None) -> str | None:
    """A record key as observations carry it (text; undecodable bytes replaced)."""
    return None if key is None else key.decode("utf-8", errors="replace")


def ours(tp: AioTopicPartition) -> TopicPartition:
    """aiokafka's TopicPartition as the interface's."""
    return TopicPartition(tp.topic, tp.partition)


def theirs(tp: TopicPartition) -> AioTopicPartition:
    """The interface's TopicPartition as aiokafka's."""
    return AioTopicPartition(tp.topic, tp.partition)


# --- falling back to the bootstrap addresses ----------------------------------------------
# Why: a metadata answer lists only the brokers registered and unfenced right then, and
# aiokafka replaces its broker list with each answer and afterwards asks only the brokers of
# that list; it never goes back to bootstrap_servers. Fence two followers (paused) while the
# third broker answers, then kill that third one: every client that refreshed metadata in
# between knows one broker, a dead one, and keeps asking it ("Unable to update metadata from
# [1]") until that very process comes back, although the other two are up again. The Java
# client has the same trap and an opt-in way out (metadata.recovery.strategy=rebootstrap,
# the default since Kafka 4.0); aiokafka 0.14 has neither, hence these functions. The same
# parallel question also starts a client (bootstrap_from_first_answer).


async def metadata_from_bootstrap(
    client: AIOKafkaClient, request: MetadataRequest, timeout: float
) -> Any | None:
    """Send ``request`` to every bootstrap address of ``client`` at once, on new connections.

    The connections are throwaway ones (the client's own are left alone) and all of them are
    closed before returning. Asking all addresses together keeps a paused broker from holding
    up the answer of a live one.

    Returns:
        The first answer that lists brokers, or None when none came within ``timeout`` seconds.
    """
    answered = await _first_bootstrap_answer(client, request, timeout)
    return answered[1] if answered is not None else None


async def _first_bootstrap_answer(
    client: AIOKafkaClient, request: MetadataRequest, timeout: float
) -> tuple[str, Any] | None:
    """:func:`metadata_from_bootstrap`, also saying which address (``host:port``) answered."""

    async def ask(host: str, port: int) -> tuple[str, Any]:
        conn = await create_conn(
            host, port, client_id=client._client_id, request_timeout_ms=int(timeout * 1000)
        )
        try:
            return f"{host}:{port}", await conn.send(request)
        finally:
            conn.close()

    tasks = [asyncio.ensure_future(ask(host, port)) for host, port, _family in client.hosts]
    try:
        async with asyncio.timeout(timeout):
            for next_answer in asyncio.as_completed(tasks):
                try:
                    address, response = await next_answer
                except (TimeoutError, KafkaError, OSError):
                    continue
                if response.brokers:
                    return address, response
    except TimeoutError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return None


def bootstrap_from_first_answer(client: AIOKafkaClient) -> None:
    """Make ``client`` start from the bootstrap address that answers first.

    aiokafka's start tries the bootstrap addresses one after another, in a shuffled order,
    waiting each one's whole request timeout. A paused broker (or one behind a cut link) takes
    the connection, because the kernel does, and never answers: with one of the lab's three
    brokers paused, a producer, consumer or admin client opened then fails its start one time
    in three ("got no answer within 5s"; measured: 2 of 8 producers), although two brokers
    answer at once. So the addresses are asked all together first (as
    :func:`metadata_from_bootstrap` does, within the client's request timeout, which is what
    aiokafka would have waited for the first of them), and aiokafka's own start then runs on
    the one that answered; when none did, it runs on them all and reports in its own words.
    Must be called before the client starts; it replaces the method on this one instance only.
    """
    bootstrap_in_turn = client.bootstrap

    async def bootstrap() -> None:
        timeout = client._request_timeout_ms / 1000
        answered = await _first_bootstrap_answer(client, MetadataRequest([]), timeout)
        if answered is None:
            await bootstrap_in_turn()
            return
        every_address = client._bootstrap_servers
        client._bootstrap_servers = answered[0]
        try:
            await bootstrap_in_turn()
        finally:
            # The fallback of fall_back_to_bootstrap asks every address again later.
            client._bootstrap_servers = every_address

    client.bootstrap = bootstrap


async def rebootstrap(client: AIOKafkaClient, timeout: float) -> bool:
    """Refresh ``client``'s metadata (brokers and all topics) from the bootstrap addresses.

    Returns:
        True when a broker answered and the client now knows the current broker list.
    """
    return await view_from_bootstrap(client, timeout) is not None


async def view_from_bootstrap(client: AIOKafkaClient, timeout: float) -> ClusterView | None:
    """The cluster (brokers and all topics) as the first bootstrap address to answer sees it,
    kept as ``client``'s metadata too; None when none answered within ``timeout`` seconds."""
    request = MetadataRequest(None, allow_auto_topic_creation=False)
    response = await metadata_from_bootstrap(client, request, timeout)
    if response is None:
        return None
    client.cluster.update_metadata(response)
    return parse_metadata(response)


def fall_back_to_bootstrap(client: AIOKafkaClient, timeout: float) -> None:
    """Make ``client``'s own metadata refresh try the bootstrap addresses when it fails.

    aiokafka refreshes metadata in a background task (periodically, and whenever a connection
    fails or a leader moves) by asking the brokers of its current list one after the other.
    When none of them answers, this asks the bootstrap addresses (see
    :func:`metadata_from_bootstrap`) before giving up, so producers, consumers and the admin
    client find the live brokers again without waiting for a dead one to return. Must be
    called before the client starts; it replaces the method on this one instance only.
    """
    ask_known_brokers = client._metadata_update

    async def metadata_update(cluster_metadata: Any, topics: Any) -> bool:
        if await ask_known_brokers(cluster_metadata, topics):
            return True
        # The same question aiokafka asked its known brokers, now to the bootstrap addresses.
        request = MetadataRequest(list(topics) if topics else None)
        response = await metadata_from_bootstrap(client, request, timeout)
        if response is None:
            return False
        cluster_metadata.update_metadata(response)
        return True

    client._metadata_update = metadata_update


# --- topics -------------------------------------------------------------------------------
# In KRaft any broker forwards topic administration to the controller, so these go to a node
# the caller picked (one that answers), not to the random "controller" of the metadata.

TOPIC_RESOURCE = 2
"""DescribeConfigs resource type of a topic."""
DYNAMIC_TOPIC_CONFIG = 1
"""DescribeConfigs config source of a topic-level override."""


async def create_topic(
    client: AIOKafkaClient,
    node_id: int,
    name: str,
    partitions: int,
    replication_factor: int,
    config: dict[str, str],
    timeout_ms: int,
) -> tuple[int, str | None]:
    """CreateTopics for one topic; returns its ``(error_code, error_message)``."""
    request = CreateTopicsRequest(
        create_topic_requests=[(name, partitions, replication_factor, [], list(config.items()))],
        timeout=timeout_ms,
        validate_only=False,
    )
    response = await client.send(node_id, request)
    for topic, error_code, *rest in response.topic_errors:
        if topic == name:
            return int(error_code), (rest[0] if rest else None)
    return 0, None


async def delete_topics(
    client: AIOKafkaClient, node_id: int, names: list[str], timeout_ms: int
) -> dict[str, int]:
    """DeleteTopics; returns each topic's error code (0: deleted)."""
    response = await client.send(node_id, DeleteTopicsRequest(names, timeout_ms))
    return {topic: int(error_code) for topic, error_code, *_ in response.topic_error_codes}


async def topic_configs(
    client: AIOKafkaClient, node_id: int, names: list[str], always: tuple[str, ...]
) -> dict[str, dict[str, str]]:
    """Each topic's overrides, plus the configs named in ``always`` whatever set them."""
    request = DescribeConfigsRequest([(TOPIC_RESOURCE, name, None) for name in names], False)
    response = await client.send(node_id, request)
    configs: dict[str, dict[str, str]] = {}
    for resource in response.to_object()["resources"]:
        if resource["error_code"] != 0:
            continue
        entries: dict[str, str] = {}
        for entry in resource["config_entries"]:
            if "config_source" in entry:
                overridden = entry["config_source"] == DYNAMIC_TOPIC_CONFIG
            else:  # version 0 only says whether the value is the default
                overridden = not entry.get("is_default", True)
            wanted = overridden or entry["config_names"] in always
            if wanted and entry["config_value"] is not None:
                entries[entry["config_names"]] = entry["config_value"]
        configs[resource["resource_name"]] = entries
    return configs


# --- DescribeQuorum (API key 55): who leads the KRaft controller quorum -------------------


class DescribeQuorumResponse_v0(Response):  # type: ignore[misc]
    """Version 0 of the answer (flexible encoding: compact strings/arrays, tagged fields)."""

    API_KEY = 55
    API_VERSION = 0
    SCHEMA = Schema(
        ("error_code", Int16),
        (
            "topics",
            CompactArray(
                ("topic_name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("error_code", Int16),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("high_watermark", Int64),
                        (
                            "current_voters",
                            CompactArray(
                                ("replica_id", Int32),
                                ("log_end_offset", Int64),
                                ("tags", TaggedFields),
                            ),
                        ),
                        (
                            "observers",
                            CompactArray(
                                ("replica_id", Int32),
                                ("log_end_offset", Int64),
                                ("tags", TaggedFields),
                            ),
                        ),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeQuorumRequest_v0(RequestStruct):  # type: ignore[misc]
    """Version 0 of the question; brokers forward it to the active controller."""

    FLEXIBLE_VERSION = True
    API_KEY = 55
    API_VERSION = 0
    RESPONSE_TYPE = DescribeQuorumResponse_v0
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("topic_name", CompactString("utf-8")),
                ("partitions", CompactArray(("partition_index", Int32), ("tags", TaggedFields))),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeQuorumRequest(Request[DescribeQuorumRequest_v0]):  # type: ignore[misc]
    """Ask for the state of the KRaft metadata quorum (``__cluster_metadata`` partition 0)."""

    API_KEY = 55

    def build(self, request_struct_class: type[DescribeQuorumRequest_v0]) -> Any:
        return request_struct_class([(CLUSTER_METADATA_TOPIC, [(0, {})], {})], {})


async def quorum_leader(client: AIOKafkaClient, node_id: int) -> int | None:
    """The node id of the active KRaft controller, asked through broker ``node_id``.

    Returns None when the cluster has no quorum leader right now (or is not a KRaft cluster).
    """
    response = await client.send(node_id, DescribeQuorumRequest())
    body = response.to_object()
    if body["error_code"] != 0:
        return None
    for topic in body["topics"]:
        for partition in topic["partitions"]:
            if partition["error_code"] == 0 and partition["leader_id"] >= 0:
                return int(partition["leader_id"])
    return None


# --- offsets ------------------------------------------------------------------------------


async def list_offsets(
    client: AIOKafkaClient,
    leaders: dict[tuple[str, int], int],
    timestamp: int,
) -> dict[tuple[str, int], int]:
    """ListOffsets for many partitions: one request per leader, sent concurrently.

    Args:
        leaders: ``(topic, partition) -> leader node id``; partitions without a leader are
            skipped by the caller.
        timestamp: :data:`EARLIEST` (log start) or :data:`LATEST` (high watermark).

    Returns:
        The offset of every partition whose leader answered without error.
    """
    by_leader: dict[int, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for (topic, partition), leader in leaders.items():
        by_leader[leader][topic].append((partition, timestamp))

    async def ask(leader: int, topics: dict[str, list[tuple[int, int]]]) -> Any:
        return await client.send(leader, OffsetRequest(-1, 0, list(topics.items())))

    answers = await asyncio.gather(
        *(ask(leader, topics) for leader, topics in by_leader.items()), return_exceptions=True
    )
    offsets: dict[tuple[str, int], int] = {}
    for answer in answers:
        if isinstance(answer, BaseException):
            if isinstance(answer, KafkaError | OSError | asyncio.TimeoutError):
                continue
            raise answer
        for topic in answer.to_object()["topics"]:
            for partition in topic["partitions"]:
                if partition["error_code"] != 0:
                    continue
                if "offset" in partition:
                    offset = partition["offset"]
                else:  # version 0 answers with a list of offsets
                    offset = partition["offsets"][0] if partition["offsets"] else 0
                offsets[(topic["topic"], partition["partition"])] = int(offset)
    return offsets


# --- consumer groups ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupMemberState:
    """A member as DescribeGroups reports it, with its assignment decoded."""

    member_id: str
    client_id: str
    assignment: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class GroupState:
    """A consumer group as DescribeGroups reports it."""

    group_id: str
    state: str
    protocol: str
    members: tuple[GroupMemberState, ...]


def decode_assignment(data: bytes | None) -> tuple[tuple[str, int], ...]:
    """Decode the consumer protocol's member assignment bytes into ``(topic, partition)``s."""
    if not data:
        return ()
    assignment = ConsumerProtocolMemberAssignment.decode(data)
    return tuple(
        sorted(
            (topic, partition)
            for topic, partitions in assignment.assignment
            for partition in partitions
        )
    )


async def list_groups(client: AIOKafkaClient, node_ids: Iterable[int]) -> set[str]:
    """Every consumer group any of ``node_ids`` coordinates; nodes that fail are skipped."""

    async def ask(node_id: int) -> Any:
        return await client.send(node_id, ListGroupsRequest())

    node_list = list(node_ids)
    answers = await asyncio.gather(*(ask(n) for n in node_list), return_exceptions=True)
    groups: set[str] = set()
    for answer in answers:
        if isinstance(answer, BaseException):
            if isinstance(answer, KafkaError | OSError | asyncio.TimeoutError):
                continue
            raise answer
        if answer.error_code == 0:
            groups.update(group for group, _protocol_type in answer.groups)
    return groups


async def find_coordinator(client: AIOKafkaClient, node_id: int, group_id: str) -> int:
    """The node that coordinates ``group_id`` (asked through ``node_id``).

    Raises:
        KafkaError: the coordinator is not available (yet).
    """
    response = await client.send(node_id, FindCoordinatorRequest(group_id, 0))
    if response.error_code:
        raise for_code(response.error_code)(f"no coordinator for group {group_id}")
    return int(response.coordinator_id)


async def describe_group(client: AIOKafkaClient, coordinator: int, group_id: str) -> GroupState:
    """State, protocol and members (assignments decoded) of ``group_id``."""
    response = await client.send(coordinator, DescribeGroupsRequest([group_id]))
    for group in response.to_object()["groups"]:
        if group["group"] != group_id:
            continue
        if group["error_code"] != 0:
            raise for_code(group["error_code"])(f"cannot describe group {group_id}")
        members = tuple(
            GroupMemberState(
                member_id=member["member_id"],
                client_id=member["client_id"],
                assignment=decode_assignment(member["member_assignment"]),
            )
            for member in group["members"]
        )
        return GroupState(
            group_id=group_id, state=group["state"], protocol=group["protocol"], members=members
        )
    return GroupState(group_id=group_id, state="Dead", protocol="", members=())


async def committed_offsets(
    client: AIOKafkaClient, coordinator: int, group_id: str
) -> dict[tuple[str, int], int]:
    """Every offset ``group_id`` has committed (OffsetFetch for all partitions)."""
    response = await client.send(coordinator, OffsetFetchRequest(group_id, None))
    error_code = getattr(response, "error_code", 0)
    if error_code:
        raise for_code(error_code)(f"cannot fetch the offsets of group {group_id}")
    offsets: dict[tuple[str, int], int] = {}
    for topic, partitions in response.topics:
        for partition_info in partitions:
            partition, offset = partition_info[0], partition_info[1]
            partition_error = partition_info[-1]
            if partition_error == 0 and offset >= 0:
                offsets[(topic, partition)] = int(offset)
    return offsets


async def delete_groups(
    client: AIOKafkaClient, coordinator: int, group_ids: list[str]
) -> dict[str, int]:
    """DeleteGroups on ``coordinator``; returns each group's error code (0: deleted)."""
    response = await client.send(coordinator, DeleteGroupsRequest(group_ids))
    return {group_id: int(error_code) for group_id, error_code in response.results}
