"""The rate ladder: one model, many bit-rates.

Each level names how the hyper-encoder compresses the latent: extra down-sampling ``s`` of
the 1/8-resolution latent, ``groups`` codebooks of ``codebook_size`` K per position, and the
pseudo-timestep ``t`` the one-step denoiser starts from. Nominal bpp is derived, never typed:
``groups * log2(K) / (8 s)^2``. Actual bpp (every container byte) is different: entropy
coding saves 20-40% at the top levels, the header costs some. So a trained model also carries
each level's ``typical_bpp``, measured on training photos its entropy tables were not counted
on, and a bpp a user asks for is matched against that when it is known.
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
    typical_bpp: float | None = None
    """Mean actual bpp (every container byte) on held-out training photos; None until measured."""

    def __post_init__(self) -> None:
        if self.downsample not in (1, 2, 4, 8):
            raise ValueError(f"downsample={self.downsample}; expected one of 1, 2, 4, 8")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size={self.codebook_size} must be at least 2")
        if self.groups < 1:
            raise ValueError(f"groups={self.groups} must be at least 1")
        if self.typical_bpp is not None and not self.typical_bpp > 0:
            raise ValueError(f"typical_bpp={self.typical_bpp} must be positive")

    @property
    def bits_per_index(self) -> float:
        return math.log2(self.codebook_size)

    @property
    def nominal_bpp(self) -> float:
        return self.groups * self.bits_per_index / (self.latent_factor * self.downsample) ** 2

    @property
    def expected_bpp(self) -> float:
        """What this level costs on a typical photo: measured when known, else nominal."""
        return self.typical_bpp if self.typical_bpp is not None else self.nominal_bpp

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
        keys = {"index", "downsample", "codebook_size", "timestep", "groups", "latent_factor", "typical_bpp"}
        return cls(tuple(RatePoint(**{k: v for k, v in r.items() if k in keys}) for r in rows))

    def to_dicts(self) -> list[dict]:
        return [p.to_dict() for p in self.points]

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self):
        return iter(self.points)

    def get(self, index: int) -> RatePoint:
        if not 0 <= index < len(self.points):
            raise ValueError(f"rate level {index} does not exist; the ladder is {self.describe()}")
        return self.points[index]

    def nearest(self, bpp: float) -> RatePoint:
        """The level whose expected bpp (measured, else nominal) is closest to ``bpp``, in log space.

        A bpp beyond the ladder's ends by more than the spacing of its two outermost levels is
        refused: ``5.0`` once quietly ran the top level at 0.24 bpp.
        """
        if not bpp > 0 or math.isinf(bpp):
            raise ValueError(f"bpp={bpp} must be a positive number; the ladder is {self.describe()}")
        rates = sorted(p.expected_bpp for p in self.points)
        if len(rates) > 1:
            low, high = rates[0] * rates[0] / rates[1], rates[-1] * rates[-1] / rates[-2]
            if not low <= bpp <= high:
                raise ValueError(f"{bpp:g} bpp is beyond this model's ladder by more than a level's spacing "
                                 f"(it reaches {low:.4g}..{high:.4g}); the ladder is {self.describe()}")
        return min(self.points, key=lambda p: abs(math.log(p.expected_bpp / bpp)))

    def describe(self) -> str:
        """``L0 0.0115, L1 0.0296, ... bpp``: what an error message shows of the ladder."""
        return ", ".join(f"L{p.index} {p.expected_bpp:.4g}" for p in self.points) + " bpp"

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

    def with_typical_bpp(self, bpps: Sequence[float]) -> RateLadder:
        if len(bpps) != len(self.points):
            raise ValueError(f"got {len(bpps)} bpp values for {len(self.points)} levels")
        return RateLadder(tuple(replace(p, typical_bpp=round(float(b), 5)) for p, b in zip(self.points, bpps)))

    @property
    def max_downsample(self) -> int:
        return max(p.downsample for p in self.points)
