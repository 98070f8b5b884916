"""The native tools' summaries, as the tools printed them on the lab (Kafka 3.9.1's tools,
PerfTest 2.22.1, the NATS CLI v0.5.0), and what the parsers make of them."""

from __future__ import annotations

import pytest

from mqlab.bench.native import (
    NativeToolError,
    parse_consumer_performance,
    parse_nats_bench,
    parse_perftest,
    parse_producer_performance,
)

PRODUCER_PERFORMANCE = """\
log4j:WARN See http://logging.apache.org/log4j/1.2/faq.html#noconfig for more info.
3000 records sent, 1204.819277 records/sec (0.11 MB/sec), 789.35 ms avg latency, 2225.00 ms max latency, 785 ms 50th, 905 ms 95th, 921 ms 99th, 924 ms 99.9th.
"""

CONSUMER_PERFORMANCE = """\
log4j:WARN See http://logging.apache.org/log4j/1.2/faq.html#noconfig for more info.
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2026-12-01 08:23:12:561, 2026-12-01 08:23:15:293, 0.2861, 0.1047, 3000, 1098.0966, 2421, 311, 0.9199, 9646.3023
"""

PERFTEST = """\
id: test-082317-341, time 2.004 s, sent: 1213 msg/s, confirmed: 1173 msg/s, nacked: 0 msg/s, received: 1162 msg/s, min/median/75th/95th/99th consumer latency: 1364/37370/67663/260300/292382 µs, confirm latency: 975/11939/20058/28475/43999 µs
test stopped (Producer reached message limit, Consumer reached message limit)
id: test-082317-341, sending rate avg: 1054 msg/s
id: test-082317-341, receiving rate avg: 1054 msg/s
id: test-082317-341, consumer latency min/median/75th/95th/99th 794/26778/58071/178601/281776 µs
id: test-082317-341, confirm latency min/median/75th/95th/99th 1195/12133/23830/44156/113858 µs
"""

NATS_PUBLISH = """\
08:23:21 [1] Starting JetStream asynchronous publisher, publishing 3,000 messages

NATS JetStream asynchronous publisher stats: 35,994 msgs/sec ~ 3.4 MiB/sec ~ min: 873.17us ~ avg: 1,762.77us ~ max: 5,021.67us ~ P50: 1,476.92us ~ P90: 3,390.18us ~ P99: 5,021.67us ~ P99.9: 5,021.67us
"""


def test_producer_performance() -> None:
    assert parse_producer_performance(PRODUCER_PERFORMANCE) == (1204.819277, 785.0, 921.0)


def test_consumer_performance() -> None:
    assert parse_consumer_performance(CONSUMER_PERFORMANCE) == pytest.approx(1098.0966)


def test_perftest_reads_the_averages_and_the_final_consumer_latency() -> None:
    sent, received, p50, p99 = parse_perftest(PERFTEST)
    assert (sent, received) == (1054.0, 1054.0)
    assert p50 == pytest.approx(26.778)
    assert p99 == pytest.approx(281.776)


def test_nats_bench() -> None:
    assert parse_nats_bench(NATS_PUBLISH) == 35_994.0


@pytest.mark.parametrize(
    ("parser", "tool"),
    [
        (parse_producer_performance, "ProducerPerformance"),
        (parse_consumer_performance, "ConsumerPerformance"),
        (parse_perftest, "PerfTest"),
        (parse_nats_bench, "nats bench"),
    ],
)
def test_output_without_a_summary_names_the_tool(parser: object, tool: str) -> None:
    with pytest.raises(NativeToolError, match=tool):
        parser("Exception in thread main: connection refused\n")  # type: ignore[operator]
