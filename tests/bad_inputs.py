"""A corpus of awkward and broken inputs, made by code (nothing binary is committed).

``write_corpus(folder)`` writes one file per kind and returns what each must give: ``("ok",
(width, height))`` (an image of that displayed size) or ``("error", "words the one-line error
must contain")``. Run it as a script to write the corpus into a folder and look at it:
``python tests/bad_inputs.py /tmp/bad``.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

Expectation = tuple[str, object]


def _photo(w: int = 96, h: int = 64) -> np.ndarray:
    from skimage import data

    return np.asarray(Image.fromarray(data.coffee()).resize((w, h)))


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but holds a few bytes of data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _frames(fmt: str, n: int = 3, **kw) -> bytes:
    frames = [Image.fromarray(np.roll(_photo(), 10 * i, axis=1)) for i in range(n)]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)


EXPECTATIONS: dict[str, Expectation] = {
    "zero-bytes.png": ("error", "empty"),
    "truncated.png": ("error", "truncated"),
    "truncated.jpg": ("error", "truncated"),
    "text.jpg": ("error", "not a readable image"),
    "error-page.jpg": ("error", "not a readable image"),
    "cmyk.jpg": ("ok", (96, 64)),
    "gray16.png": ("ok", (96, 64)),
    "rgba.png": ("ok", (96, 64)),
    "la.png": ("ok", (96, 64)),
    "palette.png": ("ok", (96, 64)),
    "one-pixel.png": ("ok", (1, 1)),
    "three-by-three.png": ("ok", (3, 3)),
    "animated.gif": ("error", "frames"),
    "animated.webp": ("error", "frames"),
    "multipage.tiff": ("error", "frames"),
    "claims-30000x30000.png": ("error", "decompression bomb"),
    "exif-rotated.jpg": ("ok", (64, 96)),
    "panorama-20000x600.png": ("ok", (20000, 600)),
}


def files() -> dict[str, bytes]:
    """name -> the file's bytes (one per kind of :data:`EXPECTATIONS`)."""
    rgb = Image.fromarray(_photo())
    png, jpeg = _encode(rgb, "PNG"), _encode(rgb, "JPEG", quality=90)
    rotated = Image.Exif()
    rotated[0x0112] = 6  # rotate 90 degrees on display
    sixteen = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    panorama = np.tile(_photo(400, 600 // 5 * 5)[:600], (1, 50, 1))[:, :20000]
    return {
        "zero-bytes.png": b"",
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "text.jpg": b"just some words, not a picture\n" * 20,
        "error-page.jpg": b"<!doctype html><html><body><h1>403 Forbidden</h1></body></html>",
        "cmyk.jpg": _encode(rgb.convert("CMYK"), "JPEG"),
        "gray16.png": _encode(Image.fromarray(sixteen), "PNG"),
        "rgba.png": _encode(rgb.convert("RGBA"), "PNG"),
        "la.png": _encode(rgb.convert("LA"), "PNG"),
        "palette.png": _encode(rgb.convert("P"), "PNG"),
        "one-pixel.png": _encode(Image.new("RGB", (1, 1), (200, 30, 40)), "PNG"),
        "three-by-three.png": _encode(rgb.resize((3, 3)), "PNG"),
        "animated.gif": _frames("GIF", duration=100, loop=0),
        "animated.webp": _frames("WEBP", duration=100, loop=0),
        "multipage.tiff": _frames("TIFF"),
        "claims-30000x30000.png": _png_claiming(30000, 30000),
        "exif-rotated.jpg": _encode(rgb, "JPEG", exif=rotated),
        "panorama-20000x600.png": _encode(Image.fromarray(np.ascontiguousarray(panorama)), "PNG", compress_level=1),
    }


def write_corpus(folder: Path) -> dict[str, Expectation]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files().items():
        (folder / name).write_bytes(data)
    return dict(EXPECTATIONS)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "bad-inputs")
    for name, expect in write_corpus(target).items():
        print(f"{target / name}: {expect}")
