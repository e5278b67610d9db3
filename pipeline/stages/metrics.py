"""Image quality metrics, always computed between the decoded image and ITS OWN original.

Which metrics a job measures is its choice (``--metrics``, :func:`chosen_metrics`): by default
every one that runs here. PSNR and MS-SSIM are on RGB in [0, 255]. The perceptual ones need no
downloaded weights: SSIMULACRA2 (our torch implementation, :mod:`oscar_model.ssimulacra2`; higher is
better, 100 = identical), NVIDIA's FLIP (the ``flip-evaluator`` package, mean error over the
image at 67 pixels per degree; lower is better) and Butteraugli (libjxl's ``butteraugli_main``
where it is installed, its 3-norm; lower is better, below 1 is visually lossless). MS-SSIM uses the standard 5 scales and 11-px window
where the image allows it (min side > 160) and fewer scales below that (reported as such).
LPIPS (AlexNet, the ``lpips`` package) and DISTS (the ``piq`` package) are computed only where
their packages import and their backbone weights are already on this machine; otherwise they
are None - never a made-up number. torch is imported only when a metric needs it, so the
light read tasks that import this package do not pay for it.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache

import numpy as np

__all__ = ["QUALITY_METRICS", "METRIC_RANGES", "psnr", "ms_ssim_rgb", "flip_error", "butteraugli", "perceptual_metrics",
           "perceptual_available", "metric_available", "chosen_metrics", "quality_of", "finite"]

QUALITY_METRICS = {"psnr": +1, "ms_ssim": +1, "ssimulacra2": +1, "flip": -1, "butteraugli": -1, "lpips": -1,
                   "dists": -1}
"""The quality metrics every table carries: +1 where higher is better, -1 where lower is."""
METRIC_RANGES = {"psnr": (0.0, None), "ms_ssim": (0.0, 1.0), "ssimulacra2": (None, 100.0), "flip": (0.0, 1.0),
                 "butteraugli": (0.0, None), "lpips": (0.0, 1.0), "dists": (0.0, 1.0)}
"""The values each metric can take (None: unbounded): a quality target outside them can never be met
(PSNR is infinite only for an identical image, so a target bar is finite)."""

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ValueError(f"PSNR of images of different shapes {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ms_ssim_rgb(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM on RGB uint8 images; NaN for images too small for even one 3-px window.

    Fewer scales on small images; pytorch_msssim's ms_ssim asserts side > 16 * (win - 1)
    whatever the number of scales, so at or below that (images of 3-32 px) this is the SSIM
    at one scale. Before, such an image raised in the verify actor and aborted the whole job.
    """
    import torch
    from pytorch_msssim import ms_ssim, ssim

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
    # float32: 5x faster than float64 (0.17 s against 0.83 s on a 768x512 image, one thread), and
    # the value differs by about 1e-7; the audit measures some 60 images' worth per photo.
    ta = torch.tensor(a).permute(2, 0, 1)[None].float()
    tb = torch.tensor(b).permute(2, 0, 1)[None].float()
    if scales == 1 or side <= (win - 1) * 16:
        return float(ssim(ta, tb, data_range=255.0, win_size=win))
    return float(ms_ssim(ta, tb, data_range=255.0, win_size=win, weights=(weights / weights.sum()).tolist()))


@lru_cache(maxsize=1)
def _lpips_model():
    try:
        import lpips

        return lpips.LPIPS(net="alex", verbose=False, pretrained=True).eval()
    except Exception:  # package or torchvision missing, or weights not on disk (no download here)
        return None


@lru_cache(maxsize=1)
def _dists_model():
    try:
        import piq

        return piq.DISTS(reduction="none").eval()
    except Exception:  # package or torchvision missing, or VGG weights not on disk
        return None


def perceptual_available() -> dict[str, bool]:
    return {"lpips": _lpips_model() is not None, "dists": _dists_model() is not None}


def perceptual_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float | None]:
    """LPIPS-Alex and DISTS where each is available, else None."""
    lpips_model, dists_model = _lpips_model(), _dists_model()
    out: dict[str, float | None] = {"lpips": None, "dists": None}
    if lpips_model is None and dists_model is None:
        return out
    import torch

    ta = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    tb = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        if lpips_model is not None:
            out["lpips"] = float(lpips_model(ta * 2 - 1, tb * 2 - 1))
        if dists_model is not None:
            out["dists"] = float(dists_model(ta, tb))
    return out


def flip_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean FLIP error (LDR, 67 pixels per degree: a 0.7 m view of a 24" monitor), 0 = identical."""
    import flip_evaluator

    _, mean, _ = flip_evaluator.evaluate(a.astype(np.float32) / 255, b.astype(np.float32) / 255, "LDR",
                                         applyMagma=False)
    return float(mean)


BUTTERAUGLI = "butteraugli_main"
"""libjxl's Butteraugli tool (Debian: ``libjxl-devtools``); no Python binding of it is packaged."""


def butteraugli(a: np.ndarray, b: np.ndarray) -> float | None:
    """Butteraugli's 3-norm of ``b`` against ``a``, or None where the tool is not installed."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from PIL import Image

    tool = shutil.which(BUTTERAUGLI)
    if tool is None:
        return None
    with tempfile.TemporaryDirectory(prefix="butteraugli-") as tmp:
        paths = [Path(tmp) / "reference.png", Path(tmp) / "distorted.png"]
        for path, image in zip(paths, (a, b)):
            Image.fromarray(image).save(path, compress_level=1)
        out = subprocess.run([tool, *map(str, paths), "--pnorm", "3"], capture_output=True, text=True, timeout=600,
                             check=True).stdout
    for line in out.splitlines():
        if line.startswith("3-norm:"):
            return float(line.split(":", 1)[1])
    raise RuntimeError(f"{BUTTERAUGLI} printed no 3-norm: {out[:200]!r}")


@cache
def metric_available(name: str) -> bool:
    """Whether ``name`` can be measured here (its package, tool or weights are present)."""
    if name in ("psnr", "ms_ssim", "ssimulacra2"):
        return True
    if name == "flip":
        try:
            import flip_evaluator  # noqa: F401
        except ImportError:
            return False
        return True
    if name == "butteraugli":
        import shutil

        return shutil.which(BUTTERAUGLI) is not None
    if name in ("lpips", "dists"):
        return perceptual_available()[name]
    raise ValueError(f"unknown metric {name!r}; choose from {', '.join(QUALITY_METRICS)}")


def chosen_metrics(asked: tuple[str, ...] | None, needed: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The metrics a job measures: ``asked`` (None: every one available here) plus ``needed`` (a
    target's metric). An unknown name, or one asked for by name that cannot run here, is refused."""
    unknown = sorted(set(asked or ()) - set(QUALITY_METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(QUALITY_METRICS)}")
    if asked is None:
        return tuple(m for m in QUALITY_METRICS if m in needed or metric_available(m))
    missing = [m for m in (*asked, *needed) if not metric_available(m)]
    if missing:
        raise ValueError(f"cannot measure {', '.join(missing)} here: " + "; ".join(_WHY_MISSING[m] for m in missing))
    return tuple(m for m in QUALITY_METRICS if m in asked or m in needed)


_WHY_MISSING = {
    "flip": "flip needs the flip-evaluator package",
    "butteraugli": f"butteraugli needs libjxl's {BUTTERAUGLI} on the PATH (Debian: apt-get install libjxl-devtools)",
    "lpips": "lpips needs the 'perceptual' extra and its AlexNet weights on every node",
    "dists": "dists needs the 'perceptual' extra and its VGG weights on every node",
}


def quality_of(original: np.ndarray, decoded: np.ndarray,
               metrics: tuple[str, ...] = ("psnr", "ms_ssim")) -> dict[str, float | None]:
    """The ``metrics`` of ``decoded`` against its own ``original``; every other metric None."""
    from oscar_model.ssimulacra2 import ssimulacra2

    out: dict[str, float | None] = dict.fromkeys(QUALITY_METRICS)
    measure = {"psnr": psnr, "ms_ssim": ms_ssim_rgb, "ssimulacra2": ssimulacra2, "flip": flip_error,
               "butteraugli": butteraugli}
    for name in metrics:
        if name in measure:
            out[name] = measure[name](original, decoded)
    if "lpips" in metrics or "dists" in metrics:
        learned = perceptual_metrics(original, decoded)
        out.update({k: v for k, v in learned.items() if k in metrics})
    return out


def finite(value: object) -> bool:
    """A measured number (not None, NaN or infinite): what a mean may include."""
    return value is not None and not (isinstance(value, float) and (math.isnan(value) or math.isinf(value)))
