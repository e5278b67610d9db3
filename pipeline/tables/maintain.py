"""Table maintenance (``python -m jobs.maintain``): heal, compact and vacuum an output's tables."""

from __future__ import annotations

from typing import Any

from ..storage import StorageOptions
from .delta import DeltaOutput
from .schema import ALL_TABLES, ROW_GROUP_ROWS

__all__ = ["maintain"]


def maintain(output_uri: str, storage: StorageOptions | None = None, compact: bool = True, target_mb: int = 256,
             retention_hours: float = 168.0) -> dict[str, Any]:
    """Returns what was done, per table: files compacted (removed / added) and files vacuumed.

    Compacted files keep the writer's row groups (:data:`~pipeline.tables.schema.ROW_GROUP_ROWS`), not
    delta-rs's million-row default, so a streamed read of them stays small."""
    from deltalake import WriterProperties

    storage = storage or StorageOptions()
    out = DeltaOutput(output_uri, storage)
    report: dict[str, Any] = {"output": output_uri}
    out.acquire_lease()
    try:
        if not out.exists():
            raise FileNotFoundError(f"{output_uri} holds no Delta tables: is it a job's --output?")
        report["rows_of_unfinished_units_deleted"] = out.heal()
        for name in ALL_TABLES:
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
