"""The rows of the transcoder: what travels between stages, and each output table's rows.

Every other module of ``pipeline`` imports this one and this one imports none of them. Each
output table's rows are built here and nowhere else (:func:`table_rows`), but for the audit's
``bd_rates``, which are computed from an image's metrics rows (:mod:`pipeline.bd_rate`).

In flight, a row is one image (a :class:`ImageRow`): stages add columns and never remove a
failed row. A row that fails a stage gets ``status = "error"`` and the stage, exception type
and message (:func:`failed`), travels on untouched and lands in the errors table.

Out of the job, four result tables (bitstreams, metrics, errors, bd_rates) and ``work_units``,
the record of which units of work (a shard, a file group, an archive's data file) are
committed, so a rerun skips them. Every
in-flight row carries its ``unit_id``; the last row a reader emits for a unit carries
``unit_size`` (how many rows the unit has), so the driver knows when a unit is complete.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import pyarrow as pa

from oscar_model.images import without_reprs

if TYPE_CHECKING:
    from oscar_model import ModelInfo

__all__ = [
    "BITSTREAMS", "METRICS", "ERRORS", "BD_RATES", "TABLES", "WORK_UNITS", "FLAT", "ROW_GROUP_ROWS",
    "UNCOMPRESSED_COLUMNS",
    "Batch", "ImageRow", "ERROR_FIELDS", "rows_of", "batch_of", "failed", "table_rows", "error_row",
]

# ---------------------------------------------------------------------------- output tables
_ARROW_TYPES = {"str": pa.string(), "i16": pa.int16(), "i32": pa.int32(), "i64": pa.int64(), "f64": pa.float64(),
                "bool": pa.bool_(), "blob": pa.large_binary()}


def _schema(columns: str) -> pa.Schema:
    """'name:type ...' -> an Arrow schema (types: str, i16, i32, i64, f64, blob = large_binary,
    since Arrow's binary overflows at 2 GiB a chunk)."""
    return pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in (c.split(":") for c in columns.split())])


BITSTREAMS = _schema(
    "image_id:str source_uri:str width:i32 height:i32 model_id:str rate_level:i16 nominal_bpp:f64 bpp:f64 "
    "n_bytes:i64 bitstream:blob encode_ms:f64 target:str target_met:bool chosen:bool unit_id:str"
)
METRICS = _schema(
    "image_id:str source_uri:str codec:str rate_level:i16 setting:str mode:str reached:bool width:i32 height:i32 "
    "n_bytes:i64 bpp:f64 psnr:f64 ms_ssim:f64 lpips:f64 dists:f64 encode_ms:f64 decode_ms:f64 reference:str unit_id:str"
)
ERRORS = _schema("source_uri:str image_id:str stage:str error_type:str message:str unit_id:str")
BD_RATES = _schema(
    "image_id:str source_uri:str codec:str metric:str bd_rate:f64 overlap_lo:f64 overlap_hi:f64 matched_gap:f64 unit_id:str"
)
"""An audit's per-image comparison with each classical codec (:func:`pipeline.bd_rate.image_bd_rates`
builds the rows from the image's metrics rows, in the write stage): empty for other jobs."""
TABLES: dict[str, pa.Schema] = {"bitstreams": BITSTREAMS, "metrics": METRICS, "errors": ERRORS, "bd_rates": BD_RATES}
WORK_UNITS = _schema("unit_id:str kind:str uri:str images:i64 window:i64 model_id:str run_id:str committed_at:str")
"""One row per committed unit of work; ``images`` counts its in-flight rows (images, or archived
streams when re-decoding); ``window`` is the commit it landed in."""
_FLAT_OWN = _schema("table:str unit_id:str unit_size:i64 image_rows:i32")
FLAT = pa.schema([*_FLAT_OWN, *{f.name: f for t in TABLES.values() for f in t if f.name not in _FLAT_OWN.names}.values()])
"""Every table's rows under one schema, with ``table`` naming theirs: what flows from the
per-block flattening to the write tasks, so that blocks of different actors always
concatenate (an in-flight list column can be a tensor in one block and objects in another).
``image_rows`` is 1 on the first row of each in-flight row (how the driver counts images) and
``unit_size`` rides on that row; an in-flight row with no table rows gets one row with
``table = ""``, which is counted and never written."""
ROW_GROUP_ROWS = 16_384
"""Rows per Parquet row group, written and compacted: a reader decodes a row group at a time, so
this bounds what a streamed read (the report's) holds, whatever the file size."""
UNCOMPRESSED_COLUMNS = {"bitstream"}
"""Already entropy-coded: written without compression or dictionary encoding."""

# ---------------------------------------------------------------------------- rows in flight
Batch = dict[str, np.ndarray]
ERROR_FIELDS = ("error_stage", "error_type", "error_message")


class ImageRow(TypedDict, total=False):
    """One image in flight; each stage's columns, in the order the stages add them.

    a reader (:mod:`pipeline.shards`): unit_id, unit_size (0 but on a unit's last row).
    ``decode_images`` (or ``ArchiveDecodeStage`` when re-decoding an archive):
        image_id, source_uri, width, height, pixels (raw RGB bytes), status ("ok" / "error"),
        reference (what metrics are measured against), error_stage, error_type, error_message;
        an archive decode adds from_level and archive_decode_ms.
    ``EncodeStage``: rate_levels, bitstreams, encode_ms (lists, one entry per rate), refine_steps.
    ``VerifyStage``: psnr, ms_ssim, lpips, dists, decode_ms (lists, one per rate); drops pixels
        unless a later stage needs them.
    ``ClassicCodecStage``: classic_results (one JSON object per codec and level); drops pixels.
    """

    image_id: str
    source_uri: str
    width: int
    height: int
    pixels: bytes
    status: str
    reference: str
    error_stage: str
    error_type: str
    error_message: str
    unit_id: str
    unit_size: int
    from_level: int
    archive_decode_ms: float
    rate_levels: list[int]
    bitstreams: list[bytes]
    encode_ms: list[float]
    refine_steps: int
    psnr: list[float]
    ms_ssim: list[float]
    lpips: list[float | None]
    dists: list[float | None]
    decode_ms: list[float]
    classic_results: list[str]


def rows_of(batch: Batch) -> list[dict[str, Any]]:
    n = len(next(iter(batch.values()))) if batch else 0
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def batch_of(rows: list[dict[str, Any]], columns: list[str] | None = None) -> Batch:
    """Rows -> a numpy batch (``columns``: default the first row's). Error columns hold ""
    (never None) on ok rows.

    Why: Ray types an all-None column of one block as null or float, and then cannot
    concatenate it with another block whose same column holds strings (an actor's bundle of
    an all-ok block and a block with an error row failed with "string vs float").
    """
    columns = list(rows[0]) if columns is None and rows else columns or []
    out: Batch = {}
    for c in columns:
        values = [r.get(c) for r in rows]
        if c in ERROR_FIELDS:
            values = ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        out[c] = arr
    return out


def failed(row: dict[str, Any], stage: str, exc: BaseException) -> dict[str, Any]:
    """``row`` marked as failed at ``stage``; object reprs (memory addresses) are taken out of
    the message so that equal errors group together in the errors table."""
    message = without_reprs(exc)[:2000]
    return {**row, "status": "error", "error_stage": stage, "error_type": type(exc).__name__, "error_message": message}


# ---------------------------------------------------------------------------- output rows
def _as_py(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def _text(v: Any) -> str | None:
    """A text cell: None for None or NaN. Why: Ray turns a block's all-None column (the image_id
    of error rows for files that were never read) into a float column of NaN."""
    v = _as_py(v)
    return None if v is None else str(v)


def _error_row(r: dict[str, Any]) -> dict[str, Any]:
    return {"source_uri": str(r["source_uri"]), "image_id": _text(r.get("image_id")), "stage": r.get("error_stage") or None,
            "error_type": r.get("error_type") or None, "message": r.get("error_message") or None,
            "unit_id": _unit(r)}


def _unit(r: dict[str, Any]) -> str | None:
    return _text(r.get("unit_id"))


def _verified(r: dict[str, Any], j: int) -> bool:
    return "psnr" in r and len(r["psnr"]) > j


MEASURED = ("n_bytes", "bpp", "psnr", "ms_ssim", "lpips", "dists", "encode_ms", "decode_ms")
"""The metrics table's measured columns: null where a setting did not reach its target."""


def _metrics_row(r: dict[str, Any], codec: str, level: int | None, setting: str, mode: str, reached: bool | None,
                 **values: Any) -> dict[str, Any]:
    """A metrics row; ``values`` fills the measured columns (None where not measured, and all
    None where the setting did not reach its target: an ``AVG()`` must not mix them in)."""
    row = {"image_id": _text(r["image_id"]), "source_uri": str(r["source_uri"]), "codec": codec,
           "rate_level": None if level is None else int(level), "setting": setting, "mode": mode, "reached": reached,
           "width": int(r["width"]), "height": int(r["height"])}
    for name in MEASURED:
        row[name] = _as_py(values.get(name)) if reached is not False else None
    row["reference"] = values.get("reference", "source")
    row["unit_id"] = _unit(r)
    return row


def _target_columns(r: dict[str, Any], level: int) -> dict[str, Any]:
    """A bitstream row's target columns (null when archived without a target)."""
    if not r.get("target"):
        return {"target": None, "target_met": None, "chosen": None}
    return {"target": str(r["target"]), "target_met": bool(r["target_met"]), "chosen": level == int(r["chosen_level"])}


def _target_metrics(r: dict[str, Any], codec: str) -> list[dict[str, Any]]:
    """One metrics row per level of an image archived at a target (:mod:`pipeline.target`): its
    size always, its metrics where the search decoded it; mode ``target`` for the kept level."""
    w, h = int(r["width"]), int(r["height"])
    out = []
    for p in json.loads(r["target_probes"]):
        chosen = p["level"] == int(r["chosen_level"])
        out.append(_metrics_row(r, codec, p["level"], f"level {p['level']}, target {r['target']}",
                                "target" if chosen else "probe", None, bpp=8 * p["n_bytes"] / (w * h),
                                **{k: p.get(k) for k in MEASURED if k != "bpp"}))
    return out


def table_rows(rows: list[dict[str, Any]], model: ModelInfo) -> dict[str, list[dict]]:
    """Rows in flight (one per image, list columns per rate) -> rows of the three tables."""
    out: dict[str, list[dict]] = {"bitstreams": [], "metrics": [], "errors": []}
    nominal = model.nominal_bpp
    for r in rows:
        if r.get("status") != "ok":
            out["errors"].append(_error_row(r))
            continue
        w, h = int(r["width"]), int(r["height"])
        refined = int(_as_py(r.get("refine_steps")) or 0)
        effort = f", refine {refined}" if refined else ""  # so refined rows never pass for greedy ones
        levels = r.get("rate_levels", [])
        for j, level in enumerate(levels):
            stream = bytes(r["bitstreams"][j])
            bpp = 8 * len(stream) / (w * h)
            out["bitstreams"].append({
                "image_id": _text(r["image_id"]), "source_uri": str(r["source_uri"]), "width": w, "height": h,
                "model_id": model.model_id, "rate_level": int(level), "nominal_bpp": nominal[int(level)], "bpp": bpp,
                "n_bytes": len(stream), "bitstream": stream, "encode_ms": _as_py(r["encode_ms"][j]),
                **_target_columns(r, int(level)), "unit_id": _unit(r),
            })
            if _verified(r, j) and not r.get("target"):
                out["metrics"].append(_metrics_row(
                    r, model.name, level, f"level {int(level)}{effort}", "sweep", True, n_bytes=len(stream), bpp=bpp,
                    psnr=r["psnr"][j], ms_ssim=r["ms_ssim"][j], lpips=r["lpips"][j],
                    dists=r["dists"][j] if "dists" in r else None, encode_ms=r["encode_ms"][j],
                    decode_ms=r["decode_ms"][j], reference=r.get("reference") or "source",
                ))
        if r.get("target"):
            out["metrics"].extend(_target_metrics(r, model.name))
        for text in r.get("classic_results", []):
            b = json.loads(text)
            setting = b["setting"] + ("" if b["reached"] else f" (cannot reach {b['target_bpp']:.4f} bpp)")
            out["metrics"].append(_metrics_row(r, b["codec"], b["rate_level"], setting, b["mode"], b["reached"],
                                               **{k: b.get(k) for k in MEASURED}))
        if r.get("archive_decode_ms") is not None and len(levels) == 0:  # re-decoded, not transcoded
            out["metrics"].append(_metrics_row(
                r, model.name, r["from_level"], "redecode", "redecode", None, decode_ms=r["archive_decode_ms"],
                reference="none",
            ))
    return out


def error_row(source_uri: str, unit_id: str, stage: str, error_type: str, message: str, unit_size: int = 0) -> dict[str, Any]:
    """An in-flight error row for input that never became an image (a missing object, a broken
    shard, a unit whose rows never came back)."""
    return {"source_uri": source_uri, "image_id": None, "unit_id": unit_id, "unit_size": unit_size, "status": "error",
            "error_stage": stage, "error_type": error_type, "error_message": message[:2000]}
