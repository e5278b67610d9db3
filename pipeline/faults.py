"""Fault injection for the reliability tests: off unless its environment variables are set.

The tests kill actors mid-job, slow jobs down so their driver can be killed, and record which
node ran each batch; the hooks below are how. The runner forwards the variables to Ray's
workers through the runtime env.
"""

from __future__ import annotations

import json
import os
import time

__all__ = ["FAULT_ENV", "TRACE_ENV", "inject_fault"]

FAULT_ENV = "OSCAR_FAULT"
"""Test hook, off unless set; comma-separated specs: ``crash:<stage>:<n>:<marker>`` kills the
process on the n-th batch a ``<stage>`` sees in one process, once (the marker file records that
it happened; Ray restarts the actor or the task and retries the batch);
``sleep:<stage>:<seconds>`` slows every batch (so a test can kill a job's driver mid-run).
Stages: encode, verify, write (a write task that wrote files, after them), commit (the driver, between a
window's result commits and its work_units commit)."""

TRACE_ENV = "OSCAR_TRACE"
"""Test hook: a file each encode batch appends ``{"node": ..., "pid": ..., "rows": ...}`` to."""

_batches_seen: dict[str, int] = {}


def inject_fault(stage: str, rows: int = 0) -> None:
    """Carries out :data:`FAULT_ENV` / :data:`TRACE_ENV` for ``stage`` (no-op when unset)."""
    for spec in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        kind, target, *rest = spec.split(":", 3)
        if target == stage:
            _batches_seen[stage] = _batches_seen.get(stage, 0) + 1
            if kind == "sleep":
                time.sleep(float(rest[0]))
            elif kind == "crash" and _batches_seen[stage] >= int(rest[0]) and not os.path.exists(rest[1]):
                with open(rest[1], "w") as f:
                    f.write(f"{stage} crashed in pid {os.getpid()}\n")
                os._exit(17)
    trace = os.environ.get(TRACE_ENV)
    if trace and stage == "encode":
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
        with open(trace, "a") as f:  # one short line per write: safe to append from many processes
            f.write(json.dumps({"node": node, "pid": os.getpid(), "rows": rows}) + "\n")
