"""Tiny Stable-Diffusion-shaped models and a fake OSCAR checkpoint in the released layout.

Nothing here is downloaded: the VAE, UNet and scheduler are built in code with SD 2.1's
structure at toy widths, and the checkpoint dict has the keys the authors' ``save_model``
writes (hyper-encoders as vector-quantize-pytorch names them, three LoRA adapters chosen by
the release's rules, the learned prompt, ``conv_in``), saved with ``torch.save``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_UNET = dict(
    block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
    layers_per_block=1, norm_num_groups=8, in_channels=4, out_channels=4, sample_size=32,
)
TINY_VAE = dict(
    block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=8, layers_per_block=1,
    scaling_factor=0.18215,
)
SCHEDULER = {
    "_class_name": "DDPMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "prediction_type": "v_prediction", "clip_sample": False,
}


def write_tiny_sd21(folder: Path, seed: int = 0) -> Path:
    """A diffusers-layout SD 2.1 stand-in: vae/, unet/ (safetensors), scheduler/."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    AutoencoderKL(**TINY_VAE).save_pretrained(folder / "vae", safe_serialization=True)
    UNet2DConditionModel(**TINY_UNET).save_pretrained(folder / "unet", safe_serialization=True)
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER))
    return folder


def released_hyper_encoder_state(he) -> dict[str, torch.Tensor]:
    """A released hyper-encoder's weights: ``he``'s backbone and proj (the release builds them
    from compressai, under these names) and a quantiser built by the release's own building
    block, vector-quantize-pytorch 1.22.3's ``VectorQuantize`` (cosine similarity, its
    projections), stored under that library's names - not derived from our quantiser."""
    from vector_quantize_pytorch import VectorQuantize

    cfg = he.config
    vq = VectorQuantize(dim=cfg.hyper_dim, codebook_size=cfg.codebook_size, use_cosine_sim=True,
                        codebook_dim=cfg.codebook_dim)
    out = {k: v.clone() for k, v in he.state_dict().items() if k.startswith(("backbone.", "proj."))}
    out.update({f"quantizer.{k}": v.clone() for k, v in vq.state_dict().items()})
    return out


def write_official_checkpoint(path: Path, seed: int = 0, rank: int = 4) -> dict:
    """A checkpoint dict in the released layout (random weights, LoRA B non-zero), torch.save'd."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    from oscar_model.convert import OFFICIAL_LADDER
    from oscar_model.perco import PercoHyperEncoder
    from oscar_model.sd21 import release_lora_targets

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET)
    targets = release_lora_targets(unet)
    for adapter, modules in targets.items():
        unet.add_adapter(LoraConfig(r=rank, init_lora_weights="gaussian", target_modules=modules), adapter_name=adapter)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:  # the release initialises B to zero; a trained B is not
                p.normal_(0, 0.05)
            if name.startswith("conv_in.base_layer"):
                p.mul_(1.1)  # conv_in is trained in full
    hyper = {}
    for point in OFFICIAL_LADDER:
        he = PercoHyperEncoder(downsample=point.downsample, channels=16, hyper_dim=16, codebook_size=point.codebook_size,
                               codebook_dim=8)
        hyper.update({f"{point.index}.{k}": v for k, v in released_hyper_encoder_state(he).items()})
    ckpt = {
        "hyper_encoders": hyper,
        "embeddings": torch.nn.Parameter(torch.randn(77, TINY_UNET["cross_attention_dim"]) * 0.02),
        "unet_lora_encoder_modules": targets["default_encoder"], "unet_lora_decoder_modules": targets["default_decoder"],
        "unet_lora_others_modules": targets["default_others"],
        "rank_unet": rank,
        "state_dict_unet": {k: v for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k},
    }
    torch.save(ckpt, path)
    return ckpt
