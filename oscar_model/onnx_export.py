"""Exporting a model's networks to ONNX graphs, for :class:`~oscar_model.onnx_codec.OnnxCodec`.

One graph per network step, float32, with dynamic batch, height and width:

    autoencoder_encoder   image in [-1, 1] (B, 3, H, W)        -> latents z (B, C, H/8, W/8)
    level_<i>_encoder     z                                    -> int64 indices (B, G, h, w)
    level_<i>_decoder     int64 indices                        -> z~ (before the norm rescaling)
    denoiser              z_t, int64 timesteps (B,)            -> the clean latent x0 (one step)
    autoencoder_decoder   latents                              -> image in about [-1, 1]

and what :mod:`oscar_model.onnx_codec` records of them in ``runtime.json`` (the model hash they
were exported from, the stride and the latent geometry). The glue between the graphs (norm
rescaling, tiles, entropy coding) is numpy in the codec, shared with torch. Only the compact
networks of oscar-tiny's design are exported (:func:`oscar_model.onnx_codec.exportable`); the
SD 2.1 model runs in torch.

Written with torch's TorchScript-based exporter (``dynamo=False``): it traces these plain
convolutional networks with dynamic sizes in a few seconds and needs only the ``onnx`` package,
which also checks each graph once written (``onnx.checker``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from .denoiser import predict_clean_latent
from .model import OscarModel

__all__ = ["export_onnx", "ONNX_OPSET"]

ONNX_OPSET = 17


class _Step(nn.Module):
    """One network step as a module the exporter can trace: ``fn`` over ``owner``'s weights."""

    def __init__(self, owner: nn.Module, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.owner = owner
        self.fn = fn

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.fn(*inputs)


def _export(module: nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str], dynamic: dict, path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic (sizes stay dynamic)
        torch.onnx.export(module.eval(), inputs, str(path), input_names=names[:-1], output_names=names[-1:],
                          dynamic_axes=dynamic, opset_version=ONNX_OPSET, dynamo=False)
    onnx.checker.check_model(str(path))  # a malformed graph fails here, at export, not in a user's decode


@torch.inference_mode(False)
def export_onnx(model: OscarModel, folder: str | Path) -> dict[str, Any]:
    """Writes ``model``'s graphs into the existing folder ``folder``; returns what the codec needs
    to know of them (model hash, stride, latent geometry, how they were made)."""
    folder = Path(folder)
    t0 = time.perf_counter()
    model = model.cpu().eval()
    f, stride = int(model.autoencoder.downscale), model.stride
    image = torch.zeros(1, 3, 2 * stride, 2 * stride)
    bhw = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        z = model.encode_latents(image)
        _export(_Step(model, model.encode_latents), (image,), ["images", "latents"], {"images": bhw, "latents": bhw},
                folder / "autoencoder_encoder.onnx")
        _export(_Step(model, model.decode_latents), (z,), ["latents", "images"], {"latents": bhw, "images": bhw},
                folder / "autoencoder_decoder.onnx")
        t = torch.full((1,), model.ladder.get(0).timestep, dtype=torch.long)
        cfg = model.config
        denoise = _Step(model, lambda z_t, steps: predict_clean_latent(model.denoiser, cfg.schedule, z_t, steps,
                                                                       cfg.prediction_type))
        _export(denoise, (z, t), ["z_t", "timesteps", "latents"],
                {"z_t": bhw, "timesteps": {0: "batch"}, "latents": bhw}, folder / "denoiser.onnx")
        for point, he in zip(model.ladder, model.hyper_encoders):
            indices = he.encode(z)
            _export(_Step(he, he.encode), (z,), ["latents", "indices"], {"latents": bhw, "indices": bhw},
                    folder / f"level_{point.index}_encoder.onnx")
            lookup = _Step(he, lambda idx, he=he: he.decode_codes(he.quantizer.gather_codes(idx)))
            _export(lookup, (indices,), ["indices", "z_tilde"], {"indices": bhw, "z_tilde": bhw},
                    folder / f"level_{point.index}_decoder.onnx")
    return {
        "model": model.config.name,
        "model_hash": model.model_hash,
        "stride": stride,
        "latent_factor": f,
        "latent_channels": int(model.autoencoder.latent_channels),
        "opset": ONNX_OPSET,
        "exported_with": f"torch {torch.__version__}",
        "export_seconds": round(time.perf_counter() - t0, 2),
    }
