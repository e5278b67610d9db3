"""An archive written at a quality target, summed up from its committed tables (the job's summary
line and the audit report's histogram both read it)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..batch import column
from ..stages.target import QualityTarget
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
    per_codec: dict[str, int] = {}
    for b in scan_delta(output_uri, "bitstreams", storage, columns=["rate_level", "n_bytes", "chosen", "target_met", "target",
                                                                   "codec"], where=kept):
        if not b.num_rows:
            continue
        target = target or pc.min(b.column("target")).as_py()
        for codec, n in zip(*(column(pa.table({"codec": b.column("codec")}).group_by("codec").aggregate(
                [("codec", "count")]), c) for c in ("codec", "codec_count"))):
            per_codec[codec] = per_codec.get(codec, 0) + n
        met_flags = pc.cast(pc.fill_null(b.column("target_met"), False), pa.int64())
        per_level = pa.table({"rate_level": b.column("rate_level"), "n_bytes": b.column("n_bytes"), "met": met_flags}) \
            .group_by("rate_level").aggregate([("n_bytes", "sum"), ("n_bytes", "count"), ("met", "sum")])
        for level, n_bytes, n, n_met in zip(*(column(per_level, c) for c in
                                              ("rate_level", "n_bytes_sum", "n_bytes_count", "met_sum"))):
            images, spent, met = images + n, spent + n_bytes, met + n_met
            if level is None:  # a classical codec's file (a mixed archive): counted per codec below
                continue
            chosen[level] = chosen.get(level, 0) + n
            if n_met:
                met_levels[level] = met_levels.get(level, 0) + n_met
    bar = QualityTarget.parse(target) if target else None
    alone: dict[str, dict[str, int]] = {}  # codec -> what it alone spent and met: its finalist rows, summed
    searched = pc.field("mode").isin(["target", "candidate", "probe"])
    columns = ["rate_level", "n_bytes", "mode", "decode_ms", "codec"] + ([bar.metric] if bar else [])
    for b in scan_delta(output_uri, "metrics", storage, columns=columns, where=searched):
        decodes += b.num_rows - b.column("decode_ms").null_count  # the model's levels and classical probes alike
        if bar:
            _add_finalists(alone, b, bar)
        b = b.filter(pc.is_valid(b.column("rate_level")))
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
            "fixed_level": fixed, "saving": round(1 - spent / fixed["bytes"], 4) if fixed and fixed["bytes"] else None,
            **({"codecs": _codec_mix(alone, per_codec, spent, met)} if len(alone) > 1 else {})}


def _add_finalists(alone: dict[str, dict[str, int]], batch: pa.RecordBatch | pa.Table, bar) -> None:
    """Adds a batch's finalist rows (mode ``target`` or ``candidate``: each codec's cheapest setting
    meeting the target per image) to ``alone``: per codec, images, bytes, and images meeting it."""
    finalists = batch.filter(pc.is_in(batch.column("mode"), pa.array(["target", "candidate"])))
    value = finalists.column(bar.metric)
    passed = pc.greater_equal(value, bar.value) if bar.op == ">=" else pc.less_equal(value, bar.value)
    sums = pa.table({"codec": finalists.column("codec"), "n_bytes": pc.fill_null(finalists.column("n_bytes"), 0),
                     "met": pc.cast(pc.fill_null(passed, False), pa.int64())}).group_by("codec").aggregate(
        [("n_bytes", "sum"), ("n_bytes", "count"), ("met", "sum")])
    for codec, n_bytes, n, n_met in zip(*(column(sums, c) for c in ("codec", "n_bytes_sum", "n_bytes_count", "met_sum"))):
        entry = alone.setdefault(codec, {"images": 0, "bytes": 0, "met": 0})
        entry["images"] += n
        entry["bytes"] += n_bytes
        entry["met"] += n_met


def _codec_mix(alone: dict[str, dict[str, int]], kept: dict[str, int], spent: int, met: int) -> dict[str, Any]:
    """A mixed archive (``--codecs``): the images each codec kept, and what each codec alone would
    have cost and met (``alone``) against what the mix spent and met."""
    from ..stages.classic import is_classic

    model = next((c for c in alone if not is_classic(c)), None)
    classical = {c: e for c, e in alone.items() if c != model}
    best = min(classical, key=lambda c: (-classical[c]["met"], classical[c]["bytes"])) if classical else None
    return {"kept": dict(sorted(kept.items())), "alone": alone, "model": model,
            "bytes_vs_model_alone": round(spent / alone[model]["bytes"] - 1, 4) if model and alone[model]["bytes"] else None,
            "best_classical": best,
            "bytes_vs_best_classical": round(spent / classical[best]["bytes"] - 1, 4) if best and classical[best]["bytes"] else None,
            "met_only_thanks_to_the_mix": met - alone[model]["met"] if model else None}
