"""The lab's lock: one ``fcntl`` lock per state dir serialises ``mqlab lab`` commands (and
the faults a scenario injects), so two of them never start, stop or break the same server at
once.

The lock file holds the holder's pid and purpose, so whoever waits can say what it waits
for. A process that dies holding it releases it (the kernel drops a dead process's flocks).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from mqlab.lab.errors import LabError

log = logging.getLogger("mqlab.lab")

# Lock depth per lock file within this process, so a Lab call that calls another one (restart
# -> up of toxiproxy proxies) does not deadlock on its own flock.
_held_locks: dict[Path, tuple[int, int]] = {}


@contextlib.contextmanager
def state_dir_lock(state_dir: Path, purpose: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the state dir's lock; wait for another ``mqlab lab`` command to finish. The same
    process may nest it (a ``restart`` that brings Toxiproxy's proxies up again).

    Args:
        state_dir: the lab's state dir (the lock file is ``lab.lock`` in it).
        purpose: shown to whoever waits for this lock ("up", "fault kill").
        timeout: give up after this many seconds (None: wait as long as it takes).

    Raises:
        LabError: ``timeout`` expired.
    """
    lock_path = state_dir / "lab.lock"
    held = _held_locks.get(lock_path)
    if held is not None:
        _held_locks[lock_path] = (held[0], held[1] + 1)
        try:
            yield
        finally:
            descriptor, depth = _held_locks[lock_path]
            _held_locks[lock_path] = (descriptor, depth - 1)
        return
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise LabError(f"cannot use the lab's state dir {state_dir}: {error}") from None
    try:
        _acquire(descriptor, lock_path, purpose, timeout)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()} {purpose}\n".encode(), 0)
        _held_locks[lock_path] = (descriptor, 1)
        try:
            yield
        finally:
            del _held_locks[lock_path]
            os.ftruncate(descriptor, 0)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _acquire(descriptor: int, lock_path: Path, purpose: str, timeout: float | None) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    announced = False
    while True:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        holder = lock_path.read_text().strip() or "unknown"
        if deadline is not None and time.monotonic() >= deadline:
            raise LabError(
                f"another mqlab lab command holds the lab (pid/command: {holder}); "
                f"retry {purpose} when it has finished"
            )
        if not announced:
            log.info("waiting for another mqlab lab command to finish (%s)", holder)
            announced = True
        time.sleep(0.1)
