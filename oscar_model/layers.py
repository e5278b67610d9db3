"""Small building blocks shared by the OSCAR networks.

These are the few layers OSCAR borrows from CompressAI (residual blocks, the residual
bottleneck block, a light attention block), written here so the codec does not depend on
compressai at run time (it pins numpy<2 and hard-requires torchvision).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "conv3x3",
    "conv1x1",
    "ResidualBlock",
    "ResidualBottleneckBlock",
    "AttentionBlock",
    "PixelShuffleUp",
]


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with 'same' padding (stride 2 halves the size)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution (a per-position linear map)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection; no normalisation (fast on CPU)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.conv1(x))
        out = self.conv2(out)
        return x + out


class ResidualBottleneckBlock(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck with a skip (CompressAI's / PerCo's hyper-encoder block)."""

    def __init__(self, channels: int, bottleneck: int | None = None) -> None:
        super().__init__()
        mid = bottleneck or max(channels // 2, 8)
        self.conv1 = conv1x1(channels, mid)
        self.conv2 = conv3x3(mid, mid)
        self.conv3 = conv1x1(mid, channels)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.conv1(x))
        out = self.act(self.conv2(out))
        out = self.conv3(out)
        return x + out


class AttentionBlock(nn.Module):
    """Single-head spatial self-attention with a residual connection.

    Used once at the coarsest resolution of a hyper-encoder so a code can see the whole
    image; ``scaled_dot_product_attention`` keeps memory linear on recent torch.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(num_groups=min(8, channels), num_channels=channels)
        self.to_qkv = conv1x1(channels, 3 * channels)
        self.to_out = conv1x1(channels, channels)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.to_qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(dim=1)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2).unsqueeze(1), k.transpose(1, 2).unsqueeze(1), v.transpose(1, 2).unsqueeze(1)
        )
        out = out.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.to_out(out)


class PixelShuffleUp(nn.Module):
    """Doubles the resolution: a 1x1 conv to 4x channels, then pixel shuffle (no checkerboard)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = conv1x1(in_ch, out_ch * 4)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))
