"""The rate ladder: one model, many bit-rates.

Each level names how the hyper-encoder compresses the latent: extra down-sampling ``s`` of
the 1/8-resolution latent, ``groups`` codebooks of ``codebook_size`` K per position, and the
pseudo-timestep ``t`` the one-step denoiser starts from. Nominal bpp is derived, never typed:
``groups * log2(K) / (8 s)^2``. Actual bpp (every container byte) is a little different:
entropy coding saves some, the header costs some.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

__all__ = ["RatePoint", "RateLadder", "RateLike"]

RateLike = int | float
"""A rate level: an ``int`` is a ladder index, a ``float`` a bpp (the nearest level wins)."""


@dataclass(frozen=True)
class RatePoint:
    index: int
    downsample: int
    codebook_size: int
    timestep: int
    groups: int = 1
    latent_factor: int = 8

    def __post_init__(self) -> None:
        if self.downsample not in (1, 2, 4, 8):
            raise ValueError(f"downsample={self.downsample}; expected one of 1, 2, 4, 8")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size={self.codebook_size} must be at least 2")
        if self.groups < 1:
            raise ValueError(f"groups={self.groups} must be at least 1")

    @property
    def bits_per_index(self) -> float:
        return math.log2(self.codebook_size)

    @property
    def nominal_bpp(self) -> float:
        return self.groups * self.bits_per_index / (self.latent_factor * self.downsample) ** 2

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """VQ grid (h, w) for an image already padded to the model's stride."""
        f = self.latent_factor * self.downsample
        return height // f, width // f

    def to_dict(self) -> dict:
        return {**asdict(self), "nominal_bpp": self.nominal_bpp}


@dataclass(frozen=True)
class RateLadder:
    points: tuple[RatePoint, ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("a rate ladder needs at least one level")
        for i, p in enumerate(self.points):
            if p.index != i:
                raise ValueError(f"ladder level {i} has index {p.index}; levels must be numbered 0..n-1")

    @classmethod
    def from_dicts(cls, rows: Iterable[dict]) -> RateLadder:
        keys = {"index", "downsample", "codebook_size", "timestep", "groups", "latent_factor"}
        return cls(tuple(RatePoint(**{k: v for k, v in r.items() if k in keys}) for r in rows))

    def to_dicts(self) -> list[dict]:
        return [p.to_dict() for p in self.points]

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self):
        return iter(self.points)

    def get(self, index: int) -> RatePoint:
        if not 0 <= index < len(self.points):
            raise ValueError(f"rate level {index} does not exist; valid levels are 0..{len(self.points) - 1}")
        return self.points[index]

    def nearest(self, bpp: float) -> RatePoint:
        """The level whose nominal bpp is closest to ``bpp`` (in log space)."""
        if not bpp > 0:
            raise ValueError(f"bpp={bpp} must be positive")
        return min(self.points, key=lambda p: abs(math.log(p.nominal_bpp / bpp)))

    def resolve(self, rate: RateLike) -> RatePoint:
        if isinstance(rate, bool):
            raise TypeError("a rate is an int level or a float bpp, not a bool")
        if isinstance(rate, int):
            return self.get(rate)
        return self.nearest(float(rate))

    def resolve_many(self, rates: Sequence[RateLike] | None) -> list[RatePoint]:
        """Levels for ``rates`` (all levels when None), duplicates removed, order kept."""
        if rates is None:
            return list(self.points)
        seen: dict[int, RatePoint] = {}
        for r in rates:
            p = self.resolve(r)
            seen.setdefault(p.index, p)
        return list(seen.values())

    def with_timesteps(self, timesteps: Sequence[int]) -> RateLadder:
        if len(timesteps) != len(self.points):
            raise ValueError(f"got {len(timesteps)} timesteps for {len(self.points)} levels")
        return RateLadder(tuple(replace(p, timestep=int(t)) for p, t in zip(self.points, timesteps)))

    @property
    def max_downsample(self) -> int:
        return max(p.downsample for p in self.points)
