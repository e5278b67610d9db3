"""One explicit Arrow schema per output table.

Bitstreams are ``large_binary`` (Arrow ``binary`` overflows at 2 GiB a chunk) and are written
without compression or dictionary encoding: they are already entropy-coded.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["BITSTREAMS", "METRICS", "ERRORS", "TABLES", "UNCOMPRESSED_COLUMNS"]

BITSTREAMS = pa.schema(
    [
        ("image_id", pa.string()),
        ("source_uri", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("model_id", pa.string()),
        ("rate_level", pa.int16()),
        ("nominal_bpp", pa.float64()),
        ("bpp", pa.float64()),
        ("n_bytes", pa.int64()),
        ("bitstream", pa.large_binary()),
        ("encode_ms", pa.float64()),
    ]
)

METRICS = pa.schema(
    [
        ("image_id", pa.string()),
        ("source_uri", pa.string()),
        ("codec", pa.string()),
        ("rate_level", pa.int16()),
        ("setting", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("n_bytes", pa.int64()),
        ("bpp", pa.float64()),
        ("psnr", pa.float64()),
        ("ms_ssim", pa.float64()),
        ("lpips", pa.float64()),
        ("dists", pa.float64()),
        ("encode_ms", pa.float64()),
        ("decode_ms", pa.float64()),
        ("reference", pa.string()),
    ]
)

ERRORS = pa.schema(
    [
        ("source_uri", pa.string()),
        ("image_id", pa.string()),
        ("stage", pa.string()),
        ("error_type", pa.string()),
        ("message", pa.string()),
    ]
)

TABLES: dict[str, pa.Schema] = {"bitstreams": BITSTREAMS, "metrics": METRICS, "errors": ERRORS}
UNCOMPRESSED_COLUMNS = {"bitstream"}
