"""The simulated Kafka cluster: brokers, a KRaft controller, partitions with replicas, leaders,
ISR and high watermarks, group coordinators and transaction coordinators.

This is the server side of the Kafka model; the client side (producer, consumer, admin
adapter) lives in :mod:`mqlab.brokers.sim.kafka.client` and only talks to the cluster through the
methods here, after paying for each request leg with :meth:`SimWorld.transmit`.

What happens, in the order the course shows it:

* Appends go to the partition leader's log (a list of entries; an entry's index is its offset).
  Followers copy new entries ``replica_fetch_delay`` virtual seconds later, all partitions of a
  follower broker in one fetch round, as a replica fetcher does. The high watermark is the
  smallest log end offset in the ISR; acks=all producers wait for it to pass their record.
* A killed or paused broker stops heartbeating; ``broker.session.timeout.ms`` later the
  controller fences it: it leaves every ISR (unless it is the last member) and its leaderships
  move to the first replica in the ISR (clean) or, with ``unclean.leader.election.enable``, to
  any live replica, whose shorter log then becomes the truth. A restart is a controlled
  shutdown (fenced at once). A broker back up truncates its log where it diverges from the
  leader (leader epochs), fetches, and rejoins the ISR once it has caught up to the high
  watermark. A follower that stops fetching for ``replica.lag.time.max.ms`` leaves the ISR.
  Every ``leader.imbalance.check.interval.seconds`` preferred leaders get their partitions back.
  Without the controller nothing of this happens: leaders keep serving, the ISR stays.
* Groups and transactions are coordinated by the leader of their ``__consumer_offsets`` /
  ``__transaction_state`` partition, so they become unavailable while that partition is offline.

The defaults are the lab's ``server.properties`` (:data:`DEFAULT_CONFIG`), so a sim run and a
lab run time out, fence and rebalance alike.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from mqlab.brokers.base import BrokerError
from mqlab.brokers.kafka.api import TopicPartition
from mqlab.brokers.sim.kafka.algorithms import assign_replicas, coordinator_partition
from mqlab.brokers.sim.kafka.config import (
    OFFSETS_TOPIC,
    SOURCE,
    CoordinatorNotAvailable,
    LeaderNotAvailable,
)
from mqlab.brokers.sim.kafka.controller import ControllerLayer
from mqlab.brokers.sim.kafka.groups import GROUP_DEAD, Group, release
from mqlab.brokers.sim.kafka.log import Partition, Topic
from mqlab.observe.events import (
    Note,
)

_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")

# --- transactions ------------------------------------------------------------------------


@dataclass(slots=True)
class Transaction:
    """A transactional id's coordinator state."""

    transactional_id: str
    producer_id: int
    epoch: int = 0
    state: str = "Empty"  # Empty | Ongoing | CompleteCommit | CompleteAbort
    partitions: dict[TopicPartition, None] = field(default_factory=dict)
    offsets: dict[str, dict[TopicPartition, int]] = field(default_factory=dict)
    timeout: float = 60.0
    timer: asyncio.TimerHandle | None = None
    owner: str = ""


# --- the cluster -------------------------------------------------------------------------


class SimKafkaCluster(ControllerLayer):
    """One simulated KRaft cluster (controller ``0`` plus brokers ``1..n``) in a world.

    Built in three layers, one module each: the replicated partitions
    (:mod:`~mqlab.brokers.sim.kafka.replication`), the KRaft controller
    (:mod:`~mqlab.brokers.sim.kafka.controller`) and, here, what clients ask of the cluster:
    topics, group and transaction coordinators. The arguments are those of
    :class:`~mqlab.brokers.sim.kafka.replication.ReplicationLayer`.
    """

    model_key = "kafka"

    # -- topics --------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        config: Mapping[str, str] | None = None,
        *,
        internal: bool = False,
    ) -> Topic:
        """CreateTopics on the controller: place replicas round-robin over the live brokers,
        the first replica leads, the live replicas form the ISR.

        Raises:
            BrokerError: invalid name, exists, bad counts or too few live brokers.
        """
        if not internal and not _TOPIC_NAME.match(name):
            raise BrokerError(
                f"invalid topic name {name!r}: use letters, digits, '.', '_' or '-' (max 249)"
            )
        if name in self.topics:
            raise BrokerError(f"topic {name!r} already exists")
        if partitions < 1:
            raise BrokerError(f"topic {name!r}: partitions must be at least 1")
        live = self.live_brokers()
        if replication_factor < 1 or replication_factor > len(live):
            raise BrokerError(
                f"InvalidReplicationFactor: topic {name!r} asks for {replication_factor} "
                f"replicas but {len(live)} broker(s) are available"
            )
        topic = Topic(self, name, replication_factor, config or {}, internal=internal)
        placement = assign_replicas(live, partitions, replication_factor, self.world.rng)
        for index, replicas in enumerate(placement):
            partition = Partition(topic, index, replicas)
            partition.isr = list(replicas)
            topic.partitions.append(partition)
            for broker_id in replicas:
                self._by_broker[broker_id].append(partition)
            self._set_leader(partition, replicas[0], unclean=False)
        self.topics[name] = topic
        for group in self.groups.values():
            group.metadata_changed(name)
        return topic

    def delete_topic(self, name: str) -> bool:
        """Delete ``name``; False when it does not exist."""
        topic = self.topics.pop(name, None)
        if topic is None:
            return False
        topic.deleted = True
        for partition in topic.partitions:
            self._fail_waiters(partition, LeaderNotAvailable(f"{partition.tp} was deleted"))
            for broker_id in partition.replicas:
                self._by_broker[broker_id].remove(partition)
            partition.notify()
        for group in self.groups.values():
            group.metadata_changed(name)
        return True

    def partition_counts(self) -> dict[str, int]:
        """Partition count of every non-internal topic (what assignors get as metadata)."""
        return {n: len(t.partitions) for n, t in self.topics.items() if not t.internal}

    def internal_topic(self, name: str) -> Topic:
        """``__consumer_offsets`` / ``__transaction_state``, created on first use as Kafka
        does (with fewer replicas while fewer brokers are up)."""
        topic = self.topics.get(name)
        if topic is not None:
            return topic
        if not self.controller_up or not self.live_brokers():
            raise CoordinatorNotAvailable(f"{name} cannot be created yet")
        if name == OFFSETS_TOPIC:
            count, factor = self.config.offsets_partitions, self.config.offsets_replication_factor
        else:
            count = self.config.transaction_partitions
            factor = self.config.transaction_replication_factor
        factor = min(factor, len(self.live_brokers()))
        return self.create_topic(name, count, factor, internal=True)

    # -- coordinators --------------------------------------------------------------------

    def coordinator(self, topic: str, key: str) -> int:
        """The broker coordinating ``key`` (leader of its internal-topic partition).

        Raises:
            CoordinatorNotAvailable: that partition is offline.
        """
        internal = self.internal_topic(topic)
        partition = internal.partitions[coordinator_partition(key, len(internal.partitions))]
        if partition.leader < 0:
            raise CoordinatorNotAvailable(f"the coordinator of {key!r} is not available")
        return partition.leader

    def coordinator_available(self, group_id: str) -> bool:
        """True when ``group_id``'s coordinator broker is elected and running."""
        try:
            broker_id = self.coordinator(OFFSETS_TOPIC, group_id)
        except CoordinatorNotAvailable:
            return False
        return self.broker_up(broker_id)

    def group(self, group_id: str) -> Group:
        """The coordinator state of ``group_id`` (created empty on first use)."""
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = Group(self, group_id)
        return group

    def delete_group(self, group_id: str) -> None:
        """Forget ``group_id`` (its members are dropped as if their sessions ended)."""
        group = self.groups.pop(group_id, None)
        if group is None:
            return
        group.state = GROUP_DEAD
        for member in list(group.members.values()):
            if member.expiry is not None:
                member.expiry.cancel()
            release(member)
        group.members.clear()
        for handle in (group._completion, group._deadline):
            if handle is not None:
                handle.cancel()

    # -- transactions --------------------------------------------------------------------

    def new_producer_id(self) -> int:
        """InitProducerId for an idempotent producer."""
        self._next_producer_id += 1
        return self._next_producer_id

    def init_transactions(self, transactional_id: str, owner: str, timeout: float) -> Transaction:
        """InitProducerId with a transactional id: bump the epoch (fencing the previous
        producer) and abort whatever it left open."""
        txn = self.transactions.get(transactional_id)
        if txn is None:
            txn = Transaction(transactional_id, self.new_producer_id())
            self.transactions[transactional_id] = txn
        else:
            if txn.state == "Ongoing":
                self.end_transaction(txn, commit=False)
            txn.epoch += 1
        txn.owner = owner
        txn.timeout = timeout
        txn.state = "Empty"
        return txn

    def open_transaction(self, txn: Transaction) -> None:
        """The coordinator's side of the first AddPartitionsToTxn / AddOffsetsToTxn: the
        transaction is ongoing and its timeout starts."""
        if txn.state != "Ongoing":
            txn.state = "Ongoing"
            txn.timer = asyncio.get_running_loop().call_later(
                txn.timeout, self._transaction_timed_out, txn.transactional_id, txn.epoch
            )

    def add_to_transaction(self, txn: Transaction, tp: TopicPartition) -> None:
        """AddPartitionsToTxn."""
        self.open_transaction(txn)
        txn.partitions[tp] = None

    def _transaction_timed_out(self, transactional_id: str, epoch: int) -> None:
        txn = self.transactions.get(transactional_id)
        if txn is None or txn.epoch != epoch or txn.state != "Ongoing":
            return
        self.emit(
            Note(
                at=self.world.now(),
                broker=SOURCE,
                text=(
                    f"transaction {transactional_id} timed out after {txn.timeout:g}s "
                    "(transaction.timeout.ms): the coordinator aborts it"
                ),
            )
        )
        self.end_transaction(txn, commit=False)
        txn.epoch += 1  # the producer is fenced: its next call fails

    def end_transaction(self, txn: Transaction, *, commit: bool) -> None:
        """EndTxn: write a COMMIT/ABORT marker into every partition of the transaction and
        apply (or drop) the offsets sent to it."""
        if txn.timer is not None:
            txn.timer.cancel()
            txn.timer = None
        for tp in txn.partitions:
            topic = self.topics.get(tp.topic)
            if topic is not None and not topic.deleted:
                self._write_marker(topic.partitions[tp.partition], txn.producer_id, commit)
        if commit:
            for group_id, offsets in txn.offsets.items():
                self.group(group_id).store_offsets(offsets, txn.owner)
        txn.partitions.clear()
        txn.offsets.clear()
        txn.state = "CompleteCommit" if commit else "CompleteAbort"

    # -- snapshot helpers ----------------------------------------------------------------

    def topics_with_prefix(self, prefix: str) -> list[Topic]:
        """Non-internal topics whose name starts with ``prefix``, sorted by name."""
        return [
            self.topics[name]
            for name in sorted(self.topics)
            if name.startswith(prefix) and not self.topics[name].internal
        ]

    def groups_with_prefix(self, prefix: str) -> list[Group]:
        """Groups whose id starts with ``prefix``, sorted by id."""
        return [self.groups[g] for g in sorted(self.groups) if g.startswith(prefix)]
