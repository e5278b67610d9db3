"""An archive written at a quality target, summed up from its committed tables (the job's summary
line and the audit report's histogram both read it)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..batch import column
from ..storage import StorageOptions
from ..tables.scan import scan_delta

__all__ = ["target_summary"]


def target_summary(output_uri: str, storage: StorageOptions | None) -> dict[str, Any]:
    """The archive's target figures, streamed from its committed tables (a few numbers per level
    in memory, however many images): the target, the share meeting it, the levels kept (all, and
    where met), the bytes spent, and the bytes of the cheapest single level that meets it on at
    least the same share of images. The job's summary and the report's histogram both read it."""
    images = met = spent = decodes = 0
    target = None
    met_levels: dict[int, int] = {}
    chosen: dict[int, int] = {}
    level_bytes: dict[int, int] = {}
    kept = pc.field("chosen") == True  # noqa: E712 - an Arrow expression, not a Python comparison
    for b in scan_delta(output_uri, "bitstreams", storage, columns=["rate_level", "n_bytes", "chosen", "target_met", "target"],
                        where=kept):
        if not b.num_rows:
            continue
        target = target or pc.min(b.column("target")).as_py()
        met_flags = pc.cast(pc.fill_null(b.column("target_met"), False), pa.int64())
        per_level = pa.table({"rate_level": b.column("rate_level"), "n_bytes": b.column("n_bytes"), "met": met_flags}) \
            .group_by("rate_level").aggregate([("n_bytes", "sum"), ("n_bytes", "count"), ("met", "sum")])
        for level, n_bytes, n, n_met in zip(*(column(per_level, c) for c in
                                              ("rate_level", "n_bytes_sum", "n_bytes_count", "met_sum"))):
            images, spent, met = images + n, spent + n_bytes, met + n_met
            chosen[level] = chosen.get(level, 0) + n
            if n_met:
                met_levels[level] = met_levels.get(level, 0) + n_met
    searched = pc.field("mode").isin(["target", "probe"])
    for b in scan_delta(output_uri, "metrics", storage, columns=["rate_level", "n_bytes", "mode", "decode_ms"], where=searched):
        decodes += b.num_rows - b.column("decode_ms").null_count
        per_level = pa.table({"rate_level": b.column("rate_level"), "n_bytes": b.column("n_bytes")}).group_by(
            "rate_level").aggregate([("n_bytes", "sum")])
        for level, n_bytes in zip(column(per_level, "rate_level"), column(per_level, "n_bytes_sum")):
            level_bytes[level] = level_bytes.get(level, 0) + n_bytes
    share = met / images if images else 0.0
    fixed = None
    for level in sorted(level_bytes):  # images meeting at a fixed level: those whose cheapest is at or below it
        if images and sum(n for lv, n in met_levels.items() if lv <= level) / images >= share:
            fixed = {"level": level, "bytes": level_bytes[level]}
            break
    return {"target": target, "images": images, "met": met, "share_met": round(share, 4), "bytes": spent,
            "decodes_per_image": round(decodes / images, 3) if images else None,
            "chosen_levels": {str(k): v for k, v in sorted(chosen.items())},
            "met_levels": {str(k): v for k, v in sorted(met_levels.items())},
            "fixed_level": fixed, "saving": round(1 - spent / fixed["bytes"], 4) if fixed and fixed["bytes"] else None}
