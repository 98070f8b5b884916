"""The HTML report of a run: the space-time model, the page, and the page in a real browser.

The model tests feed :func:`build_diagram` short observation lists written out by hand, so each
one shows exactly which observation makes which lane, arrow, mark or band. The page tests
render real simulator runs. The browser test opens a report in Debian's headless Chromium and
reads the DOM it rendered; in CI (``MQLAB_REQUIRE_BROKERS=1``) a missing Chromium fails it.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqlab.cli import app
from mqlab.course.scenario import Scenario
from mqlab.observe.events import (
    Acked,
    BrokerDown,
    BrokerUp,
    Committed,
    ConsumerCrashed,
    ConsumerStarted,
    DeadLettered,
    Delivered,
    FaultHealed,
    FaultInjected,
    Observation,
    Processed,
    Produced,
    ProduceFailed,
    ProduceRequested,
)
from mqlab.scenarios.html_report import render_report, write_report
from mqlab.scenarios.library import find
from mqlab.scenarios.session import replay_trace, run_scenario
from mqlab.scenarios.spacetime import build_diagram
from tests.conftest import brokers_required
from tests.scenarios._cases import cases

pytestmark = pytest.mark.sim

runner = CliRunner()

NS = "mq-t001"
TOPIC = f"{NS}-orders"


# --- building observation lists -----------------------------------------------------------


def _send(
    mid: str,
    at: float,
    *,
    partition: int | None = 0,
    destination: str = TOPIC,
    producer: str = "producer-acks-all",
) -> list[Observation]:
    return [
        ProduceRequested(at=at, broker="runner", message_id=mid, step=1),
        Produced(
            at=at + 0.005,
            broker="sim:kafka",
            destination=destination,
            message_id=mid,
            partition=partition,
            position=int(mid[1:]),
            producer=producer,
        ),
    ]


def _deliver(
    mid: str,
    at: float,
    consumer: str,
    *,
    partition: int | None = 0,
    destination: str = TOPIC,
    redelivered: bool = False,
) -> Delivered:
    return Delivered(
        at=at,
        broker="sim:kafka",
        destination=destination,
        message_id=mid,
        consumer=consumer,
        partition=partition,
        redelivered=redelivered,
    )


def _processed(mid: str, at: float, consumer: str, group: str = "orders-group") -> Processed:
    return Processed(at=at, broker="sim:kafka", message_id=mid, consumer=consumer, group=group)


def _kafka_run() -> list[Observation]:
    """m1 processed once, m2 processed twice (a redelivery after a crash), m3 never: lost."""
    return [
        *_send("m1", 0.0),
        *_send("m2", 0.01),
        *_send("m3", 0.02, partition=1),
        ConsumerStarted(at=0.1, broker="runner", consumer="doomed", group="orders-group", step=2),
        _deliver("m1", 0.1, "doomed"),
        _processed("m1", 0.1, "doomed"),
        Committed(
            at=0.1,
            broker="sim:kafka",
            group=f"{NS}-orders-group",
            topic=TOPIC,
            partition=0,
            offset=1,
            consumer="doomed",
        ),
        _deliver("m2", 0.1, "doomed"),
        _processed("m2", 0.1, "doomed"),
        ConsumerCrashed(at=0.1, broker="sim:kafka", consumer="doomed", point="before_commit"),
        ConsumerStarted(at=2.0, broker="runner", consumer="recovery", group="orders-group", step=3),
        _deliver("m2", 2.0, "recovery", redelivered=True),
        _processed("m2", 2.0, "recovery"),
    ]


def _lanes(observations: list[Observation], system: str = "kafka") -> list[tuple[str, str]]:
    diagram = build_diagram(observations, system=system, stream="orders")
    return [(lane.kind, lane.label) for lane in diagram.lanes]


# --- the model ------------------------------------------------------------------------------


def test_one_lane_per_producer_partition_and_consumer_without_the_namespace() -> None:
    assert _lanes(_kafka_run()) == [
        ("producer", "producer-acks-all"),
        ("broker", "orders p0"),
        ("broker", "orders p1"),
        ("consumer", "doomed"),
        ("consumer", "recovery"),
    ]


def test_queues_and_the_nats_stream_are_lanes_of_their_own() -> None:
    queue = [*_send("m1", 0.0, partition=None, destination=f"{NS}-jobs", producer="")]
    assert _lanes(queue, "rabbitmq") == [("producer", "producer"), ("broker", "jobs")]
    subjects = [
        *_send("m1", 0.0, partition=None, destination=f"{NS}.orders.eu", producer=""),
        *_send("m2", 0.0, partition=None, destination=f"{NS}.orders.us", producer=""),
    ]
    assert _lanes(subjects, "nats") == [("producer", "producer"), ("broker", "stream orders")]


def test_messages_are_arrows_from_producer_to_partition_to_consumer() -> None:
    diagram = build_diagram(_kafka_run(), system="kafka")
    arrows = [(a.kind, a.message_id, a.source, a.target) for a in diagram.arrows]
    assert arrows == [
        ("produce", "m1", "producer:producer-acks-all", "partition:orders:0"),
        ("produce", "m2", "producer:producer-acks-all", "partition:orders:0"),
        ("produce", "m3", "producer:producer-acks-all", "partition:orders:1"),
        ("deliver", "m1", "partition:orders:0", "consumer:doomed"),
        ("deliver", "m2", "partition:orders:0", "consumer:doomed"),
        ("redeliver", "m2", "partition:orders:0", "consumer:recovery"),
    ]
    first = diagram.arrows[0]
    assert first.text == "produced m1 @ p0:1"  # describe()'s line is the hover text
    assert first.start.seq < first.end.seq
    assert (first.start.at, first.end.at) == (0.0, 0.005)


def test_a_send_that_waited_for_the_previous_answer_starts_there() -> None:
    """The runner hands a whole step over at once; the producer sends one at a time."""
    observations: list[Observation] = [
        ProduceRequested(at=0.0, broker="runner", message_id=mid, step=1) for mid in ("m1", "m2")
    ]
    observations += [
        Produced(at=0.5, broker="sim:kafka", destination=TOPIC, message_id="m1", partition=0),
        Produced(at=4.0, broker="sim:kafka", destination=TOPIC, message_id="m2", partition=0),
    ]
    first, second = build_diagram(observations, system="kafka").arrows
    assert (first.start.at, first.end.at) == (0.0, 0.5)
    assert (second.start.at, second.end.at) == (0.5, 4.0)


def test_simultaneous_events_keep_their_order_and_each_its_own_rank() -> None:
    diagram = build_diagram(_kafka_run(), system="kafka")
    points = sorted(
        [a.start for a in diagram.arrows]
        + [a.end for a in diagram.arrows]
        + [m.when for m in diagram.marks],
        key=lambda instant: instant.seq,
    )
    times = [point.at for point in points]
    assert times == sorted(times)
    assert len({p.seq for p in points}) == len(diagram.slot_times)
    assert list(diagram.slot_times) == sorted(diagram.slot_times)


def test_processed_acked_and_committed_are_marks_on_the_consumer_lane() -> None:
    observations = [
        *_send("m1", 0.0, partition=None, destination=f"{NS}-jobs", producer=""),
        _deliver("m1", 0.1, "worker", partition=None, destination=f"{NS}-jobs"),
        _processed("m1", 0.1, "worker", "jobs"),
        Acked(
            at=0.1,
            broker="sim:rabbitmq",
            destination=f"{NS}-jobs",
            message_id="m1",
            consumer="worker",
        ),
    ]
    marks = [
        (m.kind, m.lane, m.message_id) for m in build_diagram(observations, system="rabbitmq").marks
    ]
    assert marks == [("processed", "consumer:worker", "m1"), ("acked", "consumer:worker", "m1")]
    commits = [
        m for m in build_diagram(_kafka_run(), system="kafka").marks if m.kind == "committed"
    ]
    assert [(m.lane, m.text) for m in commits] == [
        ("consumer:doomed", f"doomed committed {TOPIC}:0 @ 1")
    ]


def test_a_lost_message_is_marked_where_it_reached_the_broker_and_listed() -> None:
    diagram = build_diagram(_kafka_run(), system="kafka")
    assert diagram.fates["lost"] == ("m3",)
    lost = [m for m in diagram.marks if m.kind == "lost"]
    assert [(m.lane, m.message_id) for m in lost] == [("partition:orders:1", "m3")]
    assert {a.fate for a in diagram.arrows if a.message_id == "m3"} == {"lost"}
    assert {a.fate for a in diagram.arrows if a.message_id == "m1"} == {None}


def test_a_duplicate_is_the_second_processing_by_the_same_group() -> None:
    diagram = build_diagram(_kafka_run(), system="kafka")
    assert diagram.fates["duplicated"] == ("m2",)
    kinds = [(m.kind, m.lane) for m in diagram.marks if m.message_id == "m2"]
    assert kinds == [("processed", "consumer:doomed"), ("duplicate", "consumer:recovery")]


def test_the_same_message_in_two_groups_is_no_duplicate() -> None:
    observations = [
        *_send("m1", 0.0),
        _deliver("m1", 0.1, "billing"),
        _processed("m1", 0.1, "billing", "billing"),
        _deliver("m1", 0.2, "analytics"),
        _processed("m1", 0.2, "analytics", "analytics"),
    ]
    diagram = build_diagram(observations, system="kafka")
    assert diagram.fates["duplicated"] == ()
    assert [m.kind for m in diagram.marks] == ["processed", "processed"]


def _dead_letter_run(*, processed_after_retry: bool) -> list[Observation]:
    """m1 fails, goes through the retry exchange and the wait queue back to the queue, and
    then either is processed or is parked in the dead-letter queue."""
    queue, retry, wait, dlq = (f"{NS}-{n}" for n in ("jobs", "jobs-retry", "jobs-wait", "jobs-dlq"))
    observations: list[Observation] = [
        *_send("m1", 0.0, partition=None, destination=queue, producer=""),
        _deliver("m1", 0.1, "worker", partition=None, destination=queue),
        DeadLettered(
            at=0.1,
            broker="sim:rabbitmq",
            source=queue,
            target=retry,
            message_id="m1",
            reason="rejected",
        ),
        DeadLettered(
            at=0.4,
            broker="sim:rabbitmq",
            source=wait,
            target=queue,
            message_id="m1",
            reason="expired",
        ),
        _deliver("m1", 0.4, "worker", partition=None, destination=queue),
    ]
    if processed_after_retry:
        observations.append(_processed("m1", 0.4, "worker", "jobs"))
    else:
        observations += [
            Produced(at=0.4, broker="sim:rabbitmq", destination=dlq, message_id="m1"),
            DeadLettered(
                at=0.4,
                broker="sim:rabbitmq",
                source=queue,
                target=dlq,
                message_id="m1",
                reason="failed 2 times",
            ),
        ]
    return observations


def test_a_dead_lettered_message_is_marked_where_it_ended_and_its_hops_drawn() -> None:
    diagram = build_diagram(_dead_letter_run(processed_after_retry=False), system="rabbitmq")
    hops = [(a.source, a.target) for a in diagram.arrows if a.kind == "dead_letter"]
    assert hops == [
        ("queue:jobs", "queue:jobs-retry"),
        ("queue:jobs-wait", "queue:jobs"),
        ("queue:jobs", "queue:jobs-dlq"),
    ]
    # The broker's copy into the dead-letter queue is the last hop, not a second produce.
    assert [a.kind for a in diagram.arrows].count("produce") == 1
    assert diagram.fates["dead_lettered"] == ("m1",)
    parked = [(m.lane, m.message_id) for m in diagram.marks if m.kind == "dead_lettered"]
    assert parked == [("queue:jobs-dlq", "m1")]


def test_a_message_that_came_back_from_a_retry_hop_and_was_processed_is_not_dead_lettered() -> None:
    diagram = build_diagram(_dead_letter_run(processed_after_retry=True), system="rabbitmq")
    assert diagram.fates["dead_lettered"] == ()
    assert not [m for m in diagram.marks if m.kind == "dead_lettered"]
    assert {a.fate for a in diagram.arrows} == {None}


def test_nats_max_deliver_is_a_dead_letter_mark_on_the_stream_not_a_hop() -> None:
    observations = [
        *_send("m1", 0.0, partition=None, destination=f"{NS}.webhooks.event", producer=""),
        DeadLettered(
            at=5.0,
            broker="sim:nats",
            source=f"{NS}-webhooks",
            target=f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{NS}-webhooks.g",
            message_id="m1",
            reason="max_deliver 3 reached",
        ),
    ]
    diagram = build_diagram(observations, system="nats", stream="webhooks")
    assert [a.kind for a in diagram.arrows] == ["produce"]
    assert [(m.kind, m.lane) for m in diagram.marks] == [("dead_lettered", "stream:webhooks")]


def test_nats_durable_names_are_drawn_on_the_scenario_consumers_lanes() -> None:
    """NATS reports deliveries and acks under the durable's name, shared by two consumers."""
    durable, subject = f"{NS}-payments-group", f"{NS}.payments.event"

    def delivered(mid: str, at: float) -> Delivered:
        return Delivered(
            at=at, broker="sim:nats", destination=subject, message_id=mid, consumer=durable
        )

    observations: list[Observation] = [
        *_send("m1", 0.0, partition=None, destination=subject, producer=""),
        *_send("m2", 0.0, partition=None, destination=subject, producer=""),
        ConsumerStarted(at=0.0, broker="runner", consumer="doomed", group="payments-group", step=2),
        delivered("m1", 0.0),
        delivered("m2", 0.0),
        _processed("m1", 0.0, "doomed", "payments-group"),
        Acked(at=0.0, broker="sim:nats", destination=subject, message_id="m1", consumer=durable),
        ConsumerCrashed(at=0.0, broker="sim:nats", consumer="doomed", point="after_receive"),
        ConsumerStarted(
            at=0.0, broker="runner", consumer="recovery", group="payments-group", step=3
        ),
        delivered("m2", 2.0),
        _processed("m2", 2.0, "recovery", "payments-group"),
        Acked(at=2.0, broker="sim:nats", destination=subject, message_id="m2", consumer=durable),
    ]
    diagram = build_diagram(observations, system="nats", stream="payments")
    assert [lane.label for lane in diagram.lanes if lane.kind == "consumer"] == [
        "doomed",
        "recovery",
    ]
    deliveries = [(a.message_id, a.target) for a in diagram.arrows if a.kind == "deliver"]
    # m2's first delivery was never processed: it went to the consumer alive at the time.
    assert deliveries == [
        ("m1", "consumer:doomed"),
        ("m2", "consumer:doomed"),
        ("m2", "consumer:recovery"),
    ]
    acks = [(m.message_id, m.lane) for m in diagram.marks if m.kind == "acked"]
    assert acks == [("m1", "consumer:doomed"), ("m2", "consumer:recovery")]


def test_a_failed_send_is_a_mark_on_the_producer_and_listed() -> None:
    observations = [
        ProduceRequested(at=0.0, broker="runner", message_id="m1", step=1),
        ProduceFailed(
            at=5.0,
            broker="sim:kafka",
            destination=TOPIC,
            message_id="m1",
            error="NotEnoughReplicas",
            producer="producer-acks-all",
        ),
    ]
    diagram = build_diagram(observations, system="kafka")
    assert diagram.arrows == ()
    assert [(m.kind, m.lane) for m in diagram.marks] == [
        ("produce_failed", "producer:producer-acks-all")
    ]
    assert diagram.fates["produce_failed"] == ("m1",)


def test_a_fault_is_a_band_across_the_lanes_and_an_outage_a_band_on_the_node() -> None:
    node = "kafka-broker-2"
    observations = [
        *_send("m1", 0.0),
        FaultInjected(at=1.0, broker="lab", fault="kill", target=node),
        BrokerDown(at=1.0, broker="lab", node=node, detail="killed (SIGKILL)"),
        FaultInjected(at=4.0, broker="lab", fault="restart", target=node),
        FaultHealed(at=7.0, broker="lab", fault="kill", target=node),
        BrokerUp(at=7.0, broker="lab", node=node, detail="started"),
        *_send("m2", 7.5),
    ]
    diagram = build_diagram(observations, system="kafka")
    assert ("node", node) in [(lane.kind, lane.label) for lane in diagram.lanes]
    fault, down = sorted(diagram.bands, key=lambda band: band.kind != "fault")
    assert (fault.kind, fault.label, fault.lane, fault.healed) == (
        "fault",
        f"kill {node}",
        None,
        True,
    )
    assert (fault.start.at, fault.end.at) == (1.0, 7.0)
    assert (down.kind, down.lane, down.start.at, down.end.at) == ("down", f"node:{node}", 1.0, 7.0)
    assert "killed (SIGKILL)" in down.text
    # The restart is an action on the node, not a fault of its own.
    assert [(m.kind, m.lane) for m in diagram.marks] == [("fault_action", f"node:{node}")]


def test_a_fault_never_healed_runs_to_the_end_of_the_run() -> None:
    observations = [
        FaultInjected(at=1.0, broker="lab", fault="partition", target="rabbitmq"),
        *_send("m1", 3.0, partition=None, destination=f"{NS}-jobs", producer=""),
    ]
    (band,) = build_diagram(observations, system="rabbitmq").bands
    # Times count from the run's first observation (here: the fault itself).
    assert (band.healed, band.start.at, band.end.at) == (False, 0.0, 2.005)
    assert "never healed" in band.text


def test_a_crash_is_a_mark_on_the_consumer_lane() -> None:
    crashes = [m for m in build_diagram(_kafka_run(), system="kafka").marks if m.kind == "crashed"]
    assert [(m.lane, m.when.at, m.text) for m in crashes] == [
        ("consumer:doomed", 0.1, "doomed CRASHED (before_commit)")
    ]


def _many(count: int, lost: set[int]) -> list[Observation]:
    observations: list[Observation] = []
    for i in range(count):
        mid = f"m{i:04d}"
        observations += _send(mid, i * 0.01)
        if i in lost:
            continue
        observations += [
            _deliver(mid, i * 0.01 + 0.005, "reader"),
            _processed(mid, i * 0.01 + 0.005, "reader"),
            Committed(
                at=i * 0.01 + 0.005,
                broker="sim:kafka",
                group="g",
                topic=TOPIC,
                partition=0,
                offset=i + 1,
                consumer="reader",
            ),
        ]
    return observations


def test_a_large_run_is_thinned_but_keeps_every_marked_message_and_fault() -> None:
    observations = [
        *_many(500, lost={7, 250, 499}),
        FaultInjected(at=2.0, broker="lab", fault="latency", target="kafka-broker-1"),
        FaultHealed(at=3.0, broker="lab", fault="latency", target="kafka-broker-1"),
    ]
    diagram = build_diagram(observations, system="kafka", max_messages=50)
    drawn = {a.message_id for a in diagram.arrows}
    assert (diagram.messages_total, diagram.messages_drawn, len(drawn)) == (500, 50, 50)
    assert {"m0007", "m0250", "m0499"} <= drawn
    assert len([m for m in diagram.marks if m.kind == "lost"]) == 3
    assert diagram.fates["lost"] == ("m0007", "m0250", "m0499")
    assert len(diagram.bands) == 1
    assert diagram.thinning is not None
    assert "50 of 500 messages" in diagram.thinning
    commits = [m for m in diagram.marks if m.kind == "committed"]
    assert 40 <= len(commits) <= 60
    assert commits[-1].text.endswith("@ 499")  # the group's final offset is always drawn


def test_a_run_under_the_limit_is_drawn_whole() -> None:
    diagram = build_diagram(_many(40, lost=set()), system="kafka", max_messages=50)
    assert (diagram.messages_drawn, diagram.thinning) == (40, None)
    assert len(diagram.arrows) == 80


# --- the page -------------------------------------------------------------------------------


class _References(HTMLParser):
    """Collects everything in a page that could make a browser fetch something."""

    URL_ATTRIBUTES = frozenset(
        {
            "src",
            "href",
            "xlink:href",
            "action",
            "poster",
            "srcset",
            "data",
            "formaction",
            "background",
            "cite",
            "ping",
        }
    )
    FETCHING_TAGS = frozenset(
        {
            "link",
            "img",
            "iframe",
            "object",
            "embed",
            "audio",
            "video",
            "source",
            "track",
            "base",
            "image",
            "frame",
        }
    )

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.FETCHING_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name in self.URL_ATTRIBUTES and value is not None and not value.startswith("#"):
                self.found.append(f"{tag} {name}={value}")
            if name == "style" and value and re.search(r"url\(\s*['\"]?(?!#)", value):
                self.found.append(f"{tag} style={value}")
        self._in = tag if tag in ("style", "script") else None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.found += [f"css {m}" for m in re.findall(r"url\(\s*['\"]?(?!#)[^)]*\)", data)]
            self.found += [f"css {m}" for m in re.findall(r"@import[^;]*", data)]
            self.found += [f"css {m}" for m in re.findall(r"@font-face", data)]
        if self._in == "script":
            self.found += [
                f"js {m}"
                for m in re.findall(r"\b(?:fetch|XMLHttpRequest|import|WebSocket|src)\b", data)
            ]


def external_references(page: str) -> list[str]:
    """Everything in ``page`` that points outside it (empty: the page is self-contained)."""
    parser = _References()
    parser.feed(page)
    found = parser.found
    found += re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:|//)[^"'\s>]*""", page)
    return found


def diagram_of(page: str) -> str:
    """The diagram's ``<svg>`` alone (the legend draws its swatches with the same classes)."""
    found = re.search(r'<svg id="diagram".*?</svg>', page, re.DOTALL)
    assert found is not None, "no diagram in the page"
    return found.group(0)


def test_the_reference_check_finds_what_would_fetch_something() -> None:
    for page in (
        '<img src="https://example.test/a.png">',
        '<link rel="stylesheet" href="site.css">',
        '<script src="//cdn.example.test/app.js"></script>',
        "<style>body{background:url(bg.png)}</style>",
        "<style>@import 'fonts.css';</style>",
        '<svg><use href="other.svg#icon"/></svg>',
        "<script>fetch('/data')</script>",
    ):
        assert external_references(page), page
    assert external_references('<svg><use href="#icon"/></svg><style>a{b:url(#mk)}</style>') == []


@pytest.mark.parametrize(("scenario", "system"), cases(real=False))
def test_every_library_run_draws_what_its_ledger_counts(scenario: Scenario, system: str) -> None:
    """The picture never disagrees with the numbers beside it."""
    result = run_scenario(scenario, f"sim:{system}")
    diagram = build_diagram(result.observations, system=system, stream=scenario.channel.name)
    for fate in ("lost", "dead_lettered", "duplicated", "produce_failed", "aborted"):
        assert len(diagram.fates[fate]) == result.summary[fate], fate
    assert len([m for m in diagram.marks if m.kind == "lost"]) == result.summary.lost
    produced = {a.message_id for a in diagram.arrows if a.kind == "produce"}
    assert len(produced) >= result.summary.produced
    consumer_lanes = {lane.label for lane in diagram.lanes if lane.kind == "consumer"}
    started = {o.consumer for o in result.observations if isinstance(o, ConsumerStarted)}
    assert started <= consumer_lanes
    assert external_references(render_report(result, scenario)) == []


@pytest.fixture(scope="module")
def unclean_loss() -> str:
    """A real simulator run with faults, outages, leader changes and five lost messages."""
    return render_report(run_scenario(find("kafka-acks1-unclean-loss"), "sim:kafka"))


def test_the_page_is_self_contained_ascii(unclean_loss: str) -> None:
    assert external_references(unclean_loss) == []
    assert "http://" not in unclean_loss
    assert "https://" not in unclean_loss
    assert unclean_loss.isascii()


def test_the_page_has_the_scenario_the_ledger_the_checks_and_the_verdict(unclean_loss: str) -> None:
    scenario = find("kafka-acks1-unclean-loss")
    page = unclean_loss
    assert f"<h1>{scenario.title}</h1>" in page
    assert scenario.summary.strip().split()[0] in page
    assert "What happened, and why" in page
    assert "<dt>broker</dt><dd>sim:kafka</dd>" in page
    assert "<dt>seed</dt><dd>0</dd>" in page
    assert "<dt>recorded with mqlab</dt>" in page
    # The ledger row with its number and the expectation's mark beside it.
    assert re.search(
        r"<th scope=\"row\">lost</th><td class=\"num\">5</td><td class=\"ok\">&#10003; 5</td>", page
    )
    assert "The broker&#8217;s own view" in page
    assert '<p class="verdict pass">PASS on sim:kafka</p>' in page
    # Every lost message listed by id, and marked in the diagram.
    lost_ids = re.findall(r'<code data-m="(m\d+)">', page)
    assert len(lost_ids) == 5
    drawn = diagram_of(page)
    assert drawn.count('class="m lost"') == 5
    assert drawn.count('class="band fault') >= 1
    assert drawn.count('class="band down') >= 1
    # The legend offers what this diagram has, and nothing it has not.
    assert 'data-toggle="lost"' in page
    assert 'data-toggle="dead-lettered"' not in page


def test_a_run_that_could_not_complete_says_why() -> None:
    result = run_scenario(find("rabbitmq-fanout"), "sim:rabbitmq")
    page = render_report(dataclasses.replace(result, error="RabbitMQ is not reachable"))
    assert '<p class="badge error">ERROR</p>' in page
    assert '<p class="verdict error">ERROR on sim:rabbitmq: RabbitMQ is not reachable</p>' in page


def test_a_run_without_observations_still_renders() -> None:
    result = run_scenario(find("rabbitmq-fanout"), "sim:rabbitmq")
    page = render_report(dataclasses.replace(result, observations=()), find("rabbitmq-fanout"))
    assert '<svg id="diagram"' in page
    assert "No message was lost, duplicated or dead-lettered." in page


def test_a_failed_verdict_lists_its_failures(tmp_path: Path) -> None:
    scenario_file = tmp_path / "wrong-guess.yaml"
    scenario_file.write_text(
        "format_version: 1\nid: wrong-guess\ntitle: A <wrong> guess & more\ntopic: t\n"
        "summary: s\nbrokers: [rabbitmq, sim]\nsteps:\n  - produce: {count: 3}\n"
        "  - consume: {name: c}\nexpect: {produced: 3, lost: 1}\n"
    )
    result = run_scenario(find(str(scenario_file)), "sim")
    page = render_report(result)
    assert '<p class="verdict fail">FAIL on sim:rabbitmq</p>' in page
    assert "<li>lost: expected 1, got 0</li>" in page
    assert '<td class="bad">&#10007; 1</td>' in page
    assert "<h1>A &lt;wrong&gt; guess &amp; more</h1>" in page  # escaped, not markup


def test_a_replayed_trace_gives_the_very_same_page(tmp_path: Path) -> None:
    trace = tmp_path / "run.jsonl"
    live = run_scenario(find("at-most-once-crash"), "sim:nats", record=trace)
    _, replayed = replay_trace(trace)
    page = render_report(live, find("at-most-once-crash"))
    assert render_report(replayed) == page
    assert render_report(live) == page  # the same run, the same bytes


def test_a_large_run_stays_small_and_says_what_it_left_out(tmp_path: Path) -> None:
    scenario_file = tmp_path / "big.yaml"
    scenario_file.write_text(
        "format_version: 1\nid: big\ntitle: big\ntopic: t\nsummary: s\nbrokers: [kafka, sim]\n"
        "channel: {name: orders, kafka: {partitions: 3}}\nsteps:\n  - produce: {count: 2000}\n"
        "  - consume: {name: doomed, ack: before, crash: {after: 1000, point: after_ack}}\n"
        "  - consume: {name: recovery, idle: 3}\nexpect: {produced: 2000}\n"
    )
    result = run_scenario(find(str(scenario_file)), "sim")
    assert result.summary.lost == 1
    report = tmp_path / "big.html"
    write_report(report, result)
    page = report.read_text()
    size = report.stat().st_size
    print(f"report of {len(result.observations):,} observations: {size:,} bytes")
    assert size < 400_000
    assert "of 2,000 messages are drawn" in page
    assert diagram_of(page).count('class="m lost"') == 1
    assert diagram_of(page).count('class="m crashed"') == 1


def test_run_and_replay_write_the_report_from_the_command_line(tmp_path: Path) -> None:
    trace, live_page, replay_page = tmp_path / "t.jsonl", tmp_path / "a.html", tmp_path / "b.html"
    live = runner.invoke(
        app,
        [
            "run",
            "poison-message-dead-letter",
            "--broker",
            "sim:sqs",
            "--no-predict",
            "-q",
            "--record",
            str(trace),
            "--report",
            str(live_page),
        ],
    )
    assert live.exit_code == 0, live.output
    assert f"report written to {live_page}" in live.output
    replayed = runner.invoke(app, ["replay", str(trace), "-q", "--report", str(replay_page)])
    assert replayed.exit_code == 0, replayed.output
    assert live_page.read_text() == replay_page.read_text()
    assert 'class="m dead-lettered"' in diagram_of(live_page.read_text())
    as_json = runner.invoke(app, ["replay", str(trace), "--json", "--report", str(replay_page)])
    assert as_json.stdout.startswith("{")  # --json output stays one JSON object


def test_a_report_that_cannot_be_written_is_a_one_line_error(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    result = runner.invoke(
        app,
        ["run", "at-most-once-crash", "--no-predict", "-q", "--report", str(blocked / "run.html")],
    )
    assert result.exit_code == 2
    assert "error: cannot write the report" in result.output
    assert "Traceback" not in result.output


# --- in a real browser ----------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "chromium is not installed (./scripts/test installs Debian's chromium)"
        if brokers_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def _browse(chromium: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_report_in_headless_chromium_shows_lanes_marks_and_runs_its_script(
    chromium: str, tmp_path: Path
) -> None:
    result = run_scenario(find("kafka-acks1-unclean-loss"), "sim:kafka")
    report = tmp_path / "run.html"
    write_report(report, result)
    diagram = build_diagram(result.observations, system="kafka", stream="clicks")

    dumped = _browse(chromium, tmp_path / "profile", "--dump-dom", report.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    # The script ran (it marks the body), and the browser parsed the diagram.
    assert re.search(r'<body[^>]*data-script="ran"', dumped.stdout), dumped.stdout[:500]
    dom = diagram_of(dumped.stdout)
    assert len(re.findall(r'<g class="lane ', dom)) == len(diagram.lanes)
    for label in ("producer-acks-1", "clicks p0", "kafka-broker-2", "reader"):
        assert f">{label}</text>" in dom
    assert len(re.findall(r'<line class="a ', dom)) == len(diagram.arrows)
    assert dom.count('class="m lost"') == 5
    assert dom.count('class="m leader"') == len([m for m in diagram.marks if m.kind == "leader"])
    assert 'class="band fault' in dom
    assert 'class="band down' in dom

    screenshot = tmp_path / "run.png"
    shot = _browse(
        chromium,
        tmp_path / "profile",
        f"--screenshot={screenshot}",
        "--window-size=1400,900",
        report.as_uri(),
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert _png_size(screenshot) == (1400, 900)
    print(f"screenshot: {screenshot}")
