"""Images per second of the codec's batch path on a GPU: encode, decode and both.

Usage:
    python benchmarks/gpu_throughput.py                                  # CUDA, both models, 768x512 and 1024x1024
    python benchmarks/gpu_throughput.py --device cpu --sizes 128x128 --images 2 --models tiny   # smoke run

Models: oscar-tiny (the shipped weights) and oscar-sd21 built here with Stable Diffusion 2.1's
real layer shapes (VAE, UNet with its three LoRA adapters merged, the released hyper-encoders)
and random weights: no download, the same work per image as the published model. Same-size
images are batched (--batch); decoding runs under bf16 autocast on CUDA (the codec's
``precision``, auto: bf16 on CUDA), encoding in fp32 so that indices do not depend on bf16 rounding. One warm-up
batch is not timed. Prints a table and writes gpu_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SD21_VAE = dict(
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    sample_size=768, scaling_factor=0.18215,
)
SD21_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    layers_per_block=2, use_linear_projection=True, upcast_attention=True, sample_size=96,
)


def sd21_shaped_model():
    """oscar-sd21 with SD 2.1's layer shapes and random weights (adapters merged, as loaded)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from oscar_model.autoencoder import DiffusersAutoencoder
    from oscar_model.config import CodecConfig
    from oscar_model.convert import LORA_ALPHA, OFFICIAL_LADDER, OFFICIAL_TILING
    from oscar_model.model import OscarModel
    from oscar_model.perco import PercoHyperEncoder
    from oscar_model.sd21 import LoraConditionedUNet, LoraSpec, release_lora_targets

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD21_UNET)
    denoiser = LoraConditionedUNet(unet, torch.randn(77, 1024) * 0.02, LoraSpec(release_lora_targets(unet), 16, LORA_ALPHA))
    hyper = [PercoHyperEncoder(downsample=p.downsample, codebook_size=p.codebook_size) for p in OFFICIAL_LADDER]
    config = CodecConfig(name="oscar-sd21 (random weights)", ladder=OFFICIAL_LADDER, autoencoder_type="diffusers-kl",
                         hyper_encoder_type="perco", denoiser_type="sd21-lora", tiling=dict(OFFICIAL_TILING))
    model = OscarModel(config, DiffusersAutoencoder(AutoencoderKL(**SD21_VAE)), hyper, denoiser)
    denoiser.merge_adapters()
    return model


def photos(n: int, width: int, height: int) -> list[np.ndarray]:
    """Crops of scikit-image's photos resized to the size (content matters little to speed)."""
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    return [np.asarray(Image.fromarray(sources[i % 4]).resize((width, height))) for i in range(n)]


def _seconds(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def measure(codec, images: list[np.ndarray], level: int, batch: int, device: torch.device) -> dict:
    """Encode and decode rates (images/s) of one model on same-size images, after a warm-up batch."""
    codec.decode(codec.encode(images[:batch], level, batch_size=batch), batch_size=batch)
    enc_s, streams = _seconds(lambda: codec.encode(images, level, batch_size=batch), device)
    dec_s, _ = _seconds(lambda: codec.decode(streams, batch_size=batch), device)
    n = len(images)
    return {"encode_img_s": round(n / enc_s, 2), "decode_img_s": round(n / dec_s, 2), "both_img_s": round(n / (enc_s + dec_s), 2),
            "bpp": round(float(np.mean([codec.bpp(s) for s in streams])), 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", default="tiny,sd21")
    p.add_argument("--sizes", default="768x512,1024x1024")
    p.add_argument("--images", type=int, default=32, help="timed images per size (after one warm-up batch)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--level", type=int, default=None, help="ladder level (default: the top one)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    from oscar_model.codec import OscarCodec
    from oscar_model.model import OscarModel

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --device cpu for a smoke run")
    rows = []
    for name in args.models.split(","):
        model = OscarModel.from_pretrained("oscar-tiny", device=device) if name == "tiny" else sd21_shaped_model().to(device).eval()
        codec = OscarCodec(model)
        level = len(codec.ladder) - 1 if args.level is None else args.level
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.split("x"))
            row = {"model": name, "size": size, "level": level,
                   **measure(codec, photos(args.images, width, height), level, args.batch, device)}
            row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.type == "cuda" else None
            rows.append(row)
            print(row, flush=True)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "none (CPU smoke run)"
    result = {"device": str(device), "gpu": gpu, "batch": args.batch, "images": args.images, "rows": rows,
              "command": "python benchmarks/gpu_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_throughput.json").write_text(json.dumps(result, indent=1))
    print(f"\ndevice: {gpu}\n| model | size | level | encode img/s | decode img/s | both img/s | bpp |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['size']} | {r['level']} | {r['encode_img_s']} | {r['decode_img_s']} | {r['both_img_s']} | {r['bpp']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
