"""Training images held in memory, served as random crops.

BSDS500 is small (500 photos, ~230 MB as uint8), so every image is decoded once and crops
are cut from memory: on a 2-core CPU a data loader with workers would steal the cores the
model needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

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


class CropSampler:
    """Random crops (with horizontal flips) from images decoded once into memory."""

    def __init__(self, paths: list[Path], crop: int, seed: int = 0) -> None:
        self.images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
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
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)

    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
