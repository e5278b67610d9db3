"""Every output table's schema, with one line per column saying what it holds: the one place
tables are declared (the writer, the commits, the readers and the docs all read them here).

Under a job's output, each table is a Delta Lake table (Parquet files and a ``_delta_log/``):

    bitstreams/  metrics/  errors/  bd_rates/   the results (every job creates all four)
    work_units/                                 one row per committed unit of work: the resume record

Which job writes which rows is each job's own row builder (:mod:`pipeline.tables.rows` holds
the pieces they share); the writer knows only "table name -> Arrow rows".
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["BITSTREAMS", "METRICS", "ERRORS", "BD_RATES", "WORK_UNITS", "TABLES", "ALL_TABLES", "FLAT", "FLAT_OWN",
           "ROW_GROUP_ROWS", "UNCOMPRESSED_COLUMNS", "describe"]

_TYPES = {"str": pa.string(), "i16": pa.int16(), "i32": pa.int32(), "i64": pa.int64(), "f64": pa.float64(),
          "bool": pa.bool_(), "blob": pa.large_binary()}


DOCS: dict[int, tuple[str, dict[str, str]]] = {}
"""id(schema) -> (what the table holds, {column: what it holds}); read through :func:`describe`.
Kept beside the schemas, not in their metadata, so that the Delta tables' schemas stay the same
as those of outputs written before."""


def _schema(doc: str, columns: str) -> pa.Schema:
    """One table from lines of ``name:type  what it holds`` (types: str, i16, i32, i64, f64, bool,
    blob = large_binary, since Arrow's binary overflows at 2 GiB a chunk)."""
    fields, docs = [], {}
    for line in filter(str.strip, columns.splitlines()):
        spec, _, text = line.strip().partition("  ")
        name, kind = spec.split(":")
        fields.append(pa.field(name, _TYPES[kind]))
        docs[name] = text.strip()
    schema = pa.schema(fields)
    DOCS[id(schema)] = (doc, docs)
    return schema


_IMAGE = """
    image_id:str  SHA-256 of the source file's bytes, first 32 hex digits (the same photo has the same id everywhere)
    source_uri:str  where the image was read: a file's URI, or <shard>#<member> for a tar or Parquet shard
"""
_UNIT = """
    unit_id:str  the work unit the row came from (a shard, a file group, an archive's data file)
"""

BITSTREAMS = _schema("One stream per image and level kept: real bytes that `oscar decode` reads (a mixed archive's classical rows are the codec's own files).", _IMAGE + """
    width:i32  the image's width in pixels
    height:i32  the image's height in pixels
    codec:str  the codec that wrote the stream: the model's name, or with --codecs a classical codec (avif, jxl, avif@1/2: encoded at 1/K of each side)
    setting:str  the setting in words: "level 3" for the model's streams, "quality 37" for a classical file
    model_id:str  the id (8 hex digits) of the model that wrote the stream, which its decoder must have; null for a classical file
    rate_level:i16  the ladder level the stream was coded at; null for a classical file
    nominal_bpp:f64  the level's nominal bits per pixel (the ladder's, before entropy coding)
    bpp:f64  the stream's real bits per pixel: 8 x n_bytes / (width x height), every byte of the container counted
    n_bytes:i64  the stream's size in bytes, header and CRC included
    bitstream:blob  the stream (the container: magic, version, model id, header, entropy-coded indices, CRC), or a classical codec's file (.avif, .jxl, .webp, .jpg bytes)
    encode_ms:f64  milliseconds encoding this image at this level alone cost (autoencoder + this level)
    target:str  the quality target the image was archived at (null: archived without one)
    target_met:bool  with a target: whether the kept stream meets it (false: no candidate did; the best one is kept)
    chosen:bool  with a target: whether this is the stream kept for the image (all levels appear with --keep-all)
""" + _UNIT)
METRICS = _schema("One row per image, codec and setting: its size and its quality against the image's own reference.",
                  _IMAGE + """
    codec:str  the model's name (oscar-tiny, ...) or a classical codec (jpeg, webp, avif, jxl; avif@1/4: encoded at a quarter of each side, upscaled back with Lanczos)
    rate_level:i16  OSCAR's level; for a matched classical row, the OSCAR level whose bpp it was matched to
    setting:str  the setting in words: "level 3", "level 3, refine 16", "quality 40", "level 2, target ms_ssim>=0.9"
    mode:str  sweep (the codec's own setting grid), matched (a classical codec at OSCAR's bpp), target (the setting kept at a target), candidate (with --codecs: another codec's cheapest setting meeting the target, not kept), probe (a setting a target search looked at), redecode (an archived stream decoded)
    reached:bool  matched rows: whether the codec could go as low as OSCAR's bpp (false: every measured column is null)
    width:i32  the image's width in pixels
    height:i32  the image's height in pixels
    n_bytes:i64  the file's or stream's size in bytes
    bpp:f64  its bits per pixel over the full image
    psnr:f64  RGB PSNR in dB against the reference
    ms_ssim:f64  RGB MS-SSIM against the reference (fewer scales on images under 161 pixels a side)
    ssimulacra2:f64  SSIMULACRA2 against the reference (100 identical, 90 visually lossless, 50 medium; higher is better); null when not measured (--metrics)
    flip:f64  mean NVIDIA FLIP error against the reference (0 identical; lower is better); null when not measured
    butteraugli:f64  Butteraugli 3-norm (libjxl's butteraugli_main; below 1 visually lossless, lower is better); null where the tool is not installed or not measured
    lpips:f64  LPIPS (AlexNet) where its weights are installed, else null
    dists:f64  DISTS where its weights are installed, else null
    encode_ms:f64  milliseconds to encode
    decode_ms:f64  milliseconds to decode
    reference:str  what the metrics compare against: source (the input image), archive level L (a transcode), none
""" + _UNIT)
ERRORS = _schema("One row per input that could not be read, decoded, encoded or written: nothing is dropped quietly.",
                 """
    source_uri:str  the input that failed (a file, a shard member, an archive data file)
    image_id:str  its image id when its bytes were read, else null
    stage:str  the stage that failed: read, encode, decode, archive-decode, classic
    error_type:str  the exception's type (FileNotFoundError, UnidentifiedImageError, BitstreamError, ...)
    message:str  the exception's message, object addresses taken out so that equal errors group together
""" + _UNIT)
BD_RATES = _schema("An audit's per-image comparison with each classical codec (empty for the other jobs).", """
    image_id:str  the image
    source_uri:str  where it was read
    codec:str  the classical codec compared against (the anchor)
    metric:str  the quality metric of the comparison (psnr, ms_ssim, ...)
    bd_rate:f64  Bjontegaard delta rate of the model against the codec on this image's curves, in percent (negative: fewer bits); null without overlap
    overlap_lo:f64  the low end of the quality range both curves cover
    overlap_hi:f64  its high end
    matched_gap:f64  the codec's quality minus the model's at the model's own bpp, averaged over the levels it reached (positive: the codec is better)
""" + _UNIT)
WORK_UNITS = _schema("One row per committed unit of work: what a rerun skips.", """
    unit_id:str  the unit: a shard's URI, files:<hash of its members>, archive:<hash> for an archive's data file
    kind:str  files, tar, parquet or delta-file
    uri:str  the shard, the first file of a group, or the archive data file
    images:i64  the in-flight rows the unit produced (images, or streams when re-decoding)
    window:i64  the commit window it landed in
    model_id:str  the model that wrote its rows
    run_id:str  the run that committed it
    committed_at:str  when (UTC, ISO 8601)
""")

TABLES: dict[str, pa.Schema] = {"bitstreams": BITSTREAMS, "metrics": METRICS, "errors": ERRORS, "bd_rates": BD_RATES}
"""The result tables, which the write stage fills; ``work_units`` is committed by the driver alone."""
ALL_TABLES: dict[str, pa.Schema] = {**TABLES, "work_units": WORK_UNITS}

FLAT_OWN = pa.schema([("table", pa.string()), ("unit_id", pa.string()), ("unit_size", pa.int64()),
                      ("image_rows", pa.int32()), ("image_failed", pa.bool_()), ("unit_rows", pa.int64())])
FLAT = pa.schema([*FLAT_OWN, *{f.name: f for t in TABLES.values() for f in t if f.name not in FLAT_OWN.names}.values()])
"""Every table's rows under one schema, with ``table`` naming theirs: what the row builders' output
travels to the write tasks in, so that blocks of different tasks always concatenate. Each
in-flight row adds one more row with ``table = ""`` (never written): ``image_rows = 1``, its
``unit_size`` and ``image_failed``, how the driver counts images and completes units; the first
such row of each unit in a block also says how many table rows the block holds for that unit
(``unit_rows``), so that a unit is complete only once every one of its rows is in a received
file, however a write task's batch splits a block."""

ROW_GROUP_ROWS = 16_384
"""Rows per Parquet row group, written and compacted: a reader decodes a row group at a time, so
this bounds what a streamed read (the report's) holds, whatever the file size."""
UNCOMPRESSED_COLUMNS = {"bitstream"}
"""Already entropy-coded: written without compression or dictionary encoding."""


def describe(table: str) -> tuple[str, list[tuple[str, str, str]]]:
    """What ``table`` holds, and (column, Arrow type, what it holds) for each of its columns: what the docs print."""
    schema = ALL_TABLES[table]
    doc, columns = DOCS[id(schema)]
    return doc, [(f.name, str(f.type), columns[f.name]) for f in schema]
