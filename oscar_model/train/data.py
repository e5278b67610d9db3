"""Training images held in memory, served as random crops.

BSDS500 is small (500 photos, ~230 MB as uint8), so every image is decoded once and crops
are cut from memory: on a 2-core CPU a data loader with workers would steal the cores the
model needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..images import same_size_batches
from ..pixels import to_model_range

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def list_images(roots: Iterable[str | Path]) -> list[Path]:
    """All image files under ``roots`` (recursively), sorted for reproducibility."""
    files: list[Path] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"training data folder {root} does not exist")
        files.extend(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images found under {[str(r) for r in roots]}")
    return sorted(files)


class ImageFiles(Sequence):
    """Photos read from disk when indexed (``files[i]``; slices stay lazy): for fitting tables
    on photos too large to hold all at once."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return ImageFiles(self.paths[i])
        from ..images import to_rgb_array

        return to_rgb_array(self.paths[i])


def read_images(paths: Iterable[Path]) -> list[np.ndarray]:
    """Every image decoded to RGB uint8 (H, W, 3), in order."""
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


class CropSampler:
    """Random crops (with horizontal flips) from images decoded once into memory."""

    def __init__(self, paths: list[Path], crop: int, seed: int = 0) -> None:
        self.images = read_images(paths)
        small = [p for p, im in zip(paths, self.images) if min(im.shape[:2]) < crop]
        if small:
            raise ValueError(f"crop={crop} is larger than {len(small)} images, e.g. {small[0]}")
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch_size: int) -> torch.Tensor:
        """A batch (B, 3, crop, crop) in [-1, 1]."""
        out = np.empty((batch_size, self.crop, self.crop, 3), dtype=np.uint8)
        for i in range(batch_size):
            im = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(im.shape[0] - self.crop + 1)
            x = self.rng.integers(im.shape[1] - self.crop + 1)
            patch = im[y : y + self.crop, x : x + self.crop]
            out[i] = patch[:, ::-1] if self.rng.random() < 0.5 else patch
        return to_model_range(out)

    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


class LatentCropSampler:
    """Random crops of training latents, each photo and its mirror encoded once.

    Why: stage 1 trains hyper-encoders against a frozen autoencoder, and encoding a batch of
    256-pixel crops costs twice what one hyper-encoder's forward and backward pass does. So
    every photo (and its left-right mirror) is encoded once, whole, and crops are cut from
    the latents; the matching pixel crops are kept for the stage's image-space loss. A latent
    crop at (y, x) is the pixel crop at (factor * y, factor * x).
    """

    def __init__(
        self,
        images: list[np.ndarray],
        encode: Callable[[torch.Tensor], torch.Tensor],
        crop: int,
        factor: int = 8,
        seed: int = 0,
        batch_size: int = 8,
    ) -> None:
        if crop % factor:
            raise ValueError(f"crop={crop} must be a multiple of the autoencoder's factor {factor}")
        self.crop, self.factor = crop // factor, factor
        self.pixels: list[np.ndarray] = []
        for im in images:
            h, w = (s // factor * factor for s in im.shape[:2])
            if min(h, w) < crop:
                raise ValueError(f"crop={crop} is larger than an image of {im.shape[1]}x{im.shape[0]}")
            im = im[:h, :w]
            self.pixels += [im, np.ascontiguousarray(im[:, ::-1])]
        self.latents: list[torch.Tensor] = [torch.empty(0)] * len(self.pixels)
        for idxs in same_size_batches(self.pixels, batch_size):
            z = encode(to_model_range(np.stack([self.pixels[i] for i in idxs]))).float().cpu()
            for i, zi in zip(idxs, z):
                self.latents[i] = zi
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.latents)

    def sample(self, batch_size: int, pixels: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(latent crops (B, C, c, c), pixel crops (B, 3, 8c, 8c) in [-1, 1] or None)."""
        c, f = self.crop, self.factor
        zs, xs = [], []
        for _ in range(batch_size):
            i = int(self.rng.integers(len(self.latents)))
            z = self.latents[i]
            y = int(self.rng.integers(z.shape[1] - c + 1))
            x = int(self.rng.integers(z.shape[2] - c + 1))
            zs.append(z[:, y : y + c, x : x + c])
            if pixels:
                xs.append(self.pixels[i][f * y : f * (y + c), f * x : f * (x + c)])
        z = torch.stack(zs)
        if not pixels:
            return z, None
        return z, to_model_range(np.stack(xs))

    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def full_image_batches(sampler: CropSampler, stride: int, limit: int | None = None):
    """Each training image, cropped to a multiple of ``stride``, as a (1, 3, H, W) tensor."""
    for im in sampler.images[:limit]:
        h, w = (s // stride * stride for s in im.shape[:2])
        yield to_model_range(im[None, :h, :w])
