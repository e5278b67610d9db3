"""Parquet sinks with a commit marker per part, so a rerun resumes without duplicates.

Layout under the output URI::

    bitstreams/part-<id>.parquet   metrics/part-<id>.parquet   errors/part-<id>.parquet
    _committed/part-<id>.json      (written LAST: the source URIs the part holds, row counts, model id)
    run_manifest.json              (config, model id and hash, versions, counts, wall time)

``<id>`` is a hash of the batch's source URIs, so a retried task rewrites the same files.
A part without its marker is an interrupted write: it is deleted on the next run and its
images are processed again. Readers only read committed parts. A rerun with another model is
refused (:func:`committed_model_ids`): resuming would mix two models' results in one table.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from pyarrow import fs as pafs

from .schema import TABLES, UNCOMPRESSED_COLUMNS
from .sources import StorageOptions, resolve

__all__ = [
    "write_tables",
    "committed_parts",
    "committed_uris",
    "committed_model_ids",
    "clean_uncommitted",
    "read_table",
    "write_png",
    "write_json",
]

MARKERS = "_committed"


def _write_parquet(filesystem: pafs.FileSystem, path: str, table: pa.Table) -> None:
    compression = {c: ("none" if c in UNCOMPRESSED_COLUMNS else "zstd") for c in table.column_names}
    use_dict = [c for c in table.column_names if c not in UNCOMPRESSED_COLUMNS]
    with filesystem.open_output_stream(path) as f:
        pq.write_table(table, f, compression=compression, use_dictionary=use_dict)


def write_json(output_uri: str, name: str, payload: dict, storage: StorageOptions | None = None) -> None:
    filesystem, base = resolve(output_uri, storage)
    filesystem.create_dir(base, recursive=True)
    with filesystem.open_output_stream(f"{base}/{name}") as f:
        f.write(json.dumps(payload, indent=1, default=str).encode())


def write_png(images_uri: str, name: str, image: np.ndarray, storage: StorageOptions | None = None) -> None:
    filesystem, base = resolve(images_uri, storage)
    filesystem.create_dir(base, recursive=True)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    with filesystem.open_output_stream(f"{base}/{name}") as f:
        f.write(buf.getvalue())


def _as_py(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def table_rows(
    rows: list[dict[str, Any]], codec_name: str, model_id: str, nominal: dict[int, float], reference: str = "source"
) -> dict[str, list[dict]]:
    """Result rows (one per image, list columns per rate) -> rows of the three tables."""
    out: dict[str, list[dict]] = {"bitstreams": [], "metrics": [], "errors": []}
    for r in rows:
        if r.get("status") != "ok":
            out["errors"].append(
                {"source_uri": r["source_uri"], "image_id": r.get("image_id"), "stage": r.get("error_stage") or None,
                 "error_type": r.get("error_type") or None, "message": r.get("error_message") or None}
            )
            continue
        w, h = int(r["width"]), int(r["height"])
        ref = reference.format(**r) if "{" in reference else reference
        refined = int(_as_py(r.get("refine_steps")) or 0)
        effort = f", refine {refined}" if refined else ""  # so refined rows never pass for greedy ones
        for j, level in enumerate(r.get("rate_levels", [])):
            stream = bytes(r["bitstreams"][j])
            bpp = 8 * len(stream) / (w * h)
            common = {"image_id": r["image_id"], "source_uri": r["source_uri"], "width": w, "height": h,
                      "rate_level": int(level), "n_bytes": len(stream), "bpp": bpp, "encode_ms": _as_py(r["encode_ms"][j])}
            out["bitstreams"].append({**common, "model_id": model_id, "nominal_bpp": nominal[int(level)], "bitstream": stream})
            if "psnr" in r and len(r["psnr"]) > j:
                out["metrics"].append(
                    {**common, "codec": codec_name, "setting": f"level {int(level)}{effort}", "psnr": _as_py(r["psnr"][j]),
                     "ms_ssim": _as_py(r["ms_ssim"][j]), "lpips": _as_py(r["lpips"][j]), "dists": None,
                     "decode_ms": _as_py(r["decode_ms"][j]), "reference": ref}
                )
        for text in r.get("baselines", []):
            b = json.loads(text)
            setting = b["setting"] + ("" if b["reached"] else f" (cannot reach {b['target_bpp']:.4f} bpp)")
            out["metrics"].append(
                {"image_id": r["image_id"], "source_uri": r["source_uri"], "codec": b["codec"], "rate_level": b["rate_level"],
                 "setting": setting, "width": w, "height": h, "n_bytes": b["n_bytes"], "bpp": b["bpp"], "psnr": b["psnr"],
                 "ms_ssim": b["ms_ssim"], "lpips": None, "dists": None, "encode_ms": b["encode_ms"],
                 "decode_ms": b["decode_ms"], "reference": "source"}
            )
        if r.get("archive_decode_ms") is not None and len(r.get("rate_levels", ())) == 0:  # decode only, no transcode
            out["metrics"].append(
                {"image_id": r["image_id"], "source_uri": r["source_uri"], "codec": codec_name,
                 "rate_level": int(r["from_level"]), "setting": "redecode", "width": w, "height": h,
                 "n_bytes": None, "bpp": None, "psnr": None, "ms_ssim": None, "lpips": None, "dists": None,
                 "encode_ms": None, "decode_ms": _as_py(r["archive_decode_ms"]), "reference": "none"}
            )
    return out


def write_tables(
    batch: dict[str, np.ndarray],
    output_uri: str,
    codec_name: str,
    model_id: str,
    nominal_bpp: dict[int, float],
    storage: StorageOptions | None = None,
    reference: str = "source",
) -> dict[str, np.ndarray]:
    """Sink stage: writes this batch's parts and then its marker; returns one summary row per table row."""
    from .stages import rows_of

    rows = rows_of(batch)
    if not rows:
        return {"source_uri": np.array([], dtype=object)}
    uris = sorted(str(r.get("job_key") or r["source_uri"]) for r in rows)
    part = "part-" + hashlib.sha1("\n".join(uris).encode()).hexdigest()[:20]
    tables = table_rows(rows, codec_name, model_id, nominal_bpp, reference)
    filesystem, base = resolve(output_uri, storage)
    for name in ("metrics", "errors", "bitstreams"):  # bitstreams last: the data the marker vouches for
        if tables[name]:
            filesystem.create_dir(f"{base}/{name}", recursive=True)
            table = pa.Table.from_pylist(tables[name], schema=TABLES[name])
            _write_parquet(filesystem, f"{base}/{name}/{part}.parquet", table)
    marker = {"part": part, "source_uris": uris, "rows": {k: len(v) for k, v in tables.items()}, "model_id": model_id}
    filesystem.create_dir(f"{base}/{MARKERS}", recursive=True)
    with filesystem.open_output_stream(f"{base}/{MARKERS}/{part}.json") as f:
        f.write(json.dumps(marker).encode())
    summary = [{"source_uri": b["source_uri"], "status": "ok", "rate_level": b["rate_level"], "bpp": b["bpp"], "n_bytes": b["n_bytes"]}
               for b in tables["bitstreams"]]
    if not tables["bitstreams"]:  # redecode without transcoding: one ok row per decoded image
        summary += [{"source_uri": m["source_uri"], "status": "ok", "rate_level": m["rate_level"], "bpp": float("nan"), "n_bytes": 0}
                    for m in tables["metrics"]]
    summary += [{"source_uri": e["source_uri"], "status": "error", "rate_level": -1, "bpp": float("nan"), "n_bytes": 0}
                for e in tables["errors"]]
    return {k: np.array([s[k] for s in summary], dtype=object) for k in ("source_uri", "status", "rate_level", "bpp", "n_bytes")}


def _markers(output_uri: str, storage: StorageOptions | None) -> list[dict]:
    filesystem, base = resolve(output_uri, storage)
    if filesystem.get_file_info(f"{base}/{MARKERS}").type != pafs.FileType.Directory:
        return []
    out = []
    for info in filesystem.get_file_info(pafs.FileSelector(f"{base}/{MARKERS}")):
        if info.path.endswith(".json"):
            with filesystem.open_input_file(info.path) as f:
                out.append(json.loads(f.read()))
    return out


def committed_parts(output_uri: str, storage: StorageOptions | None = None) -> set[str]:
    return {m["part"] for m in _markers(output_uri, storage)}


def committed_uris(output_uri: str, storage: StorageOptions | None = None) -> set[str]:
    """Source URIs already fully written (ok or error) by an earlier run."""
    return {u for m in _markers(output_uri, storage) for u in m["source_uris"]}


def committed_model_ids(output_uri: str, storage: StorageOptions | None = None) -> set[str]:
    """Model ids of the committed parts under ``output_uri``. Markers written before they
    recorded one fall back to the run manifest's model id (absent if that run never finished)."""
    markers = _markers(output_uri, storage)
    ids = {m["model_id"] for m in markers if "model_id" in m}
    if any("model_id" not in m for m in markers):
        filesystem, base = resolve(output_uri, storage)
        if filesystem.get_file_info(f"{base}/run_manifest.json").type == pafs.FileType.File:
            with filesystem.open_input_file(f"{base}/run_manifest.json") as f:
                ids.add(json.loads(f.read())["model"]["model_id"])
    return ids


def clean_uncommitted(output_uri: str, storage: StorageOptions | None = None) -> int:
    """Deletes parts whose marker is missing (an interrupted earlier run); returns how many."""
    filesystem, base = resolve(output_uri, storage)
    done = committed_parts(output_uri, storage)
    removed = 0
    for name in TABLES:
        if filesystem.get_file_info(f"{base}/{name}").type != pafs.FileType.Directory:
            continue
        for info in filesystem.get_file_info(pafs.FileSelector(f"{base}/{name}")):
            stem = info.base_name.rsplit(".", 1)[0]
            if info.base_name.endswith(".parquet") and stem not in done:
                filesystem.delete_file(info.path)
                removed += 1
    return removed


def committed_files(output_uri: str, table: str, storage: StorageOptions | None = None) -> list[str]:
    filesystem, base = resolve(output_uri, storage)
    done = committed_parts(output_uri, storage)
    if filesystem.get_file_info(f"{base}/{table}").type != pafs.FileType.Directory:
        return []
    return sorted(
        i.path for i in filesystem.get_file_info(pafs.FileSelector(f"{base}/{table}"))
        if i.base_name.endswith(".parquet") and i.base_name[: -len(".parquet")] in done
    )


def read_table(output_uri: str, table: str, storage: StorageOptions | None = None) -> pa.Table:
    """A whole committed table (small tables: metrics, errors; or bitstreams of a test corpus)."""
    filesystem, _ = resolve(output_uri, storage)
    files = committed_files(output_uri, table, storage)
    if not files:
        return TABLES[table].empty_table()
    return _concat_parts(files, filesystem, table)


def read_parts(batch: dict[str, np.ndarray], output_uri: str, table: str, storage: StorageOptions | None = None) -> pa.Table:
    """A batch of committed part paths -> their rows (a Ray Data map over part paths)."""
    filesystem, _ = resolve(output_uri, storage)
    return _concat_parts([str(f) for f in batch["part"]], filesystem, table)


def _concat_parts(paths: list[str], filesystem: pafs.FileSystem, table: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p, filesystem=filesystem, schema=TABLES[table]) for p in paths])
