"""Exporting a model's networks to ONNX graphs, for :class:`~oscar_model.onnx_codec.OnnxCodec`.

One graph per network step, float32, with dynamic batch, height and width:

    autoencoder_encoder   image in [-1, 1] (B, 3, H, W)        -> latents z (B, C, H/8, W/8)
    level_<i>_encoder     z                                    -> int64 indices (B, G, h, w)
    level_<i>_decoder     int64 indices                        -> z~ (before the norm rescaling)
    denoiser              z_t, int64 timesteps (B,)            -> the clean latent x0 (one step)
    autoencoder_decoder   latents                              -> image in about [-1, 1]

plus ``runtime.json``: the model hash the graphs were exported from (the cache's key and the
check that they belong to the model folder), the stride and the latent geometry. The glue
between the graphs (norm rescaling, tiles, entropy coding) is numpy in the codec, shared with
torch. Only models whose networks are the compact ones of oscar-tiny are exported
(:func:`~oscar_model.onnx_codec.exportable`); the SD 2.1 model runs in torch.

Written with torch's TorchScript-based exporter (``dynamo=False``): it traces these plain
convolutional networks with dynamic sizes in about two seconds and needs no extra package.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from .denoiser import predict_clean_latent
from .model import OscarModel
from .onnx_codec import EXPORT_FORMAT, RUNTIME_MANIFEST, exportable

__all__ = ["export_onnx", "ONNX_OPSET"]

ONNX_OPSET = 17


class _Encoder(nn.Module):
    def __init__(self, model: OscarModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_latents(images)


class _Decoder(nn.Module):
    def __init__(self, model: OscarModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.decode_latents(latents)


class _Denoiser(nn.Module):
    def __init__(self, model: OscarModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, z_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        cfg = self.model.config
        return predict_clean_latent(self.model.denoiser, cfg.schedule, z_t, timesteps, cfg.prediction_type)


class _LevelEncoder(nn.Module):
    def __init__(self, hyper_encoder: nn.Module) -> None:
        super().__init__()
        self.hyper_encoder = hyper_encoder

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.hyper_encoder.encode(latents)


class _LevelDecoder(nn.Module):
    def __init__(self, hyper_encoder: nn.Module) -> None:
        super().__init__()
        self.hyper_encoder = hyper_encoder

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        he = self.hyper_encoder
        return he.decode_codes(he.quantizer.gather_codes(indices))


def _export(module: nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str], dynamic: dict, path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic (sizes stay dynamic)
        torch.onnx.export(module.eval(), inputs, str(path), input_names=names[:-1], output_names=names[-1:],
                          dynamic_axes=dynamic, opset_version=ONNX_OPSET, dynamo=False)


@torch.inference_mode(False)
def export_onnx(model: OscarModel, folder: str | Path) -> Path:
    """Writes ``model``'s graphs and ``runtime.json`` into ``folder`` (replaced whole, atomically:
    a reader sees the old export or the new one, never half of one). Returns ``folder``."""
    if not exportable(model.config):
        raise ValueError(f"{model.config.name}: only oscar-tiny's compact networks export to ONNX; run it with --runtime torch")
    folder = Path(folder)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    t0 = time.perf_counter()
    model = model.cpu().eval()
    f, stride = int(model.autoencoder.downscale), model.stride
    image = torch.zeros(1, 3, 2 * stride, 2 * stride)
    bhw = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        z = model.encode_latents(image)
        _export(_Encoder(model), (image,), ["images", "latents"], {"images": bhw, "latents": bhw},
                partial / "autoencoder_encoder.onnx")
        _export(_Decoder(model), (z,), ["latents", "images"], {"latents": bhw, "images": bhw},
                partial / "autoencoder_decoder.onnx")
        t = torch.full((1,), model.ladder.get(0).timestep, dtype=torch.long)
        _export(_Denoiser(model), (z, t), ["z_t", "timesteps", "latents"],
                {"z_t": bhw, "timesteps": {0: "batch"}, "latents": bhw}, partial / "denoiser.onnx")
        for point, he in zip(model.ladder, model.hyper_encoders):
            indices = he.encode(z)
            _export(_LevelEncoder(he), (z,), ["latents", "indices"], {"latents": bhw, "indices": bhw},
                    partial / f"level_{point.index}_encoder.onnx")
            _export(_LevelDecoder(he), (indices,), ["indices", "z_tilde"], {"indices": bhw, "z_tilde": bhw},
                    partial / f"level_{point.index}_decoder.onnx")
    manifest = {
        "format": EXPORT_FORMAT,
        "model": model.config.name,
        "model_hash": model.model_hash,
        "stride": stride,
        "latent_factor": f,
        "latent_channels": int(model.autoencoder.latent_channels),
        "opset": ONNX_OPSET,
        "exported_with": f"torch {torch.__version__}",
        "export_seconds": round(time.perf_counter() - t0, 2),
    }
    (partial / RUNTIME_MANIFEST).write_text(json.dumps(manifest, indent=1))
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    partial.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder
