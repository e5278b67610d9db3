"""The driver's commit windows: what a window commits, and which units it makes done.

A write task's receipt names the files it wrote and the rows of each unit they hold. Rows of
one unit land in many files and one file holds rows of many units (shards are read side by
side), so waiting for whole units before committing a file would hold every file back until
the job ends. Instead a window commits every file received, marks done the units that are
complete, and carries the set of units that have committed rows but are not complete yet
(``partial``), cumulative, in each commit's info. A run killed with partial units is healed
by the next one, which deletes those units' rows before it redoes them
(:meth:`~pipeline.tables.delta.DeltaOutput.heal`).

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
    """The run's summary, added up from receipts (never a row per image). A unit's counts wait in
    ``pending`` until it is committed (:meth:`settle`): a unit whose rows are deleted and redone
    after a worker died is dropped from it (:meth:`forget`) and counted once, when redone."""

    ok: int = 0
    failed: int = 0
    bytes: int = 0
    bpp: dict[int, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0]))
    quality: dict[int, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0, 0.0, 0]))
    """Per level: PSNR sum and count, MS-SSIM sum and count, over the model's measured streams."""
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def add(self, receipt: dict[str, Any]) -> None:
        for unit, counts in receipt["units"].items():
            self.pending[unit].append(counts)

    def settle(self, units: Any) -> None:
        """Counts the waiting counts of ``units`` (just committed)."""
        for unit in units:
            for counts in self.pending.pop(unit, ()):
                self.ok += counts["ok"]
                self.failed += counts["failed"]
                self.bytes += counts["bytes"]
                for level, (total, n) in counts["bpp"].items():
                    self.bpp[int(level)][0] += total
                    self.bpp[int(level)][1] += n
                for level, sums in counts["quality"].items():
                    for k, v in enumerate(sums):
                        self.quality[int(level)][k] += v

    def forget(self, units: Any) -> None:
        """Drops the waiting counts of ``units`` (their rows are deleted, to be redone)."""
        for unit in units:
            self.pending.pop(unit, None)

    def mean_quality(self) -> dict[int, dict[str, float]]:
        """Per level: mean PSNR and MS-SSIM of the streams measured (levels with none left out)."""
        out = {}
        for level, (psnr, n_psnr, ms_ssim, n_ms_ssim) in sorted(self.quality.items()):
            if n_psnr or n_ms_ssim:
                out[level] = {"psnr": round(psnr / n_psnr, 2) if n_psnr else None,
                              "ms_ssim": round(ms_ssim / n_ms_ssim, 4) if n_ms_ssim else None}
        return out

    def mean_bpp(self) -> dict[int, float]:
        return {lvl: round(t / n, 5) for lvl, (t, n) in sorted(self.bpp.items()) if n}


@dataclass
class CommitWindows:
    """Receipts and units in flight, and when the open window is due.

    ``every_units``: commit once this many units are complete; ``every_s``: or once the window
    has been open this long with any file written (so a killed driver loses at most that long).
    """

    every_units: int = 64
    every_s: float = 600.0
    receipts: list[dict[str, Any]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    sizes: dict[str, int] = field(default_factory=dict)
    rows: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    """Per unit: table rows its blocks announced, table rows received in written files."""
    partial: set[str] = field(default_factory=set)
    opened: float = field(default_factory=time.monotonic)

    def add(self, receipt: dict[str, Any]) -> None:
        self.receipts.append(receipt)
        for unit, n in receipt["seen"].items():
            self.seen[unit] += n
        for unit, (expected, written) in receipt.get("rows", {}).items():
            self.rows[unit][0] += expected
            self.rows[unit][1] += written
        self.sizes.update(receipt["sizes"])

    def complete(self, unit: str) -> bool:
        """Every in-flight row of the unit has come back, and every table row they made is in a
        received file (a write task's batch can split a block, and receipts arrive in any order)."""
        expected, written = self.rows.get(unit, (0, 0))
        return unit in self.sizes and self.seen[unit] >= self.sizes[unit] and written >= expected

    def complete_count(self) -> int:
        return sum(1 for u in self.seen if self.complete(u))

    def due(self) -> bool:
        """``every_units`` units complete, or ``every_s`` passed with anything written."""
        if self.complete_count() >= self.every_units:
            return True
        return bool(self.receipts) and time.monotonic() - self.opened >= self.every_s

    def take(self) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int], set[str], set[str]]:
        """Removes and returns the open window: files per table, {unit: rows} of the units now
        complete, the units with rows in these files, and the cumulative partial set after it."""
        files: dict[str, list[dict[str, Any]]] = defaultdict(list)
        touched: set[str] = set()
        for r in self.receipts:
            for f in r["files"]:
                files[f["table"]].append(f)
            touched |= set(r["seen"])
        self.receipts = []
        units = {u: self.seen[u] for u in list(self.seen) if self.complete(u)}
        for u in units:
            self.seen.pop(u)
            self.sizes.pop(u, None)
            self.rows.pop(u, None)
        self.partial = (self.partial | touched) - set(units)
        self.opened = time.monotonic()
        return dict(files), units, touched, set(self.partial)
