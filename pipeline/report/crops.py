"""Side-by-side crops for the audit report: original | OSCAR | each classical codec at the nearest bpp.

Rebuilt from the committed tables, so ``--report-only`` needs no re-encoding of the corpus: the
original is read again from its ``source_uri`` (a file, a tar member ``shard.tar#key`` or a
Parquet row ``file.parquet#key``), OSCAR's stream comes from ``bitstreams/`` and is decoded,
and each classical codec is re-encoded at the quality the matched row recorded (Pillow's
encoders are deterministic). The crop is placed where the decodes differ most from each other:
the window with the largest mean absolute difference between OSCAR's decode and the classical
ones, which is where an auditor's eye should go.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from oscar_model.images import to_rgb_array

from ..inputs.readers import READERS
from ..inputs.units import ImageColumns, image_columns
from ..stages.classic import decode_classic, encode_classic
from ..storage import StorageOptions, resolve

__all__ = ["read_original", "pick_window", "crop_panel"]

CROP = 192
"""Crop side in pixels (shown at their own size; a click in the report zooms them 2x, pixel for pixel)."""


def read_original(source_uri: str, storage: StorageOptions | None) -> np.ndarray:
    """The source image of a metrics row, as RGB uint8."""
    storage = storage or StorageOptions()
    filesystem, path = resolve(source_uri, storage)
    if "#" in source_uri and filesystem.get_file_info(path).type.name == "NotFound":
        container, _, _key = source_uri.rpartition("#")
        unit: dict[str, Any] = {"uri": container, "unit_id": "", "members": [], "image_column": None, "key_column": None}
        if container.endswith(".parquet"):
            import pyarrow.parquet as pq

            fs, p = resolve(container, storage)
            cols = image_columns(pq.read_schema(p, filesystem=fs), ImageColumns(), container)
            if cols is None:
                raise ValueError(f"{container} has no image column to read {source_uri} from")
            unit.update(image_column=cols.image, key_column=cols.key)
            rows = READERS["parquet"](unit, storage)
        else:
            rows = READERS["tar"](unit, storage)
        for row in rows:
            if row["source_uri"] == source_uri and row["bytes"]:
                return to_rgb_array(bytes(row["bytes"]))
        raise FileNotFoundError(f"{source_uri}: no such member")
    with filesystem.open_input_file(path) as f:
        return to_rgb_array(f.read())


def pick_window(reference: np.ndarray, others: list[np.ndarray], size: int = CROP) -> tuple[int, int, int]:
    """(y, x, side) of the square window where ``others`` differ most from ``reference`` (mean |diff|)."""
    h, w = reference.shape[:2]
    side = min(size, h, w)
    diff = np.zeros((h, w))
    for o in others:
        diff += np.abs(reference.astype(np.float64) - o.astype(np.float64)).mean(axis=2)
    integral = np.pad(diff.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, side // 8)
    best, where = -1.0, (0, 0)
    for y in range(0, h - side + 1, step):
        for x in range(0, w - side + 1, step):
            total = integral[y + side, x + side] - integral[y, x + side] - integral[y + side, x] + integral[y, x]
            if total > best:
                best, where = total, (y, x)
    return (*where, side)


def crop_panel(panels: list[tuple[str, np.ndarray]], window: tuple[int, int, int]) -> bytes:
    """One PNG: the whole original (the crop boxed) then each labelled crop, side by side."""
    y, x, side = window
    label_h, gap = 20, 6
    font = ImageFont.load_default(size=13)
    original = panels[0][1]
    thumb_scale = side / max(original.shape[:2])
    thumb = Image.fromarray(original).resize((max(1, round(original.shape[1] * thumb_scale)),
                                              max(1, round(original.shape[0] * thumb_scale))))
    draw = ImageDraw.Draw(thumb)
    draw.rectangle([x * thumb_scale, y * thumb_scale, (x + side) * thumb_scale, (y + side) * thumb_scale],
                   outline=(255, 0, 0), width=2)
    tiles = [("where", thumb)] + [(label, Image.fromarray(img[y : y + side, x : x + side])) for label, img in panels]
    width = sum(t.width for _, t in tiles) + gap * (len(tiles) - 1)
    canvas = Image.new("RGB", (width, side + label_h), "white")
    pen = ImageDraw.Draw(canvas)
    at = 0
    for label, tile in tiles:
        canvas.paste(tile, (at, label_h))
        pen.text((at + 2, 2), label, fill=(0, 0, 0), font=font)
        at += tile.width + gap
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _quality(setting: str) -> int:
    return int(setting.split()[1])


def comparison_crops(original: np.ndarray, decoded: dict[int, np.ndarray], rows: list[dict[str, Any]], model: str,
                     levels: list[int]) -> list[tuple[int, bytes]]:
    """One panel PNG per level of ``levels`` for one image: original | OSCAR | each classical codec
    at the quality its matched row recorded (the highest at or below OSCAR's bpp). A codec that
    cannot go that low gets a blank panel that says so, never a larger file under a caption that
    claims otherwise (its downscaled variant, where the audit ran one, shows what it can do).
    One window for every level, placed where the middle level's decodes differ most."""
    pixels = original.shape[0] * original.shape[1]
    size = (original.shape[1], original.shape[0])
    by_level: dict[int, list[tuple[str, np.ndarray]]] = {}
    for level in levels:
        oscar = next(r for r in rows if r["codec"] == model and r.get("mode") == "sweep" and r.get("rate_level") == level)
        panels = [("original", original), (f"{model} L{level}: {oscar['bpp']:.3f} bpp", decoded[level])]
        for r in sorted((r for r in rows if r.get("mode") == "matched" and r.get("rate_level") == level),
                        key=lambda r: r["codec"]):
            if not r["reached"]:
                panels.append((f"{r['codec']}: cannot reach {oscar['bpp']:.3f} bpp", np.full_like(original, 128)))
                continue
            quality = _quality(r["setting"])
            data = encode_classic(original, r["codec"], quality)
            panels.append((f"{r['codec']} q{quality}: {8 * len(data) / pixels:.3f} bpp", decode_classic(data, size)))
        by_level[level] = panels
    middle = by_level[levels[len(levels) // 2]]
    window = pick_window(middle[1][1], [img for _, img in middle[2:]] or [original])
    return [(level, crop_panel(panels, window)) for level, panels in by_level.items()]
