"""Image quality metrics, always computed between the decoded image and ITS OWN original.

PSNR and MS-SSIM are on RGB in [0, 255]. MS-SSIM uses the standard 5 scales and 11-px window
where the image allows it (min side > 160) and fewer scales below that (reported as such).
LPIPS and DISTS are computed only where their packages and backbone weights are already on
this machine; otherwise they are None - never a made-up number.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from pytorch_msssim import ms_ssim

__all__ = ["psnr", "ms_ssim_rgb", "perceptual_metrics", "perceptual_available"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"PSNR of images of different shapes {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ms_ssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM on RGB uint8 images; NaN for images too small for even one 3-px window."""
    if a.shape != b.shape:
        raise ValueError(f"MS-SSIM of images of different shapes {a.shape} vs {b.shape}")
    side = min(a.shape[:2])
    win = 11 if side > 160 else 7 if side > 96 else 3
    scales = 5
    while scales > 1 and side <= (win - 1) * 2 ** (scales - 1):
        scales -= 1
    if side < win:
        return float("nan")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales])
    ta = torch.from_numpy(a).permute(2, 0, 1)[None].double()
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].double()
    if scales == 1:
        from pytorch_msssim import ssim

        return float(ssim(ta, tb, data_range=255.0, win_size=win))
    return float(ms_ssim(ta, tb, data_range=255.0, win_size=win, weights=(weights / weights.sum()).tolist()))


@lru_cache(maxsize=1)
def _lpips_model():
    try:
        import lpips  # noqa: F401

        return lpips.LPIPS(net="alex", verbose=False, pretrained=True).eval()
    except Exception:  # package missing or weights not on disk (no download here)
        return None


def perceptual_available() -> dict[str, bool]:
    return {"lpips": _lpips_model() is not None, "dists": False}


def perceptual_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """LPIPS (Alex) where available; DISTS is not wired yet (always None)."""
    model = _lpips_model()
    lp = None
    if model is not None:
        ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1
        tb = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 127.5 - 1
        with torch.inference_mode():
            lp = float(model(ta, tb))
    return {"lpips": lp, "dists": None}
