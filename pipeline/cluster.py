"""The Ray cluster a job runs on: joining or starting it, checking it can hold the plan, and
keeping its logs to what a user needs.

Why apart from the runner: these are Ray's terms (addresses, CPUs, loggers), not the plan's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from .config import ActorConfig
from .faults import FAULT_ENV, TRACE_ENV

__all__ = ["init_ray", "check_reachable", "check_actor_budget", "handled_actor_deaths_quiet", "LIGHT_TASK_CPUS",
           "return_freed_memory"]

LIGHT_TASK_CPUS = 0.5
"""CPUs the actor pools must leave free for the read and write tasks."""


def init_ray(address: str | None = None, verbose: bool = False, num_cpus: int | None = None) -> None:
    """Joins ``address`` (default $RAY_ADDRESS) when given, else starts a fresh local Ray.

    Never a plain ``ray.init()``: that joins whatever cluster a ``ray start`` left behind, and a
    dead one was retried for 13 minutes. A remote address is checked with a TCP connect first.
    """
    import ray

    if ray.is_initialized():
        return
    # The test hooks (OSCAR_FAULT, OSCAR_TRACE) reach the workers through the runtime env.
    env = {k: v for k, v in os.environ.items() if k in (FAULT_ENV, TRACE_ENV)}
    runtime_env = {"env_vars": env} if env else None
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    level = logging.INFO if verbose else logging.WARNING  # Ray's own INFO lines only with --verbose
    if address == "local":
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=verbose,
                 runtime_env=runtime_env, logging_level=level)
    else:
        check_reachable(address)
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=verbose, logging_level=level)
    import ray.data  # configures its logger on import: set the level after that

    logging.getLogger("ray.data").setLevel(level)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose  # one bar, this job's, unless --verbose
    ctx.enable_operator_progress_bars = verbose
    if not verbose:
        logging.getLogger("ray.data._internal.issue_detection.issue_detector_manager").addFilter(_MemoryWarningOnce())


def return_freed_memory() -> None:
    """Hands the heap pages the driver has freed back to the OS (glibc's ``malloc_trim``; a no-op
    elsewhere). The runner calls it after each window commit.

    Why: the driver's heap is shared by Ray's gRPC threads, Ray Data's executor and delta-rs,
    whose short-lived buffers leave free pages scattered through glibc's arenas; glibc returns
    only the top of an arena by itself. Over a 10,000-image archive the driver's anonymous memory
    grew 10 MB with this and 18 MB without; its Python objects did not grow (docs/operations.md).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
        try:
            _MALLOC_TRIM = ctypes.CDLL(name).malloc_trim if name else False
        except (OSError, AttributeError):  # musl and others have no malloc_trim
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


class _MemoryWarningOnce(logging.Filter):
    """Ray Data repeats its high-memory warning every 30 s, in terms of its own API (``memory=``):
    pass the first, once, with what to do in this tool's terms, and drop the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "To disable issue detection" in text:
            return False
        if "of memory per worker" not in text:
            return True
        if self.shown:
            return False
        self.shown = True
        first = " ".join(text.strip().split("\n\n")[0].split())
        record.msg, record.args = (f"{first} Each actor holds a model and a batch of images: if a node runs short "
                                   "of memory, lower --batch-size or --actors (shown once; --verbose shows Ray's own "
                                   "warnings)"), ()
        return True


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raises ConnectionError, in one line, when ``address``'s host:port does not answer."""
    import socket

    if address in ("auto",):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=timeout_s):
            return
    except (OSError, ValueError) as e:
        raise ConnectionError(
            f"cannot reach the Ray cluster at {address} ({e}): start it, fix RAY_ADDRESS or --ray-address, "
            "or pass --ray-address local to run on this machine"
        ) from None


def check_actor_budget(pools: list[ActorConfig]) -> None:
    """Refuses a plan whose actor pools leave no CPU for the read and write tasks.

    Why: Ray Data reserves each pool's CPUs for the whole run; if nothing is left, the read
    task is never scheduled and the job hangs silently instead of failing.
    """
    import ray

    total = float(ray.cluster_resources().get("CPU", 0))
    held = sum(p.max_actors * p.num_cpus for p in pools)
    if held > total - LIGHT_TASK_CPUS:
        raise ValueError(
            f"actor pools would hold {held:g} of the cluster's {total:g} CPUs; leave at least {LIGHT_TASK_CPUS} "
            f"for reading and writing: lower --actors or --actor-cpus (fractional CPUs are fine)"
        )


_RAY_DATA_ERROR_LOGGERS = ("ray.data.exceptions", "ray.data._internal.execution.streaming_executor_state")
"""Where Ray Data logs, with full tracebacks, the dataset a dead actor ended."""


@contextlib.contextmanager
def handled_actor_deaths_quiet() -> Iterator[None]:
    """Within the block, Ray Data's error records about a dead actor are dropped: the runner
    takes the run up again and says so in one line of its own."""
    quiet = _HandledCrashes()
    for name in _RAY_DATA_ERROR_LOGGERS:
        logging.getLogger(name).addFilter(quiet)
    try:
        yield
    finally:
        for name in _RAY_DATA_ERROR_LOGGERS:
            logging.getLogger(name).removeFilter(quiet)


class _HandledCrashes(logging.Filter):
    """Drops Ray Data's error records about a dead actor: the runner takes the run up again and
    says so in one line of its own. Every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        from ray.exceptions import RayActorError

        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return not isinstance(exc, RayActorError)
