"""What ``mqlab bench`` and ``mqlab compare --table`` print: numbers, settings, a text plot.

Rich renderables only (no I/O here): the CLI prints them and tests read their text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text

from mqlab.bench.native import NativeResult
from mqlab.bench.table import ROW_TITLES, ROWS, Cell, Verdict
from mqlab.bench.workload import TARGET_TITLES, TARGETS, BenchResult, BenchTarget

BAR_WIDTH = 40
VERDICT_MARKS: dict[Verdict, tuple[str, str]] = {
    "verified": ("✓ verified", "green"),
    "contradicted": ("✗ contradicted", "red"),
    "not testable here": ("· not testable here", "yellow"),
}


def _rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:,.0f}"


def ratio(bench: BenchResult, native: NativeResult | None) -> float | None:
    """The harness's produce rate as a share of the native tool's on the same broker."""
    if native is None or not native.produce_rate or bench.produce_rate is None:
        return None
    return bench.produce_rate / native.produce_rate


def results_table(
    results: Sequence[BenchResult], native: Mapping[BenchTarget, NativeResult]
) -> Table:
    """One row per system: rates, latencies, and the native tool beside the harness."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (
        ("system", "left"),
        ("produce msg/s", "right"),
        ("end-to-end msg/s", "right"),
        ("ack p50/p99 ms", "right"),
        ("end-to-end p50/p99 ms", "right"),
        ("native tool", "left"),
        ("native msg/s", "right"),
        ("harness/native", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for result in results:
        tool = native.get(result.target)
        share = ratio(result, tool)
        table.add_row(
            Text(f"{TARGET_TITLES[result.target]} ({result.broker})"),
            _rate(result.produce_rate),
            _rate(result.end_to_end_rate),
            f"{result.ack_latency.p50_ms:.1f} / {result.ack_latency.p99_ms:.1f}",
            f"{result.end_to_end.p50_ms:.1f} / {result.end_to_end.p99_ms:.1f}",
            Text(tool.tool if tool else ""),
            _rate(tool.produce_rate) if tool else "",
            Text(f"{share:.2f}x", style="green" if share >= 0.5 else "yellow")
            if share is not None
            else "",
        )
    return table


def settings_text(result: BenchResult) -> Text:
    """The settings one result was measured with, one per line."""
    workload = result.workload
    text = Text()
    text.append(f"{TARGET_TITLES[result.target]}: ", style="bold")
    text.append(f"{workload.messages:,} messages of {workload.size} B\n")
    for name, value in result.settings:
        text.append(f"  {name}: {value}\n")
    if result.duplicates:
        text.append(
            f"  duplicates: {result.duplicates:,} deliveries of messages already received "
            "(counted apart: not in the rates or latencies)\n",
            style="yellow",
        )
    return text


def bar_chart(results: Sequence[BenchResult], native: Mapping[BenchTarget, NativeResult]) -> Text:
    """Produce rates as text bars on one scale, each native tool under its harness."""
    bars: list[tuple[str, float | None, str]] = []
    for result in results:
        bars.append((f"{result.target} (mqlab)", result.produce_rate, "cyan"))
        tool = native.get(result.target)
        if tool is not None:
            bars.append((f"{result.target} ({tool.tool})", tool.produce_rate, "magenta"))
    text = Text()
    top = max((rate or 0.0 for _, rate, _ in bars), default=0.0)
    label_width = max((len(label) for label, _, _ in bars), default=0)
    for label, rate, style in bars:
        text.append(f"{label:<{label_width}}  ")
        if rate is None:
            text.append(" " * BAR_WIDTH + "  n/a (no virtual time passed: nothing to plot)\n")
            continue
        filled = round(BAR_WIDTH * rate / top) if top > 0 else 0
        text.append("█" * filled, style=style)
        text.append(" " * (BAR_WIDTH - filled))
        text.append(f"  {rate:,.0f} msg/s\n")
    return text


def comparison_view(cells: Sequence[Cell]) -> Group:
    """The table (claims with their verdict marks), then each cell's reason, numbered."""
    by_key = {(cell.row, cell.target): cell for cell in cells}
    table = Table(header_style="bold", show_lines=True)
    table.add_column("")
    for target in TARGETS:
        table.add_column(TARGET_TITLES[target])
    notes = Text()
    number = 0
    for row in ROWS:
        row_cells: list[Text] = []
        for target in TARGETS:
            found = by_key.get((row, target))
            if found is None:
                row_cells.append(Text(""))
                continue
            number += 1
            mark, style = VERDICT_MARKS[found.verdict]
            cell_text = Text(f"{found.claim}\n")
            cell_text.append(mark, style=style)
            cell_text.append(f" [{number}]", style="dim")
            row_cells.append(cell_text)
            notes.append(f"[{number}] {ROW_TITLES[row]}, {TARGET_TITLES[target]}: ", style="bold")
            notes.append(f"{found.verdict}: ", style=style)
            notes.append(f"{found.why}{_sources(found)}\n")
        table.add_row(Text(ROW_TITLES[row], style="bold"), *row_cells)
    return Group(table, Text(""), notes)


def _sources(cell: Cell) -> str:
    names: list[str] = []
    for item in cell.evidence:
        run = item.get("run")
        if isinstance(run, dict):
            names.append(f"{run['scenario']} on {run['broker']}")
        elif "bench" in item:
            names.append("mqlab bench")
        elif "native" in item:
            names.append(str(item["native"]["tool"]))
        elif "lab" in item:
            names.append("mqlab lab status")
    return f" (evidence: {', '.join(names)})" if names else ""
