"""How fast the simulator runs: simulated Kafka messages per second of wall time, and the wall
time of a 60-virtual-second run full of retries, faults and rebalances.

Speed goals live here, never in the test suite. Goals: >= 200,000 simulated messages/s on one
core for a 4-partition topic consumed by a 2-member group, and < 0.5 s of wall time for 60
virtual seconds of a retry scenario. Run::

    python benchmarks/bench_sim.py                    # both benchmarks
    python benchmarks/bench_sim.py throughput --messages 500000 --acks all
    python benchmarks/bench_sim.py retry
    python benchmarks/bench_sim.py throughput --profile   # where the time goes

Every message is fully simulated: partitioner, leader append, replication to two followers,
high watermark, consumer fetch, and one ``Produced`` plus one ``Delivered`` observation, which
a subscriber on the bus receives (the benchmark counts them, as the runner's ledger would).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time
from collections.abc import Callable

from mqlab.brokers.faults import NetworkFault
from mqlab.brokers.kafka.api import Acks
from mqlab.brokers.sim.clock import run_virtual
from mqlab.brokers.sim.kafka.client import SimKafkaBroker
from mqlab.brokers.sim.world import SimWorld
from mqlab.observe.events import Delivered, Observation, Produced, RetryScheduled


class Counter:
    """A bus subscriber that counts produced and delivered messages (a minimal ledger)."""

    def __init__(self) -> None:
        self.produced = 0
        self.delivered = 0
        self.other = 0

    def __call__(self, observation: Observation) -> None:
        if type(observation) is Delivered:
            self.delivered += 1
        elif type(observation) is Produced:
            self.produced += 1
        else:
            self.other += 1


async def throughput_run(messages: int, acks: Acks, in_flight: int, size: int) -> dict[str, float]:
    """Produce ``messages`` keyed records to 4 partitions while a 2-member group consumes."""
    world = SimWorld(seed=0)
    counter = Counter()
    world.bus.subscribe(counter)
    async with SimKafkaBroker(world=world) as kafka:
        topic = await kafka.create_topic(kafka.qualify("bench"), partitions=4, replication_factor=3)
        group = kafka.qualify("readers")
        consumers = [
            await kafka.consumer([topic.name], group_id=group, name=name, max_poll_records=500)
            for name in ("a", "b")
        ]
        # Let the group settle first: the benchmark measures steady-state messaging.
        while not all(c.assignment() for c in consumers):
            await asyncio.gather(*(c.poll(timeout=0.1) for c in consumers))
        producer = await kafka.producer(acks=acks)
        value = bytes(size)
        keys = [f"key-{n}".encode() for n in range(1000)]
        received = 0

        async def produce(worker: int) -> None:
            for n in range(worker, messages, in_flight):
                await producer.send(topic.name, value, key=keys[n % 1000])

        async def consume(consumer_index: int) -> None:
            nonlocal received
            consumer = consumers[consumer_index]
            while received < messages:
                # Await first: "received += len(await ...)" would read the total before the
                # await and overwrite what the other consumer added meanwhile.
                batch = await consumer.poll(max_records=500, timeout=0.05)
                received += len(batch)

        loop = asyncio.get_running_loop()
        virtual_start = loop.time()
        wall_start = time.perf_counter()
        await asyncio.gather(*(produce(w) for w in range(in_flight)), consume(0), consume(1))
        wall = time.perf_counter() - wall_start
        virtual = loop.time() - virtual_start
    await world.aclose()
    assert counter.produced == messages, counter.produced
    assert counter.delivered == messages, counter.delivered
    return {"wall": wall, "virtual": virtual, "rate": messages / wall}


async def retry_run(virtual_seconds: float) -> dict[str, float]:
    """A minute of a consumer group whose processing fails transiently and retries with
    exponential backoff and full jitter, while a broker dies and comes back and another is
    cut off from its clients."""
    world = SimWorld(seed=0)
    counter = Counter()
    world.bus.subscribe(counter)
    loop = asyncio.get_running_loop()
    end = loop.time() + virtual_seconds
    async with SimKafkaBroker(world=world) as kafka:
        topic = await kafka.create_topic(kafka.qualify("jobs"), partitions=4, replication_factor=3)
        group = kafka.qualify("workers")
        producer = await kafka.producer(acks="all", request_timeout=30.0)
        consumers = [
            await kafka.consumer([topic.name], group_id=group, name=name, session_timeout=6.0)
            for name in ("a", "b")
        ]

        async def produce() -> None:
            n = 0
            while loop.time() < end - 5:
                await producer.send(topic.name, b"job", key=f"job-{n % 50}".encode())
                n += 1
                await asyncio.sleep(0.05)

        async def work(consumer_index: int) -> None:
            consumer = consumers[consumer_index]
            while loop.time() < end:
                for record in await consumer.poll(timeout=0.5):
                    attempt = 0
                    while world.rng.random() < 0.3 and attempt < 5:  # a transient failure
                        attempt += 1
                        delay = world.rng.uniform(0, min(5.0, 0.1 * 2**attempt))
                        world.bus.emit(
                            RetryScheduled(
                                at=loop.time(),
                                broker=kafka.name,
                                message_id=record.message_id,
                                attempt=attempt,
                                delay=delay,
                                strategy="full-jitter",
                            )
                        )
                        await asyncio.sleep(delay)
                try:
                    await consumer.commit()
                except Exception:  # a rebalance took the partitions: poll again
                    continue

        async def faults() -> None:
            await asyncio.sleep(20)
            await world.kill("kafka-broker-2")
            await asyncio.sleep(15)
            await world.restart("kafka-broker-2")
            await world.add_network_fault("kafka-broker-3", NetworkFault("cut"))
            await asyncio.sleep(10)
            await world.remove_network_faults("kafka-broker-3")

        wall_start = time.perf_counter()
        await asyncio.gather(produce(), work(0), work(1), faults())
        wall = time.perf_counter() - wall_start
    await world.aclose()
    return {
        "wall": wall,
        "virtual": virtual_seconds,
        "produced": counter.produced,
        "delivered": counter.delivered,
        "observations": counter.produced + counter.delivered + counter.other,
    }


def profiled(run: Callable[[], dict[str, float]]) -> dict[str, float]:
    profile = cProfile.Profile()
    result = profile.runcall(run)
    pstats.Stats(profile).sort_stats("tottime").print_stats(20)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="?", choices=["throughput", "retry", "all"], default="all")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--acks", choices=["0", "1", "all"], default=None)
    parser.add_argument("--in-flight", type=int, default=None, help="concurrent sends")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    measure = profiled if args.profile else (lambda run: run())

    def wrap(run: Callable[[], dict[str, float]]) -> dict[str, float]:
        gc.collect()  # start each measurement without the previous run's garbage
        return measure(run)

    if args.which in ("throughput", "all"):
        choices: dict[str, Acks] = {"0": 0, "1": 1, "all": "all"}
        ack_levels: list[Acks] = [1, "all"] if args.acks is None else [choices[args.acks]]
        for acks in ack_levels:
            # acks=all waits for replication, so it needs sends in flight (as a real producer
            # batching them would) to keep the cluster busy.
            in_flight: int = args.in_flight or (1 if acks != "all" else 64)

            def throughput(acks: Acks = acks, in_flight: int = in_flight) -> dict[str, float]:
                return run_virtual(throughput_run(args.messages, acks, in_flight, args.size))

            result = wrap(throughput)
            print(
                f"throughput  acks={acks!s:<3}  in-flight={in_flight:<3} {args.messages:>9,} msgs"
                f"  {result['rate']:>10,.0f} msg/s  wall {result['wall']:6.2f} s"
                f"  virtual {result['virtual']:7.2f} s   (goal >= 200,000 msg/s)"
            )
    if args.which in ("retry", "all"):
        result = wrap(lambda: run_virtual(retry_run(60.0)))
        print(
            f"retry run   {result['virtual']:.0f} virtual s  wall {result['wall']:.3f} s"
            f"  ({result['produced']:.0f} produced, {result['delivered']:.0f} delivered,"
            f" {result['observations']:.0f} observations)   (goal < 0.5 s)"
        )


if __name__ == "__main__":
    main()
