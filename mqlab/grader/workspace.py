"""The learner's workspace: the folder ``mqlab init`` creates and ``mqlab check`` grades.

Layout (``DIR`` is what the learner named, ``mqlab-exercises`` by default)::

    DIR/README.md                       how to work: init, check, hint, next, reset
    DIR/.mqlab/workspace.json           marks the folder; the mqlab version that made it
    DIR/.mqlab/backups/                 a learner's file saved before ``mqlab reset``
    DIR/06-retries/full-jitter/jitter.py       one starter file per exercise
    DIR/06-retries/full-jitter/TASK.md          the task, the interface to write against

Commands find the workspace from the current directory upwards (like git), or from
``MQLAB_WORKSPACE``. Files are written atomically, and ``init`` never overwrites a learner's
file: running it again only adds the exercises that are new.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mqlab.grader.catalog import ExerciseEntry
from mqlab.grader.run import real_targets

MARKER_DIR = ".mqlab"
MARKER_FILE = "workspace.json"
DEFAULT_NAME = "mqlab-exercises"


class WorkspaceError(Exception):
    """No workspace here, or one that cannot be written; one line for the learner."""


@dataclass(frozen=True, slots=True)
class Workspace:
    """A learner's workspace folder."""

    root: Path

    def exercise_dir(self, entry: ExerciseEntry) -> Path:
        """Where the learner's copy of an exercise lives."""
        return self.root / entry.lesson_folder / entry.id

    def learner_file(self, entry: ExerciseEntry) -> Path:
        """The file the learner edits for an exercise."""
        return self.exercise_dir(entry) / entry.exercise.file

    def backups(self) -> Path:
        """Where ``reset`` keeps the learner's previous files."""
        return self.root / MARKER_DIR / "backups"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def task_text(entry: ExerciseEntry) -> str:
    """The TASK.md of an exercise: title, task, how it is graded."""
    exercise = entry.exercise
    brokers = ", ".join(["sim", *real_targets(exercise)])
    return (
        f"# {exercise.title}\n\n{exercise.summary.strip()}\n\n"
        f"Edit `{exercise.file}` in this folder, then run `mqlab check {exercise.id}`.\n\n"
        f"- Graded on: {brokers} (`--broker`; `sim` needs nothing installed).\n"
        f"- What the grader does to your code: {exercise.faults.strip()}\n"
        f"- Stuck? `mqlab hint {exercise.id}` shows the next hint.\n"
    )


def readme_text(entries: list[ExerciseEntry]) -> str:
    """The workspace's README: the commands and the exercises in course order."""
    lines = [
        "# mqlab exercises",
        "",
        "Each folder holds one exercise: the file you edit and TASK.md with the task.",
        "mqlab grades your code the way production grades it: it runs it in a separate",
        "process under faults (crashes at chosen points, broker kills, redeliveries,",
        "duplicates) and judges what happened, not what was printed.",
        "",
        "    mqlab next                 the next exercise to do, and where its file is",
        "    mqlab check [EXERCISE]     grade it (the current one by default); --watch re-checks",
        "                               on every save; --broker kafka runs it on the lab",
        "    mqlab hint [EXERCISE]      the next hint",
        "    mqlab progress             what is done",
        "    mqlab reset EXERCISE       start an exercise again (your file is backed up)",
        "",
        "| # | exercise | lesson | difficulty | file |",
        "|---|----------|--------|------------|------|",
    ]
    for entry in entries:
        exercise = entry.exercise
        path = f"{entry.lesson_folder}/{exercise.id}/{exercise.file}"
        lines.append(
            f"| {entry.number} | {exercise.title} | {exercise.lesson} | "
            f"{'*' * exercise.difficulty} | `{path}` |"
        )
    return "\n".join(lines) + "\n"


def init_workspace(root: Path, entries: list[ExerciseEntry]) -> tuple[Workspace, list[Path]]:
    """Create (or complete) a workspace at ``root``; returns it and the files it added.

    Raises:
        WorkspaceError: ``root`` exists and is a file, or cannot be written.
    """
    from mqlab import __version__

    if root.exists() and not root.is_dir():
        raise WorkspaceError(f"{root} exists and is not a folder")
    workspace = Workspace(root)
    added: list[Path] = []
    try:
        for entry in entries:
            target = workspace.learner_file(entry)
            if not target.exists():
                _write_atomically(target, entry.starter_file.read_text(encoding="utf-8"))
                added.append(target)
            _write_atomically(workspace.exercise_dir(entry) / "TASK.md", task_text(entry))
        _write_atomically(root / "README.md", readme_text(entries))
        marker = {"mqlab": __version__, "created": time.time()}
        marker_path = root / MARKER_DIR / MARKER_FILE
        if not marker_path.exists():
            _write_atomically(marker_path, json.dumps(marker, indent=2) + "\n")
    except OSError as error:
        raise WorkspaceError(f"cannot write the workspace at {root}: {error.strerror}") from None
    return workspace, added


def find_workspace(start: Path | None = None) -> Workspace:
    """The workspace containing ``start`` (default: the current directory).

    Raises:
        WorkspaceError: none found, with the command that creates one.
    """
    override = os.environ.get("MQLAB_WORKSPACE")
    if override:
        root = Path(override)
        if (root / MARKER_DIR / MARKER_FILE).is_file():
            return Workspace(root)
        raise WorkspaceError(f"MQLAB_WORKSPACE={override} is not an mqlab workspace")
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / MARKER_DIR / MARKER_FILE).is_file():
            return Workspace(folder)
        if (folder / DEFAULT_NAME / MARKER_DIR / MARKER_FILE).is_file():
            return Workspace(folder / DEFAULT_NAME)
    raise WorkspaceError(f"no mqlab workspace here or above {here} (create one: mqlab init [DIR])")


def reset_exercise(workspace: Workspace, entry: ExerciseEntry) -> Path | None:
    """Put the starter file back; the learner's file is kept in the backups folder.

    Returns the backup's path (None when there was no file to keep).
    """
    target = workspace.learner_file(entry)
    backup: Path | None = None
    if target.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = workspace.backups() / f"{entry.id}-{stamp}-{entry.exercise.file}"
        backup.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, backup)
    _write_atomically(target, entry.starter_file.read_text(encoding="utf-8"))
    return backup
