"""Table maintenance (``python -m jobs.maintain``): heal, compact, vacuum, or convert the old layout."""

from __future__ import annotations

from typing import Any

from .delta import DeltaOutput
from .legacy import convert_markers
from .rows import ROW_GROUP_ROWS, TABLES
from .storage import StorageOptions

__all__ = ["maintain"]


def maintain(output_uri: str, storage: StorageOptions | None = None, compact: bool = True, target_mb: int = 256,
             retention_hours: float = 168.0, convert: bool = False) -> dict[str, Any]:
    """Returns what was done, per table: files compacted (removed / added) and files vacuumed.

    Compacted files keep the writer's row groups (:data:`~pipeline.rows.ROW_GROUP_ROWS`), not
    delta-rs's million-row default, so a streamed read of them stays small."""
    from deltalake import WriterProperties

    storage = storage or StorageOptions()
    out = DeltaOutput(output_uri, storage)
    report: dict[str, Any] = {"output": output_uri}
    out.acquire_lease()
    try:
        if convert:
            report["converted"] = convert_markers(output_uri, storage)
        if not out.exists():
            raise FileNotFoundError(f"{output_uri} holds no Delta tables (an output of the old layout needs --convert-markers)")
        report["rows_of_unfinished_units_deleted"] = out.heal()
        for name in [*TABLES, "work_units"]:
            dt = out.table(name)
            entry: dict[str, Any] = {"version_before": dt.version()}
            if compact:
                metrics = dt.optimize.compact(target_size=target_mb * 1024 * 1024,
                                              writer_properties=WriterProperties(max_row_group_size=ROW_GROUP_ROWS))
                entry["compacted"] = {"removed": metrics.get("numFilesRemoved", 0), "added": metrics.get("numFilesAdded", 0)}
            entry["vacuumed"] = len(dt.vacuum(retention_hours=int(retention_hours), dry_run=False,
                                              enforce_retention_duration=False, full=True))
            entry["version_after"] = dt.version()
            report[name] = entry
    finally:
        out.release_lease()
    return report
