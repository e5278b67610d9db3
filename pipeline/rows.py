"""The rows of the transcoder: what travels between stages, and each output table's rows.

Every other module of ``pipeline`` imports this one and this one imports none of them. Each
output table's rows are built here and nowhere else (:func:`table_rows`).

In flight, a row is one image (a :class:`ImageRow`): stages add columns and never remove a
failed row. A row that fails a stage gets ``status = "error"`` and the stage, exception type
and message (:func:`failed`), travels on untouched and lands in the errors table.

Out of the job, three tables (schemas below) and one key per unit of work:
``job_key(source_uri)`` for a source image, ``job_key(source_uri, level)`` for an archived
stream being re-decoded. Commit markers record keys, so a rerun skips finished work.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from oscar_model import ModelInfo

__all__ = [
    "BITSTREAMS", "METRICS", "ERRORS", "TABLES", "UNCOMPRESSED_COLUMNS", "SUMMARY_COLUMNS",
    "Batch", "ImageRow", "ERROR_FIELDS", "job_key", "source_of", "rows_of", "batch_of", "failed", "table_rows",
    "missing_rows", "summary_batch",
]

# ---------------------------------------------------------------------------- output tables
_ARROW_TYPES = {"str": pa.string(), "i16": pa.int16(), "i32": pa.int32(), "i64": pa.int64(), "f64": pa.float64(),
                "blob": pa.large_binary()}


def _schema(columns: str) -> pa.Schema:
    """'name:type ...' -> an Arrow schema (types: str, i16, i32, i64, f64, blob = large_binary,
    since Arrow's binary overflows at 2 GiB a chunk)."""
    return pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in (c.split(":") for c in columns.split())])


BITSTREAMS = _schema(
    "image_id:str source_uri:str width:i32 height:i32 model_id:str rate_level:i16 nominal_bpp:f64 bpp:f64 "
    "n_bytes:i64 bitstream:blob encode_ms:f64"
)
METRICS = _schema(
    "image_id:str source_uri:str codec:str rate_level:i16 setting:str width:i32 height:i32 n_bytes:i64 bpp:f64 "
    "psnr:f64 ms_ssim:f64 lpips:f64 dists:f64 encode_ms:f64 decode_ms:f64 reference:str"
)
ERRORS = _schema("source_uri:str image_id:str stage:str error_type:str message:str")
TABLES: dict[str, pa.Schema] = {"bitstreams": BITSTREAMS, "metrics": METRICS, "errors": ERRORS}
UNCOMPRESSED_COLUMNS = {"bitstream"}
"""Already entropy-coded: written without compression or dictionary encoding."""

# ---------------------------------------------------------------------------- rows in flight
Batch = dict[str, np.ndarray]
ERROR_FIELDS = ("error_stage", "error_type", "error_message")


class ImageRow(TypedDict, total=False):
    """One image in flight; each stage's columns, in the order the stages add them.

    ``decode_images`` (or ``ArchiveDecodeStage`` when re-decoding an archive):
        image_id, source_uri, width, height, pixels (raw RGB bytes), status ("ok" / "error"),
        reference (what metrics are measured against), error_stage, error_type, error_message;
        an archive decode adds job_key, from_level and archive_decode_ms.
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
    job_key: str
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


def job_key(source_uri: str, level: int | None = None) -> str:
    """The unit of work a commit marker records: an image, or (re-decoding) one archived level of it."""
    return source_uri if level is None else f"{source_uri}#L{int(level)}"


def source_of(key: str) -> str:
    """The source URI inside a work key (inverse of :func:`job_key`)."""
    uri, sep, level = key.rpartition("#L")
    return uri if sep and level.isdigit() else key


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
    return {**row, "status": "error", "error_stage": stage, "error_type": type(exc).__name__, "error_message": str(exc)[:2000]}


# ---------------------------------------------------------------------------- output rows
def _as_py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def _error_row(r: dict[str, Any]) -> dict[str, Any]:
    return {"source_uri": r["source_uri"], "image_id": r.get("image_id"), "stage": r.get("error_stage") or None,
            "error_type": r.get("error_type") or None, "message": r.get("error_message") or None}


def _verified(r: dict[str, Any], j: int) -> bool:
    return "psnr" in r and len(r["psnr"]) > j


def _metrics_row(r: dict[str, Any], codec: str, level: int, setting: str, **values: Any) -> dict[str, Any]:
    """A metrics row; ``values`` fills the measured columns (None where not measured)."""
    row = {"image_id": r["image_id"], "source_uri": r["source_uri"], "codec": codec, "rate_level": int(level),
           "setting": setting, "width": int(r["width"]), "height": int(r["height"])}
    for name in ("n_bytes", "bpp", "psnr", "ms_ssim", "lpips", "dists", "encode_ms", "decode_ms"):
        row[name] = _as_py(values.get(name))
    row["reference"] = values.get("reference", "source")
    return row


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
                "image_id": r["image_id"], "source_uri": r["source_uri"], "width": w, "height": h,
                "model_id": model.model_id, "rate_level": int(level), "nominal_bpp": nominal[int(level)], "bpp": bpp,
                "n_bytes": len(stream), "bitstream": stream, "encode_ms": _as_py(r["encode_ms"][j]),
            })
            if _verified(r, j):
                out["metrics"].append(_metrics_row(
                    r, model.name, level, f"level {int(level)}{effort}", n_bytes=len(stream), bpp=bpp,
                    psnr=r["psnr"][j], ms_ssim=r["ms_ssim"][j], lpips=r["lpips"][j],
                    dists=r["dists"][j] if "dists" in r else None, encode_ms=r["encode_ms"][j],
                    decode_ms=r["decode_ms"][j], reference=r.get("reference") or "source",
                ))
        for text in r.get("classic_results", []):
            b = json.loads(text)
            setting = b["setting"] + ("" if b["reached"] else f" (cannot reach {b['target_bpp']:.4f} bpp)")
            out["metrics"].append(_metrics_row(
                r, b["codec"], b["rate_level"], setting, **{k: b[k] for k in ("n_bytes", "bpp", "psnr", "ms_ssim",
                                                                             "encode_ms", "decode_ms")},
            ))
        if r.get("archive_decode_ms") is not None and len(levels) == 0:  # re-decoded, not transcoded
            out["metrics"].append(_metrics_row(
                r, model.name, r["from_level"], "redecode", decode_ms=r["archive_decode_ms"], reference="none",
            ))
    return out


def missing_rows(keys: list[str]) -> list[dict[str, Any]]:
    """In-flight error rows for work that never came back from the read (e.g. a manifest naming
    an object that does not exist)."""
    return [{"source_uri": source_of(k), "job_key": k, "image_id": None, "status": "error", "error_stage": "read",
             "error_type": "FileNotFoundError", "error_message": "no such object"} for k in keys]


SUMMARY_COLUMNS = ("job_key", "source_uri", "status", "rate_level", "bpp", "n_bytes")


def summary_batch(rows: list[dict[str, Any]]) -> Batch:
    """What the sink hands back to the driver: one row per stream, per re-decoded image, or per error.

    ``job_key`` says which unit of work each belongs to, so the driver's progress and its
    check that nothing was lost count work, not images.
    """
    out = []
    for r in rows:
        key, uri = str(r.get("job_key") or r["source_uri"]), str(r["source_uri"])
        if r.get("status") != "ok":
            out.append((key, uri, "error", -1, float("nan"), 0))
            continue
        levels = r.get("rate_levels", [])
        for j, level in enumerate(levels):
            n = len(bytes(r["bitstreams"][j]))
            out.append((key, uri, "ok", int(level), 8 * n / (int(r["width"]) * int(r["height"])), n))
        if len(levels) == 0:  # re-decoded, not transcoded
            out.append((key, uri, "ok", int(r.get("from_level", -1)), float("nan"), 0))
    return {c: np.array([o[i] for o in out], dtype=object) for i, c in enumerate(SUMMARY_COLUMNS)}
