"""A lab process does not inherit the soft limits of whoever starts it: the grader's child caps
its own memory and CPU, and a broker a check restarts from there must run uncapped."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

STARTER = textwrap.dedent(
    """
    import resource, sys, time
    from pathlib import Path
    from mqlab.lab import process as proc
    from mqlab.lab.spec import HealthCheck, ProcessSpec

    resource.setrlimit(resource.RLIMIT_AS, (1 << 34, resource.getrlimit(resource.RLIMIT_AS)[1]))
    resource.setrlimit(resource.RLIMIT_CPU, (600, resource.getrlimit(resource.RLIMIT_CPU)[1]))
    report = (
        "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0], "
        "resource.getrlimit(resource.RLIMIT_CPU)[0])"
    )
    spec = ProcessSpec(
        name="limits", service="test", argv=(sys.executable, "-c", report),
        health=HealthCheck(kind="tcp", port=1),
    )
    record = proc.start_detached(spec, Path(sys.argv[1]))
    proc._children[record.pid].wait(timeout=30)
    """
)


def test_a_process_started_under_lowered_soft_limits_runs_with_the_hard_ones(
    tmp_path: Path,
) -> None:
    log = tmp_path / "limits.log"
    subprocess.run([sys.executable, "-c", STARTER, str(log)], check=True, timeout=60)
    reported = log.read_text().splitlines()[-1].split()
    hard = [resource.getrlimit(resource.RLIMIT_AS)[1], resource.getrlimit(resource.RLIMIT_CPU)[1]]
    assert [int(value) for value in reported] == hard
