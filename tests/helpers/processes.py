"""Child processes for the multi-process tests, killed with everything they started when they time out.

``subprocess.run(timeout=...)`` kills only the child: under torchrun the ranks it launched are left
behind, waiting at the end-of-run barrier (48 hours, ``ssd_runtime.sharding.WAIT_TIMEOUT``). Seen once
while the sharding tests were written: two orphaned ranks still waiting 38 minutes later.
"""
from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence

__all__ = ["REPO", "run_process_group", "test_env"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/helpers/ -> the checkout


def test_env() -> dict[str, str]:
    """The environment of a child process: one thread each (they share the 2 cores), this checkout first."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


test_env.__test__ = False  # a helper, not a test


def run_process_group(command: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``command`` in its own session; on timeout kill the whole group (the ranks too), then re-raise."""
    proc = subprocess.Popen(list(command), env=env if env is not None else test_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
