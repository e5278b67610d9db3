"""The output as Delta Lake tables: created, committed in windows, read back, healed, guarded.

Layout under the output URI (every folder a Delta table: Parquet files + ``_delta_log/``)::

    bitstreams/  metrics/  errors/   the results (schemas: :mod:`pipeline.tables.schema`)
    bd_rates/                        an audit's per-image BD-rates (empty for other jobs)
    work_units/                      one row per committed work unit: the resume record
    _lease.json                      which run is writing here (refuses a second writer)
    run_manifest.json

Workers write data files straight into the table folders; they are invisible to every reader
until the driver commits them (:meth:`DeltaOutput.commit_window`). A window commits the
result tables first, then ``work_units`` last (always, even with no unit complete: that commit
is the window's record). A unit is done exactly when its row is in ``work_units``. Result rows
of units not done yet (partial units, a torn window's units) may be committed; each data
commit names them in its info, and the next run deletes their rows before it redoes them
(:meth:`DeltaOutput.heal`), so a rerun never duplicates. Files of a window that never
committed stay invisible and ``python -m jobs.maintain`` deletes them (vacuum). Tables that
grow with the corpus are read on the driver with :mod:`pipeline.tables.scan`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pyarrow as pa

from ..batch import column
from ..faults import inject_fault
from ..storage import StorageOptions, is_file, read_json, resolve, s3_settings, write_json
from .schema import ALL_TABLES, TABLES, WORK_UNITS

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = ["DeltaOutput", "OutputBusy", "delta_storage_options", "read_delta", "table_uri", "LEASE_SECONDS"]

LEASE_SECONDS = 300
"""A lease not renewed for this long belongs to a dead driver (on another host: on this host a
dead pid frees it at once)."""


class OutputBusy(RuntimeError):
    """Another run holds this output's lease."""


def table_uri(output_uri: str, table: str) -> str:
    return f"{output_uri.rstrip('/')}/{table}"


def delta_storage_options(uri: str, storage: StorageOptions | None) -> dict[str, str] | None:
    """delta-rs's options for ``uri``: the same endpoint and keys as pyarrow's (storage.s3_settings)."""
    if urlparse(uri).scheme not in ("s3", "s3a"):
        return None
    s3 = s3_settings(storage or StorageOptions())
    opts = {"AWS_REGION": s3["region"]}
    if s3.get("access_key"):
        opts.update(AWS_ACCESS_KEY_ID=s3["access_key"], AWS_SECRET_ACCESS_KEY=s3["secret_key"])
    if s3.get("endpoint"):
        opts["AWS_ENDPOINT_URL"] = s3["endpoint"]
        opts["AWS_ALLOW_HTTP"] = "true" if s3["endpoint"].startswith("http://") else "false"
    # Commits are serialised by the lease (one writer per output), so delta-rs's own S3 lock is
    # not needed; S3 conditional writes (If-None-Match) still refuse a second commit of a version.
    opts["conditional_put"] = "etag"
    return opts


def read_delta(output_uri: str, table: str, storage: StorageOptions | None = None, version: int | None = None,
               columns: list[str] | None = None, filters: list[tuple[str, str, Any]] | None = None) -> pa.Table:
    """A committed table (at ``version``, default the latest), its rows where every ``filters``
    term holds (``[("image_id", "in", [...])]``: only the files that can hold them are read); an
    absent table reads as empty."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = table_uri(output_uri, table)
    schema = ALL_TABLES[table]
    try:
        dt = DeltaTable(uri, version=version, storage_options=delta_storage_options(uri, storage))
    except TableNotFoundError:
        return schema.empty_table().select(columns or schema.names)
    return dt.to_pyarrow_table(columns=columns, filters=filters)


@dataclass
class DeltaOutput:
    """The driver's handle on one output: its tables, its lease and its commit record."""

    output_uri: str
    storage: StorageOptions = field(default_factory=StorageOptions)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    next_window: int = 0
    _lease_renewed: float = 0.0
    _open: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ tables
    def _uri(self, table: str) -> str:
        return table_uri(self.output_uri, table)

    def _options(self, table: str) -> dict[str, str] | None:
        return delta_storage_options(self._uri(table), self.storage)

    def table(self, name: str) -> DeltaTable:
        """The open table, kept: each commit updates it in place, so a window does not re-read the log."""
        from deltalake import DeltaTable

        if name not in self._open:
            self._open[name] = DeltaTable(self._uri(name), storage_options=self._options(name))
        return self._open[name]

    def create_tables(self) -> None:
        """Creates any missing table (an empty commit 0 with its schema), and adds to an existing
        one the columns a later version brought (one metadata commit; older rows read them as null),
        so an output written before ``mode``/``reached`` or the target columns can be resumed."""
        from deltalake import DeltaTable, Schema

        for name, schema in ALL_TABLES.items():
            DeltaTable.create(self._uri(name), schema=schema, mode="ignore", storage_options=self._options(name))
            have = {f.name for f in self.table(name).schema().fields}
            missing = [f for f in schema if f.name not in have]
            if missing:
                self.table(name).alter.add_columns(Schema.from_arrow(pa.schema(missing)).fields)

    def exists(self) -> bool:
        """Whether ``work_units`` has a log (one request; delta-rs's is_deltatable hung on moto's listing)."""
        from pyarrow import fs as pafs

        filesystem, path = resolve(self._uri("work_units"), self.storage)
        return filesystem.get_file_info(f"{path}/_delta_log").type == pafs.FileType.Directory

    # ------------------------------------------------------------------ the commit record
    def done_and_models(self) -> tuple[set[str], set[str]]:
        """(unit ids already committed, model ids they were written by); also sets the next window.

        Reads ``work_units`` at its latest version: requests grow with its commits, not with images.
        """
        units = self.table("work_units").to_pyarrow_table(columns=["unit_id", "model_id"])  # the table already open
        self.next_window = self.last_window() + 1
        return set(column(units, "unit_id")), set(column(units, "model_id"))

    def last_window(self) -> int:
        """The newest window ``work_units`` records in its commit info (-1: none yet)."""
        dt = self.table("work_units")
        for info in self.recent_commits("work_units", dt.version(), 20):
            if "oscar.window" in info:
                return int(info["oscar.window"])
        return -1

    def heal(self, done: set[str] | None = None) -> int:
        """Deletes the rows of every unit that has committed rows but is not done; returns how many.

        ``done``: the committed units, when the caller has just read them (:meth:`done_and_models`,
        which also sets the next window); else they are read here.

        Those are the partial units of the last committed window (each data commit carries the
        cumulative set) and the units of a torn window (results committed, ``work_units`` not).
        Deleting rows of a unit that is not done is always safe: the rerun redoes it whole.
        """
        if not self.exists():
            return 0
        if done is None:
            done, _ = self.done_and_models()
        suspects: set[str] = set()
        for name in TABLES:
            for info in self.recent_commits(name, self.table(name).version(), 20):
                if "oscar.window" not in info:
                    continue  # a heal, a compaction, the table's creation
                suspects |= set(info.get("oscar.partial", []))
                if int(info["oscar.window"]) < self.next_window:
                    break  # the newest window that completed: its partial set is what remains
                suspects |= set(info.get("oscar.units", []))  # a torn window's units
        suspects -= done
        deleted = 0
        if suspects:
            quoted = ", ".join("'" + u.replace("'", "''") + "'" for u in sorted(suspects))
            for name in TABLES:
                dt = self.table(name)
                metrics = dt.delete(f"unit_id IN ({quoted})", commit_properties=_props({"oscar.healed": sorted(suspects)}))
                deleted += int(metrics.get("num_deleted_rows", 0))
        return deleted

    def recent_commits(self, name: str, version: int, n: int = 4) -> list[dict[str, Any]]:
        """The commitInfo of ``name``'s newest ``n`` versions, read from ``_delta_log/<version>.json``.

        Why not ``DeltaTable.history``: on moto's S3 its request never reached the server and
        timed out after 180 s; a log file is a documented format and one GET.
        """
        filesystem, path = resolve(self._uri(name), self.storage)
        out = []
        for v in range(version, max(-1, version - n), -1):
            with filesystem.open_input_stream(f"{path}/_delta_log/{v:020d}.json") as f:
                for line in f.read().decode().splitlines():
                    action = json.loads(line)
                    if "commitInfo" in action:
                        out.append({**action["commitInfo"], "version": v})
        return out

    def commit_window(self, files: dict[str, list[dict[str, Any]]], units: list[dict[str, Any]], model_id: str,
                      touched: set[str] | None = None, partial: set[str] | None = None) -> int:
        """One window: each result table's new files, then ``work_units`` (the commit that counts).

        ``touched``: the units with rows in these files; ``partial``: every unit with committed
        rows that is not complete yet, after this window (both go into the commit info).
        """
        from deltalake.transaction import AddAction

        window = self.next_window
        meta = {"oscar.window": window, "oscar.run": self.run_id, "oscar.units": sorted(touched or ()),
                "oscar.partial": sorted(partial or ())}
        for name in TABLES:
            if files.get(name):
                actions = [AddAction(path=f["path"], size=f["size"], partition_values={}, data_change=True,
                                     modification_time=f["mtime_ms"], stats=f["stats"]) for f in files[name]]
                dt = self.table(name)
                dt.create_write_transaction(actions, mode="append", schema=TABLES[name], commit_properties=_props(meta))
                dt.update_incremental()  # the transaction does not move the object's own version
        inject_fault("commit")  # test hook: a driver dying here leaves a torn window
        self._commit_units(units, model_id, window)
        self.next_window += 1
        self.renew_lease()
        return window

    def _commit_units(self, units: list[dict[str, Any]], model_id: str, window: int) -> None:
        """The window's record: its done units' rows (or none), with the window number in its info."""
        from deltalake import write_deltalake

        props = _props({"oscar.window": window, "oscar.run": self.run_id})
        dt = self.table("work_units")
        if units:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            rows = [{**u, "window": window, "model_id": model_id, "run_id": self.run_id, "committed_at": stamp} for u in units]
            write_deltalake(dt, pa.Table.from_pylist(rows, schema=WORK_UNITS), mode="append", commit_properties=props)
        else:
            dt.create_write_transaction([], mode="append", schema=WORK_UNITS, commit_properties=props)
            dt.update_incremental()

    # ------------------------------------------------------------------ one writer at a time
    def _lease_uri(self) -> str:
        return f"{self.output_uri.rstrip('/')}/_lease.json"

    def acquire_lease(self) -> None:
        """Refuses to start while another live run writes here; else takes the lease."""
        if is_file(self._lease_uri(), self.storage):
            held = read_json(self._lease_uri(), self.storage)
            age = time.time() - float(held.get("renewed", 0))
            if held.get("run_id") != self.run_id and age < LEASE_SECONDS and _alive(held):
                raise OutputBusy(
                    f"{self.output_uri} is being written by run {held.get('run_id')} (host {held.get('host')}, pid "
                    f"{held.get('pid')}, renewed {age:.0f} s ago); one writer per output. If that run is dead, "
                    f"retry after {LEASE_SECONDS - age:.0f} s or delete {self._lease_uri()}"
                )
        self.renew_lease(force=True)

    def renew_lease(self, force: bool = False) -> None:
        if force or time.time() - self._lease_renewed > 30:
            self._lease_renewed = time.time()
            payload = {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(), "renewed": time.time()}
            write_json(self.output_uri, "_lease.json", payload, self.storage)

    def release_lease(self) -> None:
        from ..storage import delete_file

        delete_file(self._lease_uri(), self.storage)


def _props(meta: dict[str, Any]):
    from deltalake import CommitProperties

    return CommitProperties(custom_metadata=meta)


def _alive(lease: dict[str, Any]) -> bool:
    """False only when the lease's driver ran on this host and its pid is gone."""
    if lease.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(lease.get("pid", -1)), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True
