"""Cosine-similarity vector quantisation (the VQ of OSCAR's hyper-encoders).

Vectors and codes are L2-normalised and matched by dot product, so the codebook spends its
capacity on directions, not magnitudes (magnitudes are restored later from the transmitted
per-channel latent norms). ``groups`` independent codebooks split the channel dimension:
G indices per position give G * log2(K) bits.

      features (B, G*d, h, w) --normalise--> argmax_k <f, c_k> --> indices (B, G, h, w)
      indices --lookup--> normalised codes (B, G*d, h, w)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CosineVectorQuantizer"]


class CosineVectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, codebook_dim: int, groups: int = 1) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.groups = groups
        self.codebook = nn.Parameter(torch.randn(groups, codebook_size, codebook_dim))
        # Running usage (training only) to find and revive dead codes.
        self.register_buffer("usage", torch.zeros(groups, codebook_size), persistent=False)

    def _split(self, features: torch.Tensor) -> torch.Tensor:
        b, c, h, w = features.shape
        if c != self.groups * self.codebook_dim:
            raise ValueError(f"expected {self.groups * self.codebook_dim} channels, got {c}")
        # (B, G, d, h, w) -> (B, G, h, w, d)
        return features.reshape(b, self.groups, self.codebook_dim, h, w).permute(0, 1, 3, 4, 2)

    def normalized_codebook(self) -> torch.Tensor:
        return F.normalize(self.codebook.float(), dim=-1)

    def indices(self, features: torch.Tensor) -> torch.Tensor:
        """Nearest code by cosine similarity: (B, G*d, h, w) -> int64 (B, G, h, w)."""
        f = F.normalize(self._split(features.float()), dim=-1)
        sim = torch.einsum("bghwd,gkd->bghwk", f, self.normalized_codebook())
        return sim.argmax(dim=-1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices (B, G, h, w) -> normalised codes (B, G*d, h, w)."""
        if indices.min() < 0 or indices.max() >= self.codebook_size:
            raise ValueError(f"indices must lie in [0, {self.codebook_size - 1}]")
        return self.gather_codes(indices)

    def gather_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """:meth:`lookup` without its range check, a graph an exporter can trace (the entropy
        decoder never yields an index outside the codebook)."""
        cb = self.normalized_codebook()  # (G, K, d)
        b, g, h, w = indices.shape
        codes = torch.stack([cb[i][indices[:, i]] for i in range(g)], dim=1)  # (B, G, h, w, d)
        return codes.permute(0, 1, 4, 2, 3).reshape(b, g * self.codebook_dim, h, w)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise with a straight-through gradient.

        Returns (quantised features, indices, commitment loss). The commitment term pulls
        codes and features together: 1 - cos, codebook side and encoder side (x 0.25).
        """
        split = F.normalize(self._split(features.float()), dim=-1)  # (B, G, h, w, d)
        idx = self.indices(features)
        codes = self.lookup(idx)
        b, g, h, w = idx.shape
        codes_split = codes.reshape(b, g, self.codebook_dim, h, w).permute(0, 1, 3, 4, 2)
        codebook_term = (1 - (split.detach() * codes_split).sum(-1)).mean()
        commit_term = (1 - (split * codes_split.detach()).sum(-1)).mean()
        loss = codebook_term + 0.25 * commit_term
        flat = split.permute(0, 1, 4, 2, 3).reshape(b, g * self.codebook_dim, h, w)
        quantized = flat + (codes - flat).detach()
        if self.training:
            with torch.no_grad():
                counts = torch.stack([torch.bincount(idx[:, i].flatten(), minlength=self.codebook_size) for i in range(g)])
                self.usage.mul_(0.99).add_(counts.float())
        return quantized.to(features.dtype), idx, loss

    @torch.no_grad()
    def revive_dead_codes(self, features: torch.Tensor, threshold: float = 0.03) -> int:
        """Re-seeds codes whose running usage fell below ``threshold`` with random features.

        Returns how many codes were revived. Called by the trainer every few hundred steps.
        """
        split = F.normalize(self._split(features.float()), dim=-1).reshape(self.groups, -1, self.codebook_dim)
        revived = 0
        for gi in range(self.groups):
            dead = (self.usage[gi] < threshold).nonzero().flatten()
            if len(dead) == 0:
                continue
            pool = split[gi] if split.shape[1] else None
            pick = torch.randint(0, pool.shape[0], (len(dead),), device=pool.device)
            noise = 0.01 * torch.randn(len(dead), self.codebook_dim, device=pool.device)
            self.codebook.data[gi, dead] = (pool[pick] + noise).to(self.codebook.dtype)
            self.usage[gi, dead] = 1.0
            revived += len(dead)
        return revived
