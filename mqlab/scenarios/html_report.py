"""A run as one self-contained HTML page: the space-time diagram, the ledger, the verdict.

``mqlab run ID --report run.html`` and ``mqlab replay TRACE --report run.html`` write it. The
page carries everything inline (CSS, SVG, a few lines of script for hover details and the
legend's toggles), names no font, script, image or style sheet elsewhere, and so opens from a
file with no network at all, for a learner who wants to look at a run again, or send it to
someone.

:func:`render_report` is pure (a :class:`~mqlab.scenarios.verdict.RunResult`, and the scenario
when the caller has it, in; HTML text out); :func:`write_report` is its one write, atomic. The
diagram itself is :mod:`mqlab.scenarios.spacetime`'s; this module only lays it out. The text
is ASCII (everything else as character references), so the file reads the same under any
locale, and the same run always gives the same bytes.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from mqlab import __version__
from mqlab.course.scenario import Scenario
from mqlab.observe.events import RunStarted
from mqlab.scenarios.ledger import LEDGER_ROWS
from mqlab.scenarios.report import describe
from mqlab.scenarios.spacetime import build_diagram
from mqlab.scenarios.spacetime_model import (
    DEFAULT_MAX_MESSAGES,
    FATE_LABELS,
    FATES,
    Arrow,
    Band,
    Diagram,
    Instant,
    Lane,
    Mark,
)
from mqlab.scenarios.verdict import ExpectationResult, RunResult

MAX_TIMELINE_LINES = 1500
"""The page's full-text timeline stops after this many lines (the diagram has them all)."""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# --- layout -----------------------------------------------------------------------------

LABEL_WIDTH = 190
"""The column of lane names on the left."""
PAD_LEFT = 14
PAD_RIGHT = 28
AXIS_HEIGHT = 30
BAND_ROW_HEIGHT = 15
LANE_HEIGHT = 30
SECTION_GAP = 10
MAX_STEP = 14.0
"""At most this many pixels between two consecutive events, however empty the run."""
MIN_PLOT_WIDTH = 960
MAX_PLOT_WIDTH = 4200
PIXELS_PER_EVENT = 7


@dataclass(frozen=True, slots=True)
class Layout:
    """Where things go: time to x, lane to y.

    Time runs left to right, but not at one fixed rate: every drawn event gets ``step`` pixels
    of its own (so twenty things the simulator did in the same virtual instant sit side by
    side rather than on top of each other) and the rest of the width is shared out by time (so
    a three-second outage still looks long). The ticks give the true times.
    """

    step: float
    scale: float
    """Pixels per second."""
    plot_width: float
    band_rows: int
    band_row: tuple[int, ...]
    """The label row of each of the diagram's bands, in order."""
    lane_y: dict[str, float]
    height: float
    slot_times: tuple[float, ...]

    @property
    def x0(self) -> float:
        return LABEL_WIDTH + PAD_LEFT

    @property
    def width(self) -> float:
        return self.x0 + self.plot_width + PAD_RIGHT

    @property
    def lanes_top(self) -> float:
        return AXIS_HEIGHT + self.band_rows * BAND_ROW_HEIGHT

    def x(self, instant: Instant) -> float:
        return self.x0 + self.step * instant.seq + self.scale * instant.at

    def x_of_time(self, at: float) -> float:
        """The x of a time that is not an event (a tick): after every event before it."""
        earlier = sum(1 for t in self.slot_times if t < at)
        return self.x0 + self.step * max(0, earlier - 0.5) + self.scale * at


def layout(diagram: Diagram) -> Layout:
    """Share the width between events and time, and stack the lanes by kind."""
    slots = len(diagram.slot_times)
    plot = float(min(MAX_PLOT_WIDTH, max(MIN_PLOT_WIDTH, slots * PIXELS_PER_EVENT)))
    gaps = max(slots - 1, 0)
    step = min(MAX_STEP, 0.6 * plot / max(gaps, 1)) if gaps else 0.0
    timed = plot - step * gaps
    if diagram.duration > 0:
        scale = timed / diagram.duration
    else:
        scale, plot = 0.0, max(step * gaps, 1.0)
    band_rows = _pack_labels(diagram.bands, step, scale)
    rows = max(band_rows, default=-1) + 1
    lane_y: dict[str, float] = {}
    y = AXIS_HEIGHT + rows * BAND_ROW_HEIGHT
    previous_kind = None
    for lane in diagram.lanes:
        if previous_kind is not None and lane.kind != previous_kind:
            y += SECTION_GAP
        lane_y[lane.key] = y + LANE_HEIGHT / 2
        y += LANE_HEIGHT
        previous_kind = lane.kind
    return Layout(step, scale, plot, rows, band_rows, lane_y, y + 12, diagram.slot_times)


def _label_width(text: str) -> float:
    return 6.2 * len(text) + 10


def _pack_labels(bands: tuple[Band, ...], step: float, scale: float) -> tuple[int, ...]:
    """The label row of every band (fault labels sit above the lanes, and a label never
    covers another: each goes in the first row that is free where it starts)."""
    rows = [0] * len(bands)
    ends: list[float] = []
    faults = [i for i, band in enumerate(bands) if band.kind == "fault"]
    for i in sorted(faults, key=lambda i: bands[i].start.seq):
        start = bands[i].start
        x = step * start.seq + scale * start.at
        for row, end in enumerate(ends):
            if x >= end:
                ends[row] = x + _label_width(bands[i].label)
                rows[i] = row
                break
        else:
            rows[i] = len(ends)
            ends.append(x + _label_width(bands[i].label))
    return tuple(rows)


def _ticks(lay: Layout, duration: float) -> list[tuple[float, str]]:
    """(x, label) of the time ticks: round numbers at least 70 px apart."""
    if duration <= 0:
        return [(lay.x0, "0s")]
    raw = duration / 8
    magnitude = 10 ** math.floor(math.log10(raw))
    interval = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    decimals = max(0, -math.floor(math.log10(interval)))
    ticks: list[tuple[float, str]] = []
    last_x = -math.inf
    count = int(duration / interval + 1e-9)
    for k in range(count + 1):
        at = k * interval
        x = lay.x_of_time(at) if k else lay.x0
        if x - last_x >= 70:
            ticks.append((x, f"{at:.{decimals}f}s"))
            last_x = x
    return ticks


# --- SVG --------------------------------------------------------------------------------


def _f(value: float) -> str:
    """A coordinate with one decimal (``12.0`` as ``12``): small files, exact enough."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _title(text: str) -> str:
    return f"<title>{_e(text)}</title>"


def _data_m(message_id: str | None) -> str:
    return f' data-m="{_e(message_id)}"' if message_id else ""


def _arrow_svg(arrow: Arrow, lay: Layout) -> str:
    x1, x2 = lay.x(arrow.start), lay.x(arrow.end)
    y1, y2 = lay.lane_y[arrow.source], lay.lane_y[arrow.target]
    # Stop short of the lane so the arrowhead's tip touches it instead of covering the mark.
    y2 += -5 if y2 > y1 else 5 if y2 < y1 else 0
    classes = f"a {arrow.kind.replace('_', '-')}"
    if arrow.fate is not None:
        classes += f" f-{arrow.fate.replace('_', '-')}"
    return (
        f'<line class="{classes}" x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}"'
        f"{_data_m(arrow.message_id)}>{_title(arrow.text)}</line>"
    )


def _cross(x: float, y: float, size: float) -> str:
    return (
        f"M{_f(x - size)} {_f(y - size)}L{_f(x + size)} {_f(y + size)}"
        f"M{_f(x - size)} {_f(y + size)}L{_f(x + size)} {_f(y - size)}"
    )


def _diamond(x: float, y: float, size: float) -> str:
    return (
        f"M{_f(x)} {_f(y - size)}L{_f(x + size)} {_f(y)}L{_f(x)} {_f(y + size)}"
        f"L{_f(x - size)} {_f(y)}Z"
    )


def _triangle(x: float, y: float, size: float) -> str:
    return f"M{_f(x)} {_f(y - size)}L{_f(x + size)} {_f(y + size)}L{_f(x - size)} {_f(y + size)}Z"


def _mark_svg(mark: Mark, lay: Layout) -> str:
    """One mark; settlements (acks, commits) sit just under the lane, rebalances just above."""
    x, y = lay.x(mark.when), lay.lane_y[mark.lane]
    kind = mark.kind.replace("_", "-")
    data = _data_m(mark.message_id)
    body = _title(mark.text)
    if mark.kind in ("processed", "skipped"):
        radius = 3.2 if mark.kind == "processed" else 3.6
        return (
            f'<circle class="m {kind}" cx="{_f(x)}" cy="{_f(y)}" r="{radius}"{data}>{body}</circle>'
        )
    if mark.kind in ("duplicate", "lost"):
        radius = 5.5 if mark.kind == "duplicate" else 8
        return (
            f'<circle class="m {kind}" cx="{_f(x)}" cy="{_f(y)}" r="{radius}"{data}>{body}</circle>'
        )
    if mark.kind == "committed":
        return (
            f'<rect class="m committed" x="{_f(x - 1)}" y="{_f(y + 5)}" width="2" height="6"'
            f"{data}>{body}</rect>"
        )
    shapes = {
        "acked": f"M{_f(x - 3)} {_f(y + 8)}l2 3l4 -6",
        "nacked": _cross(x, y + 8, 2.5),
        "failed": _triangle(x, y, 4.5),
        "produce_failed": _cross(x, y, 5),
        "crashed": _cross(x, y, 7),
        "leader": _diamond(x, y, 5),
        "rebalanced": _diamond(x, y - 9, 3.5),
        "expired": _cross(x, y, 3.5),
        "dead_lettered": _diamond(x, y, 7),
        "transaction": f"M{_f(x - 3.5)} {_f(y - 3.5)}h7v7h-7Z",
        "fault_action": _triangle(x, y, 5),
    }
    return f'<path class="m {kind}" d="{shapes[mark.kind]}"{data}>{body}</path>'


def _band_svg(band: Band, lay: Layout, row: int) -> str:
    x1, x2 = lay.x(band.start), lay.x(band.end)
    width = max(x2 - x1, 2.0)
    open_end = "" if band.healed else " open"
    if band.kind == "down" and band.lane is not None:
        y = lay.lane_y[band.lane] - LANE_HEIGHT / 2 + 3
        return (
            f'<rect class="band down{open_end}" x="{_f(x1)}" y="{_f(y)}" width="{_f(width)}" '
            f'height="{LANE_HEIGHT - 6}">{_title(band.text)}</rect>'
        )
    top = lay.lanes_top
    label_y = AXIS_HEIGHT + row * BAND_ROW_HEIGHT + 11
    return (
        f'<g class="band fault{open_end}">{_title(band.text)}'
        f'<rect x="{_f(x1)}" y="{_f(top)}" width="{_f(width)}" '
        f'height="{_f(lay.height - top - 6)}"/>'
        f'<line x1="{_f(x1)}" y1="{_f(label_y - 10)}" x2="{_f(x1)}" y2="{_f(lay.height - 6)}"/>'
        f'<text x="{_f(x1 + 3)}" y="{_f(label_y)}">{_e(band.label)}</text></g>'
    )


_LANE_KIND_NAMES = {
    "producer": "producer",
    "node": "broker node",
    "broker": "partition / queue",
    "consumer": "consumer",
}


def _lane_svg(lane: Lane, lay: Layout, index: int) -> str:
    y = lay.lane_y[lane.key]
    top = y - LANE_HEIGHT / 2
    label = lane.label if len(lane.label) <= 28 else lane.label[:26] + ".."
    stripe = " odd" if index % 2 else ""
    return (
        f'<g class="lane {lane.kind}{stripe}">'
        f"<title>{_e(_LANE_KIND_NAMES[lane.kind])}: {_e(lane.label)}</title>"
        f'<rect x="0" y="{_f(top)}" width="{_f(lay.width)}" height="{LANE_HEIGHT}"/>'
        f'<line x1="{_f(lay.x0)}" y1="{_f(y)}" x2="{_f(lay.x0 + lay.plot_width)}" y2="{_f(y)}"/>'
        f'<text x="{LABEL_WIDTH - 8}" y="{_f(y + 4)}" text-anchor="end">{_e(label)}</text>'
        f'<circle class="kind" cx="10" cy="{_f(y)}" r="4"/></g>'
    )


_MARKERS = ("produce", "deliver", "redeliver", "dead-letter", "lost", "duplicated", "aborted")


def diagram_svg(diagram: Diagram) -> str:
    """The diagram as one ``<svg>`` element (styled by the page's CSS)."""
    lay = layout(diagram)
    parts = [
        f'<svg id="diagram" class="diagram" width="{_f(lay.width)}" height="{_f(lay.height)}" '
        f'viewBox="0 0 {_f(lay.width)} {_f(lay.height)}" role="img" '
        f'aria-label="space-time diagram of the run">',
        "<defs>",
        *(
            f'<marker id="mk-{name}" class="mk-{name}" viewBox="0 0 10 10" refX="9" refY="5" '
            'markerUnits="userSpaceOnUse" markerWidth="7" markerHeight="7" orient="auto">'
            '<path d="M0 0L10 5L0 10Z"/></marker>'
            for name in _MARKERS
        ),
        "</defs>",
        '<g class="lanes">',
        *(_lane_svg(lane, lay, index) for index, lane in enumerate(diagram.lanes)),
        "</g>",
        '<g class="axis">',
    ]
    for x, label in _ticks(lay, diagram.duration):
        parts.append(
            f'<line x1="{_f(x)}" y1="{AXIS_HEIGHT - 6}" x2="{_f(x)}" y2="{_f(lay.height - 6)}"/>'
            f'<text x="{_f(x)}" y="{AXIS_HEIGHT - 10}" text-anchor="middle">{_e(label)}</text>'
        )
    parts.append("</g>")
    parts.append('<g class="bands">')
    parts += [
        _band_svg(band, lay, row) for band, row in zip(diagram.bands, lay.band_row, strict=True)
    ]
    parts.append("</g>")
    crash_lines = [
        f'<line class="crashline" x1="{_f(lay.x(m.when))}" y1="{_f(lay.lanes_top)}" '
        f'x2="{_f(lay.x(m.when))}" y2="{_f(lay.height - 6)}"/>'
        for m in diagram.marks
        if m.kind == "crashed"
    ]
    parts += ['<g class="crashes">', *crash_lines, "</g>"]
    parts.append('<g class="arrows">')
    parts += [_arrow_svg(arrow, lay) for arrow in diagram.arrows]
    parts.append("</g>")
    parts.append('<g class="marks">')
    # Fate marks last: on top of everything else.
    ordinary = [m for m in diagram.marks if m.kind not in ("lost", "dead_lettered")]
    fated = [m for m in diagram.marks if m.kind in ("lost", "dead_lettered")]
    parts += [_mark_svg(mark, lay) for mark in ordinary + fated]
    parts.append("</g></svg>")
    return "".join(parts)


# --- legend -----------------------------------------------------------------------------

_LEGEND: tuple[tuple[str, str, str], ...] = (
    # (toggle class, swatch svg, text)
    ("produce", '<line class="a produce" x1="2" y1="3" x2="26" y2="13"/>', "produce"),
    ("deliver", '<line class="a deliver" x1="2" y1="3" x2="26" y2="13"/>', "delivery"),
    ("redeliver", '<line class="a redeliver" x1="2" y1="3" x2="26" y2="13"/>', "redelivery"),
    (
        "dead-letter",
        '<line class="a dead-letter" x1="2" y1="3" x2="26" y2="13"/>',
        "dead-letter hop",
    ),
    ("processed", '<circle class="m processed" cx="14" cy="8" r="3.2"/>', "processed"),
    ("duplicate", '<circle class="m duplicate" cx="14" cy="8" r="5.5"/>', "processed again"),
    ("skipped", '<circle class="m skipped" cx="14" cy="8" r="3.6"/>', "skipped duplicate"),
    ("acked", '<path class="m acked" d="M11 5l2 3l4 -6"/>', "acked"),
    ("nacked", '<path class="m nacked" d="M11.5 3.5L16.5 8.5M11.5 8.5L16.5 3.5"/>', "nacked"),
    ("committed", '<rect class="m committed" x="13" y="4" width="2" height="8"/>', "committed"),
    ("failed", '<path class="m failed" d="M14 3.5L18.5 12.5L9.5 12.5Z"/>', "processing failed"),
    ("crashed", '<path class="m crashed" d="M8 2L20 14M8 14L20 2"/>', "consumer crashed"),
    ("leader", '<path class="m leader" d="M14 3L19 8L14 13L9 8Z"/>', "leader / ISR change"),
    ("rebalanced", '<path class="m rebalanced" d="M14 4.5L17.5 8L14 11.5L10.5 8Z"/>', "rebalance"),
    ("lost", '<circle class="m lost" cx="14" cy="8" r="6.5"/>', "lost"),
    (
        "dead-lettered",
        '<path class="m dead-lettered" d="M14 1.5L20.5 8L14 14.5L7.5 8Z"/>',
        "dead-lettered",
    ),
    ("produce-failed", '<path class="m produce-failed" d="M9 3L19 13M9 13L19 3"/>', "send failed"),
    ("expired", '<path class="m expired" d="M11 5L17 11M11 11L17 5"/>', "expired"),
    ("transaction", '<path class="m transaction" d="M10.5 4.5h7v7h-7Z"/>', "transaction ended"),
    ("fault-action", '<path class="m fault-action" d="M14 3L19 13L9 13Z"/>', "resume / restart"),
    ("fault", '<rect class="swatch-fault" x="2" y="1" width="24" height="14"/>', "fault"),
    ("down", '<rect class="band down" x="2" y="3" width="24" height="10"/>', "node down"),
)


def _legend(diagram: Diagram) -> str:
    """One toggle per kind of arrow, mark and band that this diagram has."""
    present = {arrow.kind.replace("_", "-") for arrow in diagram.arrows}
    present |= {mark.kind.replace("_", "-") for mark in diagram.marks}
    present |= {band.kind for band in diagram.bands}
    items = "".join(
        f'<button type="button" data-toggle="{name}" aria-pressed="true" '
        f'title="show or hide: {_e(text)}"><svg width="28" height="16" aria-hidden="true">'
        f"{swatch}</svg>{_e(text)}</button>"
        for name, swatch, text in _LEGEND
        if name in present
    )
    return f'<div class="legend" role="group" aria-label="legend">{items}</div>'


# --- page sections ----------------------------------------------------------------------


def scenario_of(result: RunResult) -> Scenario | None:
    """The scenario a run was recorded with (its ``run_started`` carries it), or None."""
    for observation in result.observations:
        if isinstance(observation, RunStarted):
            try:
                return Scenario.model_validate_json(observation.scenario)
            except ValidationError:
                return None
    return None


def _recorded_version(result: RunResult) -> str:
    for observation in result.observations:
        if isinstance(observation, RunStarted):
            return observation.mqlab_version or "not recorded"
    return "not recorded"


def _expected_cell(expectation: ExpectationResult | None) -> str:
    if expectation is None:
        return "<td></td>"
    mark = "&#10003;" if expectation.holds else "&#10007;"
    cls = "ok" if expectation.holds else "bad"
    return f'<td class="{cls}">{mark} {_e(expectation.expected)}</td>'


def _ledger_section(result: RunResult) -> str:
    """The ledger as the terminal shows it: every row with an expectation or a count (produced
    and lost always), then the per-group expectations, each beside its number."""
    expected = {e.name: e for e in result.expectations if e.group is None}
    rows: list[str] = []
    for row in LEDGER_ROWS:
        value = result.summary[row.name]
        expectation = expected.get(row.name)
        if value == 0 and expectation is None and not row.always_shown:
            continue
        rows.append(
            f'<tr><th scope="row">{_e(row.label)}</th><td class="num">{value}</td>'
            f"{_expected_cell(expectation)}</tr>"
        )
    for expectation in result.expectations:
        if expectation.group is not None:
            label = f"group {expectation.group}: {expectation.name.replace('_', ' ')}"
            rows.append(
                f'<tr><th scope="row">{_e(label)}</th><td class="num">{expectation.actual}</td>'
                f"{_expected_cell(expectation)}</tr>"
            )
    table = (
        '<table class="ledger"><thead><tr><th></th><th>count</th><th>expected</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )
    groups = ""
    if result.groups:
        head = "".join(f"<th>{_e(n.replace('_', ' '))}</th>" for n in _GROUP_COLUMNS)
        body = "".join(
            f'<tr><th scope="row">{_e(name)}</th>'
            + "".join(f'<td class="num">{group[n]}</td>' for n in _GROUP_COLUMNS)
            + "</tr>"
            for name, group in sorted(result.groups.items())
        )
        groups = (
            '<h3>Per group</h3><table class="groups"><thead><tr><th>group</th>'
            f"{head}</tr></thead><tbody>{body}</tbody></table>"
        )
    title = f"Ledger: {_e(result.scenario_id)} on {_e(result.broker)}"
    return f'<section id="ledger"><h2>{title}</h2>{table}{groups}</section>'


_GROUP_COLUMNS = ("processed", "runs", "processed_once", "duplicated", "out_of_order")


def _checks_section(result: RunResult) -> str:
    rows = [(f"step {c.step}", c) for c in result.checks] + [("end", a) for a in result.agreement]
    if not rows:
        return ""
    body = "".join(
        f"<tr><td>{_e(when)}</td><td>{_e(check.description)}</td><td>{_e(check.observed)}</td>"
        f'<td class="{"ok" if check.holds else "bad"}">'
        f"{'&#10003;' if check.holds else '&#10007;'}</td></tr>"
        for when, check in rows
    )
    return (
        '<section id="checks"><h2>The broker&#8217;s own view</h2><table class="checks">'
        "<thead><tr><th>when</th><th>check</th><th>observed</th><th></th></tr></thead>"
        f"<tbody>{body}</tbody></table></section>"
    )


def _verdict_section(result: RunResult) -> str:
    verdict = result.verdict
    if verdict == "error":
        headline = f"ERROR on {result.broker}: {result.error}"
    elif verdict == "pass":
        headline = f"PASS on {result.broker}"
    else:
        headline = f"FAIL on {result.broker}"
    failures = "".join(f"<li>{_e(line)}</li>" for line in result.failures())
    listing = f'<ul class="failures">{failures}</ul>' if failures else ""
    restore = (
        '<p class="bad">The cleanup could not put everything back: '
        f"{_e(result.restore_problem)}</p>"
        if result.restore_problem
        else ""
    )
    return (
        f'<section id="verdict"><h2>Verdict</h2><p class="verdict {verdict}">{_e(headline)}</p>'
        f"{listing}{restore}</section>"
    )


def _fates_section(diagram: Diagram) -> str:
    items = []
    for fate in FATES:
        ids = diagram.fates[fate]
        if not ids:
            continue
        codes = " ".join(f'<code data-m="{_e(mid)}">{_e(mid)}</code>' for mid in ids)
        items.append(
            f'<li class="fate {fate.replace("_", "-")}"><strong>{len(ids)} '
            f"{_e(FATE_LABELS[fate])}</strong>: {codes}</li>"
        )
    if not items:
        return '<p class="fates none">No message was lost, duplicated or dead-lettered.</p>'
    return f'<ul class="fates">{"".join(items)}</ul>'


def _timeline_section(result: RunResult) -> str:
    observations = result.observations
    if not observations:
        return ""
    start = observations[0].at
    lines: list[str] = []
    for observation in observations:
        line = describe(observation)
        if line is None:
            continue
        if len(lines) == MAX_TIMELINE_LINES:
            lines.append(f"... and more (the first {MAX_TIMELINE_LINES:,} lines are shown)")
            break
        lines.append(f"{observation.at - start:+10.3f}s  {observation.broker:<13} {line}")
    text = _e("\n".join(lines))
    return (
        f'<section id="timeline"><details><summary>Every observation, as text '
        f"({len(observations):,})</summary><pre>{text}</pre></details></section>"
    )


def _diagram_section(result: RunResult, diagram: Diagram) -> str:
    clock = "virtual seconds (the simulator)" if result.simulated else "seconds"
    counts = f"{diagram.messages_total:,} messages, {len(diagram.lanes)} lanes"
    thinning = f'<p class="thinned">{_e(diagram.thinning)}</p>' if diagram.thinning else ""
    return (
        '<section id="run"><h2>The run, in space and time</h2>'
        f'<p class="hint">Time runs left to right in {clock} since the run started; where '
        "many things happen at the same instant the axis makes room for each, and the ticks "
        "keep the true times. Each line is a message moving between lanes. Hover over anything "
        "for what it was (and to follow that message); click the legend to hide or show a "
        f"kind. {_e(counts)}.</p>{thinning}{_legend(diagram)}"
        '<div id="detail" class="detail" aria-live="polite">Hover over an arrow or a mark.</div>'
        f'<div class="scroll">{diagram_svg(diagram)}</div>{_fates_section(diagram)}</section>'
    )


def render_report(
    result: RunResult,
    scenario: Scenario | None = None,
    *,
    max_messages: int = DEFAULT_MAX_MESSAGES,
) -> str:
    """The whole page for one run (pure: the same result gives the same text).

    Args:
        result: a live run's or a replayed trace's result (with its observations).
        scenario: the scenario it ran; by default the one its ``run_started`` recorded.
        max_messages: draw at most this many messages in full (see
            :func:`~mqlab.scenarios.spacetime.build_diagram`).
    """
    scenario = scenario or scenario_of(result)
    system = result.broker.removeprefix("sim:")
    stream = scenario.channel.name if scenario is not None else ""
    diagram = build_diagram(
        result.observations, system=system, stream=stream, max_messages=max_messages
    )
    title = scenario.title if scenario is not None else result.scenario_id
    summary = f"<p>{_e(scenario.summary.strip())}</p>" if scenario and scenario.summary else ""
    explain = (
        f'<section id="explain"><h2>What happened, and why</h2>'
        f"<p>{_e(scenario.explain.strip())}</p></section>"
        if scenario and scenario.explain.strip()
        else ""
    )
    length_unit = "virtual s" if result.simulated else "s"
    facts = (
        ("scenario", result.scenario_id),
        ("topic", scenario.topic if scenario else ""),
        ("broker", result.broker),
        ("seed", str(result.seed)),
        ("run length", f"{result.scenario_seconds:.3f} {length_unit}"),
        ("observations", f"{len(result.observations):,}"),
        ("recorded with mqlab", _recorded_version(result)),
        ("report by mqlab", __version__),
    )
    meta = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v)
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>{_e(title)}: {_e(result.broker)} ({_e(result.verdict)})</title>"
        f"<style>{_CSS}</style></head>"
        f'<body data-verdict="{_e(result.verdict)}">'
        f'<header><h1>{_e(title)}</h1><p class="badge {result.verdict}">'
        f"{_e(result.verdict.upper())}</p>{summary}<dl>{meta}</dl></header>"
        f"<main>{_diagram_section(result, diagram)}{_ledger_section(result)}"
        f"{_checks_section(result)}{_verdict_section(result)}{explain}"
        f"{_timeline_section(result)}</main>"
        f"<footer>Written by mqlab {_e(__version__)}. Everything on this page is in this one "
        "file; it needs no network.</footer>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
    return page.encode("ascii", "xmlcharrefreplace").decode("ascii")


def write_report(
    path: Path,
    result: RunResult,
    scenario: Scenario | None = None,
    *,
    max_messages: int = DEFAULT_MAX_MESSAGES,
) -> None:
    """Render the run's report and write it to ``path`` atomically (a reader never sees half
    a page; an existing file is replaced).

    Raises:
        OSError: the file cannot be written.
    """
    from mqlab.lab.process import write_atomically

    write_atomically(path, render_report(result, scenario, max_messages=max_messages))


# --- style and script -------------------------------------------------------------------
# ASCII only: the page is written as ASCII, and character references mean nothing inside
# <style> and <script>.

_CSS = """
:root{--bg:#fcfcfb;--fg:#1d232a;--muted:#5b6570;--panel:#f0f2f4;--line:#d4d9de;
--stripe:#f4f6f8;--c-produce:#2f6fd0;--c-deliver:#138a72;--c-redeliver:#c77800;
--c-dead:#b0309b;--c-lost:#d11f2f;--c-dup:#e07b00;--c-aborted:#8a939c;--c-ok:#17803d;
--c-bad:#c21f2f;--c-commit:#3b5bdb;--c-leader:#b8860b;--c-rebalance:#7048e8;
--c-fault:rgba(209,31,47,.09);--c-fault-edge:rgba(209,31,47,.55);--c-down:rgba(209,31,47,.22);
--c-kind-producer:#2f6fd0;--c-kind-node:#c21f2f;--c-kind-broker:#8a5a00;--c-kind-consumer:#138a72}
@media (prefers-color-scheme:dark){:root{--bg:#15181c;--fg:#e4e7ea;--muted:#9aa4ae;
--panel:#1f2429;--line:#3a424a;--stripe:#1b1f24;--c-produce:#6ea8ff;--c-deliver:#3cc9a6;
--c-redeliver:#ffae42;--c-dead:#e879d8;--c-lost:#ff5c6c;--c-dup:#ffa94d;--c-aborted:#7d8791;
--c-ok:#4cc777;--c-bad:#ff6b7a;--c-commit:#8ca2ff;--c-leader:#e6b422;--c-rebalance:#a98bff;
--c-fault:rgba(255,92,108,.10);--c-fault-edge:rgba(255,92,108,.6);--c-down:rgba(255,92,108,.25);
--c-kind-producer:#6ea8ff;--c-kind-node:#ff6b7a;--c-kind-broker:#e0a84a;--c-kind-consumer:#3cc9a6}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1400px;padding:16px 22px 40px;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
h1{font-size:22px;margin:6px 0 4px}h2{font-size:17px;margin:26px 0 8px}h3{font-size:14px}
header dl{display:grid;grid-template-columns:max-content 1fr max-content 1fr;gap:2px 14px;
margin:10px 0;padding:10px 12px;background:var(--panel);border-radius:6px}
header dt{color:var(--muted)}header dd{margin:0}
.badge{display:inline-block;margin:0;padding:2px 10px;border-radius:4px;font-weight:700;
color:#fff}.badge.pass{background:var(--c-ok)}.badge.fail,.badge.error{background:var(--c-bad)}
.hint,.thinned{color:var(--muted);max-width:100ch}.thinned{font-weight:600}
.legend{display:flex;flex-wrap:wrap;gap:4px;margin:8px 0}
.legend button{display:inline-flex;align-items:center;gap:4px;padding:2px 8px 2px 2px;
font:inherit;font-size:12px;color:var(--fg);background:var(--panel);border:1px solid var(--line);
border-radius:4px;cursor:pointer}.legend button[aria-pressed=false]{opacity:.4}
.detail{min-height:2.9em;padding:6px 10px;margin:4px 0;background:var(--panel);border-radius:6px;
font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap}
.scroll{overflow-x:auto;border:1px solid var(--line);border-radius:6px;background:var(--bg)}
svg.diagram{display:block;font:12px system-ui,sans-serif}
.lane rect{fill:var(--bg)}.lane.odd rect{fill:var(--stripe)}
.lane line{stroke:var(--line);stroke-width:1}.lane text{fill:var(--fg)}
.lane.producer .kind{fill:var(--c-kind-producer)}.lane.node .kind{fill:var(--c-kind-node)}
.lane.broker .kind{fill:var(--c-kind-broker)}.lane.consumer .kind{fill:var(--c-kind-consumer)}
.axis line{stroke:var(--line);stroke-dasharray:2 4}.axis text{fill:var(--muted);font-size:11px}
.band.fault rect,.swatch-fault{fill:var(--c-fault)}
.band.fault line{stroke:var(--c-fault-edge);stroke-width:1.5}
.band.fault text{fill:var(--c-bad);font-size:11px;font-weight:600}
.band.down{fill:var(--c-down);stroke:var(--c-fault-edge);stroke-dasharray:4 3}
.band.open rect{stroke:var(--c-fault-edge);stroke-dasharray:6 3}
.crashline{stroke:var(--c-bad);stroke-width:1.2;stroke-dasharray:3 3}
.a{stroke-width:1.3;fill:none}
.a.produce{stroke:var(--c-produce);marker-end:url(#mk-produce)}
.a.deliver{stroke:var(--c-deliver);marker-end:url(#mk-deliver)}
.a.redeliver{stroke:var(--c-redeliver);stroke-dasharray:5 3;marker-end:url(#mk-redeliver)}
.a.dead-letter{stroke:var(--c-dead);stroke-dasharray:2 2;stroke-width:1.8;
marker-end:url(#mk-dead-letter)}
.a.f-lost{stroke:var(--c-lost);stroke-width:2.2;marker-end:url(#mk-lost)}
.a.f-duplicated{stroke:var(--c-dup);stroke-width:1.9;marker-end:url(#mk-duplicated)}
.a.f-dead-lettered{stroke:var(--c-dead);stroke-width:1.9;marker-end:url(#mk-dead-letter)}
.a.f-aborted{stroke:var(--c-aborted);stroke-dasharray:1 3;marker-end:url(#mk-aborted)}
.a.f-produce-failed{stroke:var(--c-bad)}
.mk-produce path{fill:var(--c-produce)}.mk-deliver path{fill:var(--c-deliver)}
.mk-redeliver path{fill:var(--c-redeliver)}.mk-dead-letter path{fill:var(--c-dead)}
.mk-lost path{fill:var(--c-lost)}.mk-duplicated path{fill:var(--c-dup)}
.mk-aborted path{fill:var(--c-aborted)}
.m.processed{fill:var(--c-ok)}.m.skipped{fill:none;stroke:var(--c-aborted);stroke-width:1.5}
.m.duplicate{fill:none;stroke:var(--c-dup);stroke-width:2.5}
.m.acked{fill:none;stroke:var(--c-ok);stroke-width:1.6}
.m.nacked{fill:none;stroke:var(--c-redeliver);stroke-width:1.6}
.m.committed{fill:var(--c-commit)}.m.failed{fill:var(--c-dup)}
.m.produce-failed,.m.crashed,.m.expired{fill:none;stroke:var(--c-bad);stroke-width:2.4}
.m.crashed{stroke-width:3.2}.m.expired{stroke:var(--c-aborted)}
.m.leader{fill:var(--c-leader)}.m.rebalanced{fill:var(--c-rebalance)}
.m.lost{fill:rgba(209,31,47,.18);stroke:var(--c-lost);stroke-width:2.4}
.m.dead-lettered{fill:var(--c-dead);stroke:var(--bg);stroke-width:1}
.m.transaction{fill:var(--c-aborted)}.m.fault-action{fill:var(--c-ok)}
.hide-produce .a.produce,.hide-deliver .a.deliver,.hide-redeliver .a.redeliver,
.hide-dead-letter .a.dead-letter,.hide-processed .m.processed,.hide-duplicate .m.duplicate,
.hide-skipped .m.skipped,.hide-acked .m.acked,.hide-nacked .m.nacked,
.hide-committed .m.committed,.hide-failed .m.failed,.hide-crashed .m.crashed,
.hide-crashed .crashline,.hide-leader .m.leader,.hide-rebalanced .m.rebalanced,
.hide-lost .m.lost,.hide-dead-lettered .m.dead-lettered,.hide-fault .band.fault,
.hide-down .band.down,.hide-produce-failed .m.produce-failed,.hide-expired .m.expired,
.hide-transaction .m.transaction,.hide-fault-action .m.fault-action{display:none}
svg.focus .a,svg.focus .m{opacity:.18}svg.focus .hl{opacity:1}svg.focus .a.hl{stroke-width:2.6}
code.hl{outline:2px solid var(--c-produce)}
ul.fates{padding-left:18px}ul.fates code{cursor:default;margin-right:4px}
li.fate.lost strong{color:var(--c-lost)}li.fate.dead-lettered strong{color:var(--c-dead)}
li.fate.duplicated strong{color:var(--c-dup)}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 12px;text-align:left;
border-bottom:1px solid var(--line)}th{font-weight:600}td.num{text-align:right;
font-variant-numeric:tabular-nums}thead th{color:var(--muted);font-weight:500}
.ok{color:var(--c-ok)}.bad{color:var(--c-bad)}
.verdict{font-size:16px;font-weight:700}.verdict.pass{color:var(--c-ok)}
.verdict.fail,.verdict.error{color:var(--c-bad)}
#explain p{max-width:100ch;white-space:pre-line}
pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-x:auto;
padding:10px;background:var(--panel);border-radius:6px}
footer{margin-top:30px;color:var(--muted);font-size:12px}
"""

_SCRIPT = """
(function () {
  var svg = document.getElementById("diagram");
  var detail = document.getElementById("detail");
  if (!svg || !detail) { return; }
  var idle = detail.textContent;
  document.querySelectorAll(".legend [data-toggle]").forEach(function (button) {
    button.addEventListener("click", function () {
      var hidden = svg.classList.toggle("hide-" + button.getAttribute("data-toggle"));
      button.setAttribute("aria-pressed", hidden ? "false" : "true");
    });
  });
  function highlight(id) {
    document.querySelectorAll(".hl").forEach(function (el) { el.classList.remove("hl"); });
    svg.classList.toggle("focus", !!id);
    if (!id) { return; }
    document.querySelectorAll('[data-m="' + id + '"]').forEach(function (el) {
      el.classList.add("hl");
    });
  }
  function titleOf(el) {
    for (var i = 0; i < el.children.length; i++) {
      if (el.children[i].tagName.toLowerCase() === "title") {
        return el.children[i].textContent;
      }
    }
    return "";
  }
  document.addEventListener("mouseover", function (event) {
    var target = event.target instanceof Element ? event.target : null;
    var item = target && target.closest("[data-m], .band, .m, .lane");
    if (!item) { highlight(null); detail.textContent = idle; return; }
    var id = item.getAttribute("data-m");
    highlight(id);
    var text = titleOf(item);
    if (id && !text) { text = "message " + id; }
    detail.textContent = text || idle;
  });
  document.body.setAttribute("data-script", "ran");
})();
"""
