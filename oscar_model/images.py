"""Turning whatever a user hands us into an RGB uint8 array, and back.

Accepted: PIL images of any mode (1, L, LA, P, PA, RGB, RGBA, CMYK, I, I;16*, F, ...),
NumPy arrays (H, W), (H, W, 1|3|4) in uint8 or uint16 (or floats in [0, 1]), file paths and
encoded bytes. Alpha is composited over white; 16-bit samples are scaled to 8 bits with
rounding; EXIF orientation is applied to files and bytes.

Refused, always with :class:`ImageError` (a ``ValueError``) and a one-line reason: empty,
truncated or corrupt files, files that are no image at all, images over ``max_pixels``
(decompression bombs, judged from the header before decoding), and animated or multi-page
files (OSCAR codes still images; keeping only the first frame would silently lose the rest).
"""

from __future__ import annotations

import io
import re
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["ImageLike", "ImageError", "to_rgb_array", "open_image", "same_size_batches", "DEFAULT_MAX_PIXELS"]

ImageLike = Image.Image | np.ndarray | str | Path | bytes
DEFAULT_MAX_PIXELS = 50_000_000
"""Larger images are refused as decompression bombs (PIL's own limit is about 89 Mpx)."""


class ImageError(ValueError):
    """An input that is not one decodable still image (see the module's docstring)."""


def _check_still(img: Image.Image) -> None:
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        raise ImageError(f"{img.format or 'image'} has {frames} frames (animated or multi-page); OSCAR codes still "
                         "images: split the frames into files first")


def open_image(source: str | Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Opens and fully decodes an image file, with EXIF orientation applied.

    Raises :class:`ImageError` for anything but one still image of at most ``max_pixels``
    (checked from the header, before any pixel is decoded); FileNotFoundError for a missing path.
    """
    if not source if isinstance(source, bytes | bytearray) else Path(source).stat().st_size == 0:
        raise ImageError("empty file (0 bytes)")
    fp = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    with warnings.catch_warnings():
        # Pillow warns (two stray stderr lines) about large images; max_pixels below refuses them.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp)
        except FileNotFoundError:
            raise
        except Image.DecompressionBombError as e:
            raise ImageError(f"decompression bomb refused: {e}") from e
        except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError...: not an image we can read
            raise ImageError(f"not a readable image ({type(e).__name__}: {without_reprs(e)})") from e
        w, h = img.size
        if w * h > max_pixels:
            raise ImageError(f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels} (decompression bomb?)")
        _check_still(img)
        try:
            img.load()
            return ImageOps.exif_transpose(img)
        except Exception as e:  # truncated or corrupt pixel data
            raise ImageError(f"{img.format or 'image'} data is truncated or corrupt ({type(e).__name__}: "
                             f"{without_reprs(e)})") from e


def without_reprs(e: BaseException | str) -> str:
    """``str(e)`` with object reprs (``<_io.BytesIO object at 0x7efd...>``) replaced by ``the data``:
    an address differs in every process, so error rows with it never group together."""
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", str(e))


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3:  # already RGB: no float round trip
        return np.ascontiguousarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an array of shape (H, W) or (H, W, 1|2|3|4), got {arr.shape}")
    if arr.dtype == np.uint8:
        a = arr.astype(np.float32)
    elif arr.dtype == np.uint16:
        a = arr.astype(np.float32) / 257.0
    elif np.issubdtype(arr.dtype, np.floating):
        a = np.clip(arr.astype(np.float32), 0, 1) * 255.0
    elif np.issubdtype(arr.dtype, np.integer):
        a = arr.astype(np.float32)
        if a.max(initial=0) > 255:
            a = a / 257.0
    elif arr.dtype == bool:
        a = arr.astype(np.float32) * 255.0
    else:
        raise ValueError(f"unsupported array dtype {arr.dtype}")
    c = a.shape[2]
    if c in (2, 4):  # colour + alpha, composited over white
        alpha = a[:, :, -1:] / 255.0
        a = a[:, :, :-1] * alpha + 255.0 * (1 - alpha)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if mode == "F":
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        elif mode == "I" and arr.max(initial=0) <= 255:
            arr = arr.astype(np.uint8)
        else:
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
        return _array_to_rgb(arr)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
        return _array_to_rgb(np.asarray(img.convert("RGBA")))
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Any supported image -> (H, W, 3) uint8."""
    if isinstance(image, str | Path | bytes | bytearray):
        image = open_image(image)
    if isinstance(image, Image.Image):
        _check_still(image)
        return _pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image)
    raise TypeError(f"cannot read an image from {type(image).__name__}")


def same_size_batches(arrays: Sequence[np.ndarray], batch_size: int) -> list[list[int]]:
    """Indices of ``arrays`` grouped by (H, W), at most ``batch_size`` per group: what can be stacked."""
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, a in enumerate(arrays):
        by_size[a.shape[:2]].append(i)
    return [members[s : s + batch_size] for members in by_size.values() for s in range(0, len(members), batch_size)]


CLASSICAL_SIGNATURES = (
    (b"\xff\xd8\xff", 0, "JPEG"), (b"\x89PNG\r\n\x1a\n", 0, "PNG"), (b"WEBP", 8, "WebP"), (b"ftypavif", 4, "AVIF"),
    (b"ftypavis", 4, "AVIF"), (b"\xff\x0a", 0, "JPEG XL"), (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0, "JPEG XL"),
)
"""(magic bytes, offset, format) of the image files a mixed archive may hold beside OSCAR streams."""


def classical_format(head: bytes) -> str | None:
    """The image format whose magic bytes ``head`` starts with (JPEG, PNG, WebP, AVIF, JPEG XL), else None."""
    for magic, offset, name in CLASSICAL_SIGNATURES:
        if head[offset:offset + len(magic)] == magic:
            return name
    return None


def decode_classical_file(data: bytes, fmt: str) -> np.ndarray:
    """RGB pixels of a classical image file (a mixed archive's), decoded by Pillow.

    JPEG XL needs the ``pillow-jxl-plugin`` package; without it the error names the tools that
    can decode the file. A file stored downscaled (``avif@1/2``) decodes at its stored size; the
    archive's ``width`` and ``height`` say the size to upscale it to.
    """
    if fmt == "JPEG XL":
        try:
            import pillow_jxl  # noqa: F401  (registers JPEG XL with Pillow)
        except ImportError:
            raise ValueError("a JPEG XL file: install pillow-jxl-plugin, or decode it with libjxl's djxl") from None
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
