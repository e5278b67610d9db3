"""The hyper-encoder of the released OSCAR model (PerCo's design, Körber et al. 2024, Sec. 3.2).

Written here so that the official checkpoint's weights load into it: the layer order and
parameter names of ``backbone`` and ``proj`` follow the released model; its VQ (a
vector-quantize-pytorch ``VectorQuantize`` with cosine similarity and a 32-d codebook behind
linear projections) becomes our :class:`~oscar_model.quantizer.CosineVectorQuantizer` between
two 1x1 convolutions (:func:`official_to_ours` maps the keys).

    z (B,4,H,W) -> backbone (3 stages of 3 bottlenecks; a 5x5 stride-2 conv per stage where the
    rate down-samples; two gated attention blocks) -> (B,M,H/s,W/s) -> quant_proj -> cosine VQ
    -> indices;  indices -> codes -> post_quant_proj -> proj (the mirror, 5x5 transposed
    convs) -> z~ (B,4,H,W)

Everything is convolutional (the "attention" of CompressAI's block is a sigmoid gate, not
global attention), so the network tiles without changing its receptive field much.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .hyper_encoder import QuantizedLatentMethods
from .layers import conv1x1, conv3x3
from .quantizer import CosineVectorQuantizer

__all__ = ["PercoHyperEncoder", "official_to_ours"]


def _down(in_ch: int, out_ch: int) -> nn.Conv2d:
    """CompressAI's ``conv``: 5x5, stride 2, padding 2."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=5, stride=2, padding=2)


def _up(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    """CompressAI's ``deconv``: 5x5 transposed, stride 2, exactly doubling the size."""
    return nn.ConvTranspose2d(in_ch, out_ch, kernel_size=5, stride=2, padding=2, output_padding=1)


def _narrowing(channels: int) -> nn.Sequential:
    """1x1 -> ReLU -> 3x3 -> ReLU -> 1x1 at half the width: the branch of both residual blocks."""
    half = channels // 2
    return nn.Sequential(
        conv1x1(channels, half), nn.ReLU(inplace=True), conv3x3(half, half), nn.ReLU(inplace=True), conv1x1(half, channels)
    )


class Bottleneck(nn.Module):
    """x + branch(x) (PerCo's residual block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = _narrowing(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class _ResidualUnit(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _narrowing(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv(x))


class GatedAttentionBlock(nn.Module):
    """CompressAI's ``AttentionBlock`` (Cheng et al. 2020, simplified): x + a(x) * sigmoid(b(x)),
    both branches three residual units, ``b`` ending in a 1x1 conv. Local, not global."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_a = nn.Sequential(*[_ResidualUnit(channels) for _ in range(3)])
        self.conv_b = nn.Sequential(*[_ResidualUnit(channels) for _ in range(3)], conv1x1(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_a(x) * torch.sigmoid(self.conv_b(x))


class PercoHyperEncoder(QuantizedLatentMethods, ModelMixin, ConfigMixin):
    """Args:
    latent_channels: channels of z (4).
    downsample: extra down-sampling s of the latent: 1, 2, 4 or 8 (the release's VQ grid of
        64, 32, 16 or 8 at 512 px).
    channels: width N of the backbone's first stages (192).
    hyper_dim: width M of the VQ input and of ``proj`` (320).
    codebook_size: K.
    codebook_dim: dimension of a code (32).
    groups: codebooks per position; the released design has one.
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        downsample: int = 1,
        channels: int = 192,
        hyper_dim: int = 320,
        codebook_size: int = 256,
        codebook_dim: int = 32,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if downsample not in (1, 2, 4, 8):
            raise ValueError(f"downsample={downsample}; expected one of 1, 2, 4, 8")
        if groups != 1:
            raise ValueError(f"the released hyper-encoder has one codebook per position, got groups={groups}")
        n, m = channels, hyper_dim
        # Which of the three stages down-sample: the last ones first (s = 2 -> the third only).
        strided = [downsample >= 8, downsample >= 4, downsample >= 2]

        def stage(first: nn.Module, width: int) -> list[nn.Module]:
            return [first, *[Bottleneck(width) for _ in range(3)]]

        self.backbone = nn.Sequential(
            *stage(_down(latent_channels, n) if strided[0] else conv1x1(latent_channels, n), n),
            *stage(_down(n, n) if strided[1] else conv1x1(n, n), n),
            GatedAttentionBlock(n),
            *stage(_down(n, n) if strided[2] else conv1x1(n, n), n),
            conv1x1(n, m),
            GatedAttentionBlock(m),
        )
        self.proj = nn.Sequential(
            *stage(_up(m, m) if strided[0] else conv1x1(m, m), m),
            *stage(_up(m, m) if strided[1] else conv1x1(m, m), m),
            *stage(_up(m, m) if strided[2] else conv1x1(m, m), m),
            conv1x1(m, latent_channels),
        )
        self.quant_proj = conv1x1(m, codebook_dim)
        self.quantizer = CosineVectorQuantizer(codebook_size, codebook_dim, 1)
        self.post_quant_proj = conv1x1(codebook_dim, m)

    @property
    def trunk(self) -> nn.Module:
        return self.backbone

    @property
    def head(self) -> nn.Module:
        return self.proj


def official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One released hyper-encoder's state dict -> :class:`PercoHyperEncoder`'s.

    ``backbone.*`` and ``proj.*`` keep their names. The VQ's linear projections become 1x1
    convolutions and its codebook (``_codebook.embed``, unit vectors, one head) our codebook;
    its EMA statistics (``initted``, ``cluster_size``, ``embed_avg``) are training state and
    are dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(("backbone.", "proj.")):
            out[key] = value
    try:
        out["quant_proj.weight"] = state["quantizer.project_in.weight"][:, :, None, None]
        out["quant_proj.bias"] = state["quantizer.project_in.bias"]
        out["post_quant_proj.weight"] = state["quantizer.project_out.weight"][:, :, None, None]
        out["post_quant_proj.bias"] = state["quantizer.project_out.bias"]
        out["quantizer.codebook"] = state["quantizer._codebook.embed"].reshape(1, *state["quantizer._codebook.embed"].shape[-2:])
    except KeyError as e:
        raise ValueError(f"not a released OSCAR hyper-encoder: {e.args[0]} is missing") from e
    return out
