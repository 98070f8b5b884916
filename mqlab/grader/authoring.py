"""Checks of the course's own exercises (``mqlab dev check`` and the test suite).

An exercise is only fair if its grader can tell right from wrong: the reference solution must
pass on every broker it lists, the starter must fail (a learner who changes nothing must not
pass), and every plausible wrong solution kept in ``wrong/`` must fail with the invariant it
names, so the learner is told the right reason.
"""

from __future__ import annotations

from mqlab.grader.catalog import ExerciseEntry
from mqlab.grader.invariants import INVARIANTS
from mqlab.grader.run import CheckReport, check_file


def _files_problems(entry: ExerciseEntry) -> list[str]:
    problems = []
    for path in (entry.check_file, entry.starter_file, entry.solution_file):
        if not path.is_file():
            problems.append(f"missing {path.relative_to(entry.folder)}")
    for wrong in entry.exercise.wrong:
        if not entry.wrong_file(wrong.file).is_file():
            problems.append(f"missing wrong/{wrong.file}")
    for use in entry.exercise.invariants:
        invariant = INVARIANTS.get(use.id)
        if invariant is None:
            problems.append(
                f"unknown invariant {use.id!r} (known: {', '.join(sorted(INVARIANTS))})"
            )
            continue
        unknown = sorted(set(use.params) - set(invariant.params) - {"prefix"})
        if unknown:
            problems.append(f"invariant {use.id}: unknown parameter {unknown[0]!r}")
    return problems


def why_it_failed(report: CheckReport) -> str:
    """One line: why a checked file did not pass (the invariant, its problem, its evidence)."""
    if report.learner_error is not None:
        return report.learner_error.one_line()
    if report.check_error is not None:
        return report.check_error.strip().splitlines()[-1]
    broken = report.broken
    if broken is None:
        return "no invariant was judged"
    # The evidence too: a reference solution that fails on a loaded machine is a race to find,
    # and its counterexample (which message, who received it when) is all a log keeps of it.
    evidence = "; ".join(broken.finding.counterexample)
    return f"{broken.id}: {broken.finding.problem}" + (f" ({evidence})" if evidence else "")


def audit_exercise(
    entry: ExerciseEntry, *, broker: str = "sim", seed: int = 0, wrong: bool = True
) -> list[str]:
    """Everything wrong with an exercise on ``broker`` (empty: it is sound there).

    ``wrong=False`` skips the wrong solutions: they are about the invariants, which the
    simulator judges the same way, while the solution and the starter are about the broker
    (the test suite runs those two on every real broker, and all of them on ``sim``).
    """
    problems = _files_problems(entry)
    if problems:
        return problems
    solution = check_file(entry, entry.solution_file, broker=broker, seed=seed)
    if not solution.passed:
        problems.append(f"the reference solution fails: {why_it_failed(solution)}")
    starter = check_file(entry, entry.starter_file, broker=broker, seed=seed)
    if starter.passed:
        problems.append("the starter passes: a learner who changes nothing would pass")
    for mistake in entry.exercise.wrong if wrong else ():
        report = check_file(entry, entry.wrong_file(mistake.file), broker=broker, seed=seed)
        caught = any(r.id == mistake.breaks and not r.finding.holds for r in report.results)
        if report.passed:
            problems.append(f"wrong/{mistake.file} passes ({mistake.why})")
        elif not caught:
            problems.append(
                f"wrong/{mistake.file} fails, but not {mistake.breaks}: {why_it_failed(report)}"
            )
    return problems
