"""The per-rate hyper-encoder: latent z -> VQ indices -> compressed latent z~.

One hyper-encoder per rate level (PerCo's design, as in OSCAR): down-sample the latent by
``downsample`` with strided convolutions and residual bottleneck blocks, attend once at the
coarsest grid, project to ``groups * codebook_dim`` channels, quantise by cosine similarity,
then map the codes back up to a 4-channel latent.

    z (B,4,H,W) -> encoder -> quant_proj -> VQ -> indices (B,G,H/s,W/s)      [transmitted]
    indices -> quantizer.lookup -> post_quant_proj -> decoder -> z~ (B,4,H,W)
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .layers import AttentionBlock, PixelShuffleUp, ResidualBottleneckBlock, conv1x1, conv3x3
from .quantizer import CosineVectorQuantizer

__all__ = ["HyperEncoder", "QuantizedLatentMethods"]


class QuantizedLatentMethods:
    """What every hyper-encoder does around its networks: ``trunk`` (z -> features), a 1x1
    ``quant_proj`` to the codebooks, the cosine ``quantizer``, a 1x1 ``post_quant_proj`` back,
    and ``head`` (-> z~). The compact design and the released one (:mod:`oscar_model.perco`)
    differ only in trunk and head.
    """

    trunk: nn.Module
    head: nn.Module
    quant_proj: nn.Module
    post_quant_proj: nn.Module
    quantizer: CosineVectorQuantizer

    def features(self, latents: torch.Tensor) -> torch.Tensor:
        return self.quant_proj(self.trunk(latents))

    def encode(self, latents: torch.Tensor) -> torch.Tensor:
        """z (B, C, H, W) -> int64 indices (B, G, H/s, W/s)."""
        return self.quantizer.indices(self.features(latents))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices -> compressed latent z~ (B, C, H, W), before norm rescaling."""
        return self.decode_codes(self.quantizer.lookup(indices))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, G * d, h, w) -> z~; differentiable (the encoder's index search)."""
        return self.head(self.post_quant_proj(codes.to(self.post_quant_proj.weight.dtype)))

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training path: (z~, indices, commitment loss), straight-through gradients."""
        quantized, idx, commit = self.quantizer(self.features(latents))
        return self.decode_codes(quantized), idx, commit


class HyperEncoder(QuantizedLatentMethods, ModelMixin, ConfigMixin):
    """Args:
    latent_channels: channels of z (4).
    downsample: extra down-sampling s of the latent, one of 1, 2, 4, 8.
    channels: width M of the network (320 in the reference; 96 in oscar-tiny).
    num_res_blocks: residual bottleneck blocks at the coarsest grid, each side.
    attention: one self-attention block at the coarsest grid of the encoder.
    codebook_size: K codes per codebook.
    codebook_dim: dimension of a code (low: 8-32).
    groups: independent codebooks per position.
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        downsample: int = 1,
        channels: int = 96,
        num_res_blocks: int = 2,
        attention: bool = True,
        codebook_size: int = 256,
        codebook_dim: int = 16,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if downsample not in (1, 2, 4, 8):
            raise ValueError(f"downsample={downsample}; expected one of 1, 2, 4, 8")
        n_down = int(math.log2(downsample))
        enc: list[nn.Module] = [conv1x1(latent_channels, channels)]
        for _ in range(n_down):
            enc += [conv3x3(channels, channels, stride=2), ResidualBottleneckBlock(channels)]
        enc += [ResidualBottleneckBlock(channels) for _ in range(num_res_blocks)]
        if attention:
            enc.append(AttentionBlock(channels))
        self.encoder = nn.Sequential(*enc)
        self.quant_proj = conv1x1(channels, groups * codebook_dim)
        self.quantizer = CosineVectorQuantizer(codebook_size, codebook_dim, groups)
        self.post_quant_proj = conv1x1(groups * codebook_dim, channels)
        dec: list[nn.Module] = [ResidualBottleneckBlock(channels) for _ in range(num_res_blocks)]
        for _ in range(n_down):
            dec += [PixelShuffleUp(channels, channels), ResidualBottleneckBlock(channels)]
        dec.append(conv3x3(channels, latent_channels))
        self.decoder = nn.Sequential(*dec)

    @property
    def trunk(self) -> nn.Module:
        return self.encoder

    @property
    def head(self) -> nn.Module:
        return self.decoder
