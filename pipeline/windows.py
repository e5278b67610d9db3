"""The driver's commit windows: which written files and which work units may be committed now.

A write task's receipt names the files it wrote and the rows of each unit they hold. A unit is
complete once the rows of all receipts add up to its size. Rows of one unit can land in
several files, and one file can hold rows of several units, so a receipt is committed only
together with every unit it touches, and a unit only with every receipt that holds its rows:
the receipts and units linked to an incomplete unit wait for the next window. Otherwise a
crash after the commit would leave part of a unit visible and the rerun would write it again.

Memory is what is in flight plus one window: nothing here grows with the corpus.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CommitWindows", "Tally"]


@dataclass
class Tally:
    """The run's summary, added up from receipts as they arrive (never a row per image)."""

    ok: int = 0
    failed: int = 0
    bytes: int = 0
    bpp: dict[int, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0]))

    def add(self, receipt: dict[str, Any]) -> None:
        self.ok += receipt["ok"]
        self.failed += receipt["failed"]
        self.bytes += receipt["bytes"]
        for level, (total, n) in receipt["bpp"].items():
            self.bpp[int(level)][0] += total
            self.bpp[int(level)][1] += n

    def mean_bpp(self) -> dict[int, float]:
        return {lvl: round(t / n, 5) for lvl, (t, n) in sorted(self.bpp.items()) if n}


@dataclass
class CommitWindows:
    """Receipts and units in flight, and when the open window is due.

    ``every_units``: commit once this many units are complete; ``every_s``: or once the window
    has been open this long with anything complete.
    """

    every_units: int = 64
    every_s: float = 600.0
    receipts: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sizes: dict[str, int] = field(default_factory=dict)
    opened: float = field(default_factory=time.monotonic)

    def add(self, receipt: dict[str, Any]) -> None:
        self.receipts.append(receipt)
        for unit, n in receipt["seen"].items():
            self.seen[unit] += n
        self.sizes.update(receipt["sizes"])

    def complete(self, unit: str) -> bool:
        return unit in self.sizes and self.seen[unit] >= self.sizes[unit]

    def complete_count(self) -> int:
        return sum(1 for u in self.seen if self.complete(u))

    def due(self) -> bool:
        done = self.complete_count()
        return done >= self.every_units or (done > 0 and time.monotonic() - self.opened >= self.every_s)

    def incomplete(self) -> set[str]:
        return {u for u in self.seen if not self.complete(u)}

    def take(self) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
        """Removes and returns what can commit now: files per table, and {unit: rows} of its units."""
        blocked = self.incomplete()
        held: list[bool] = [False] * len(self.receipts)
        changed = True
        while changed:  # a receipt touching a blocked unit blocks all of its units, and so on
            changed = False
            for i, r in enumerate(self.receipts):
                if not held[i] and any(u in blocked for u in r["seen"]):
                    held[i] = True
                    new = set(r["seen"]) - blocked
                    if new:
                        blocked |= new
                        changed = True
        files: dict[str, list[dict[str, Any]]] = defaultdict(list)
        units: dict[str, int] = {}
        keep = []
        for r, h in zip(self.receipts, held):
            if h:
                keep.append(r)
                continue
            for f in r["files"]:
                files[f["table"]].append(f)
            for u in r["seen"]:
                units[u] = self.seen[u]
        self.receipts = keep
        for u in units:
            self.seen.pop(u, None)
            self.sizes.pop(u, None)
        self.opened = time.monotonic()
        return dict(files), units
