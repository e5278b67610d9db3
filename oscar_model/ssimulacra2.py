"""SSIMULACRA2, the perceptual metric of libjxl (Cloudinary), in torch: batched and differentiable.

Why our own: the audit and the quality targets measure it on every decoded image (dozens per
photo), so it has to be fast and take arrays, not file paths; and training can use it as a
loss (:func:`weighted_error`), which a numpy implementation cannot be. It lives in the codec
package so that both use one implementation; it imports torch only when called. This is the
published algorithm (libjxl ``tools/ssimulacra2.cc``): both images go to linear RGB, then,
at six scales (halved each time, in linear light), to libjxl's XYB made positive; per scale
and channel it compares blurred means and variances (an SSIM map without the luminance
term's denominator) and the local edge energy of each image (ringing where the distorted
image has edges the original has not, blur where it lost them); the L1 and L4 norms of
those three maps, 108 numbers, are weighted and mapped to a score: 100 for identical images,
90 visually lossless, 70 high, 50 medium, 30 low quality, negative for very low quality.

The constants are the metric's definition (libjxl's opsin absorbance matrix and the 108
fitted weights; with fewer than six scales, on images under 256 pixels a side, the weights are
taken in order, as libjxl does); ``tests/test_perceptual_metrics.py`` checks this code against the
independent PyPI ``ssimulacra2`` package, which it matches to 0.001 on Kodak. Where libjxl
runs a recursive approximation of the Gaussian blur (sigma 1.5), both run the exact kernel
with that package's borders: zeros beyond the left and right edges, mirrored rows at the top
and bottom.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ssimulacra2", "weighted_error", "score_of"]

_OPSIN = ((0.30, 0.622, 0.078), (0.23, 0.692, 0.078), (0.24342268924547819, 0.20476744424496821, 0.5518098665095536))
_OPSIN_BIAS = 0.0037930732552754493
_C2 = 0.0009
_SCALES = 6
_SIGMA = 1.5
_EPS = 1e-20
_WEIGHTS = (
    0.0, 0.0007376606707406586, 0.0, 0.0, 0.0007793481682867309, 0.0, 0.0, 0.0004371155730107379, 0.0,
    1.1041726426657346, 0.00066284834129271, 0.00015231632783718752, 0.0, 0.0016406437456599754, 0.0,
    1.8422455520539298, 11.441172603757666, 0.0, 0.0007989109436015163, 0.000176816438078653, 0.0,
    1.8787594979546387, 10.94906990605142, 0.0, 0.0007289346991508072, 0.9677937080626833, 0.0,
    0.00014003424285435884, 0.9981766977854967, 0.00031949755934435053, 0.0004550992113792063, 0.0, 0.0,
    0.0013648766163243398, 0.0, 0.0, 0.0, 0.0, 0.0, 7.466890328078848, 0.0, 17.445833984131262,
    0.0006235601634041466, 0.0, 0.0, 6.683678146179332, 0.00037724407979611296, 1.027889937768264,
    225.20515300849274, 0.0, 0.0, 19.213238186143016, 0.0011401524586618361, 0.001237755635509985,
    176.39317598450694, 0.0, 0.0, 24.43300999870476, 0.28520802612117757, 0.0004485436923833408, 0.0, 0.0, 0.0,
    34.77906344483772, 44.835625328877896, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0008680556573291698,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0005313191874358747, 0.0, 0.00016533814161379112, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0004179171803251336, 0.0017290828234722833, 0.0, 0.0020827005846636437, 0.0, 0.0, 8.826982764996862,
    23.19243343998926, 0.0, 95.1080498811086, 0.9863978034400682, 0.9834382792465353, 0.0012286405048278493,
    171.2667255897307, 0.9807858872435379, 0.0, 0.0, 0.0, 0.0005130064588990679, 0.0, 0.00010854057858411537,
)
"""Ordered channel (X, Y, B), then scale, then norm (L1, L4), then map (SSIM, ringing, blur)."""


def _linear(rgb):
    """sRGB in [0, 1] -> linear light (the sRGB curve)."""
    import torch

    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp_min(0) + 0.055) / 1.055) ** 2.4)


def _positive_xyb(linear):
    import torch

    m = torch.tensor(_OPSIN, dtype=linear.dtype, device=linear.device)
    mixed = (torch.einsum("ij,bjhw->bihw", m, linear) + _OPSIN_BIAS).clamp_min(1e-12)
    mixed = mixed.pow(1 / 3) - _OPSIN_BIAS ** (1 / 3)
    x = 0.5 * (mixed[:, 0] - mixed[:, 1])
    y = 0.5 * (mixed[:, 0] + mixed[:, 1])
    b = mixed[:, 2]
    return torch.stack([x * 14 + 0.42, y + 0.01, (b - y) + 0.55], dim=1)


def _blur(planes):
    """Gaussian blur (sigma 1.5, radius 5) of (N, C, H, W), separably: rows mirrored, columns zero-padded."""
    import torch
    from torch.nn import functional as F

    radius = int(round(3.2795 * _SIGMA + 0.2546))
    taps = torch.arange(-radius, radius + 1, dtype=planes.dtype, device=planes.device)
    kernel = torch.exp(-0.5 * (taps / _SIGMA) ** 2)
    kernel = kernel / kernel.sum()
    c = planes.shape[1]
    pad_h = min(radius, planes.shape[2])
    out = torch.cat([planes[..., :pad_h, :].flip(-2), planes, planes[..., -pad_h:, :].flip(-2)], dim=-2)  # mirrored
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c, padding=(0, radius))  # zeros


def _norms(plane):
    """Per image and channel: the L1 and L4 means of a non-negative (N, 3, H, W) map -> (N, 3, 2)."""
    import torch

    l1 = plane.mean(dim=(2, 3))
    l4 = (plane.pow(4).mean(dim=(2, 3)) + _EPS).pow(0.25) - _EPS**0.25  # the epsilon keeps the gradient finite at 0
    return torch.stack([l1, l4], dim=-1)


def weighted_error(original, distorted):
    """The weighted sum of SSIMULACRA2's 108 features per image, before its final mapping: 0 for
    identical images, larger for worse ones; differentiable, for training.

    ``original`` and ``distorted``: (N, 3, H, W) sRGB in [0, 1], any float type and device.
    """
    import torch
    from torch.nn import functional as F

    lin1, lin2 = _linear(original), _linear(distorted)
    per_scale = []  # per scale: (N, channel, norm, map) with maps ssim, ringing, blur
    for scale in range(_SCALES):
        if scale:
            lin1, lin2 = F.avg_pool2d(lin1, 2, ceil_mode=True), F.avg_pool2d(lin2, 2, ceil_mode=True)
        if min(lin1.shape[2:]) < 8:
            break
        a, b = _positive_xyb(lin1), _positive_xyb(lin2)
        mu1, mu2, s11, s22, s12 = _blur(torch.cat([a, b, a * a, b * b, a * b], dim=1)).split(3, dim=1)
        num_m = 1 - (mu1 - mu2) ** 2
        num_s = 2 * (s12 - mu1 * mu2) + _C2
        den_s = (s11 - mu1 * mu1) + (s22 - mu2 * mu2) + _C2
        ssim_map = (1 - num_m * num_s / den_s).clamp_min(0)
        ratio = (1 + (b - mu2).abs()) / (1 + (a - mu1).abs()) - 1
        maps = [_norms(ssim_map), _norms(ratio.clamp_min(0)), _norms((-ratio).clamp_min(0))]
        per_scale.append(torch.stack(maps, dim=-1))  # (N, 3, 2, 3)
    features = torch.stack(per_scale, dim=2).flatten(1)  # (N, channel, scale, norm, map) in the weights' order
    weights = torch.tensor(_WEIGHTS[: features.shape[1]], dtype=features.dtype, device=features.device)
    return features.abs() @ weights


def score_of(error):
    """SSIMULACRA2's mapping of :func:`weighted_error` to its score (100 = identical)."""
    import torch

    x = error * 0.9562382616834844
    x = 2.326765642916932 * x - 0.020884521182843837 * x**2 + 6.248496625763138e-05 * x**3
    return torch.where(x > 0, 100 - 10 * x.clamp_min(1e-12).pow(0.6276336467831387), torch.full_like(x, 100.0))


def ssimulacra2(original: np.ndarray, distorted: np.ndarray) -> float:
    """SSIMULACRA2 of ``distorted`` against ``original`` (RGB uint8, same shape): at most 100."""
    import torch

    if original.shape != distorted.shape:
        raise ValueError(f"SSIMULACRA2 of images of different shapes {original.shape} vs {distorted.shape}")
    with torch.inference_mode():
        pair = [torch.from_numpy(np.array(x, copy=True)).to(torch.float32).div_(255).permute(2, 0, 1)[None]
                for x in (original, distorted)]
        return float(score_of(weighted_error(*pair))[0])
