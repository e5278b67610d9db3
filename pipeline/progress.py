"""Per-image progress: a counter actor the flatten step bumps for every block of images, which
a driver thread reads twice a second into the job's one progress bar.

Why not the receipts: a receipt comes back per write task, thousands of rows apart, so a small
job's bar sat at 0 and then jumped to the end.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["ProgressCounter", "bump", "follow"]


class ProgressCounter:
    """Ray actor (0 CPUs): images seen by the flatten step."""

    def __init__(self) -> None:
        self.images = 0

    def add(self, n: int) -> None:
        self.images += n

    def value(self) -> int:
        return self.images


def bump(counter: Any, n: int) -> None:
    """Fire and forget: a lost update only slows the bar, never the job."""
    if counter is not None and n:
        counter.add.remote(n)


def follow(counter: Any, bar, stop: threading.Event, every_s: float = 0.5) -> threading.Thread:
    """A daemon thread moving ``bar`` to the counter's value until ``stop`` is set."""
    import ray

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                seen = ray.get(counter.value.remote(), timeout=5)
            except Exception:  # the bar is a convenience: never fail the job over it
                continue
            if seen > bar.n:
                bar.update(seen - bar.n)

    thread = threading.Thread(target=loop, name="oscar-progress", daemon=True)
    thread.start()
    return thread
