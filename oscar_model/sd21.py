"""The published OSCAR's denoiser: Stable Diffusion 2.1's UNet with three LoRA adapters, a
trained ``conv_in`` and a learned 77-token prompt embedding in place of text.

A model folder's ``denoiser/`` holds ``lora.json`` (rank, alpha, each adapter's target
modules), ``lora.safetensors`` (the adapters' weights, ``conv_in`` and the prompt embedding)
and either ``unet/`` (SD 2.1's UNet, copied) or ``base.json`` (where it lies on this machine).
The adapters are attached with peft, loaded, and merged into the UNet's weights for inference
(:meth:`LoraConditionedUNet.merge_adapters`): one forward pass then costs what SD's does.
Base weights are read from safetensors only (``use_safetensors=True``); a ``.bin`` (pickle)
UNet is refused by diffusers before anything is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["LoraConditionedUNet", "LoraSpec", "release_lora_targets", "load_base", "base_of", "write_base_reference"]

BASE_REFERENCE = "base.json"
LORA_CONFIG = "lora.json"
LORA_WEIGHTS = "lora.safetensors"
EMBEDDING_KEY = "prompt_embedding"


LORA_PATTERNS = ("to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut", "conv_out",
                 "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj")


def release_lora_targets(unet: nn.Module) -> dict[str, list[str]]:
    """The release's three adapters' target modules: weights (no bias, no norm) whose names hold
    one of ``LORA_PATTERNS``, split into down blocks + conv_in / up blocks + conv_out / the rest.
    A converted checkpoint brings its own lists; this builds them for new models and tests."""
    targets: dict[str, list[str]] = {"default_encoder": [], "default_decoder": [], "default_others": []}
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name or not any(p in name for p in LORA_PATTERNS):
            continue
        group = ("default_encoder" if "down_blocks" in name or "conv_in" in name
                 else "default_decoder" if "up_blocks" in name or "conv_out" in name else "default_others")
        targets[group].append(name.replace(".weight", ""))
    return targets


def write_base_reference(folder: Path, base: Path, subfolder: str) -> None:
    """Records that ``folder``'s network is ``base/subfolder`` on this machine (not copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BASE_REFERENCE).write_text(json.dumps({"path": str(Path(base).resolve()), "subfolder": subfolder}, indent=1))


def base_of(folder: Path) -> Path | None:
    """The Stable Diffusion folder ``folder`` refers to, or None when it holds its own copy."""
    reference = Path(folder) / BASE_REFERENCE
    return Path(json.loads(reference.read_text())["path"]) if reference.exists() else None


def load_base(cls, folder: Path):
    """``cls.from_pretrained`` on ``folder`` itself (copied weights) or on what its base.json names."""
    folder = Path(folder)
    reference = folder / BASE_REFERENCE
    if reference.exists():
        ref = json.loads(reference.read_text())
        source = Path(ref["path"]) / ref["subfolder"]
        if not source.exists():
            raise FileNotFoundError(
                f"{folder} refers to Stable Diffusion 2.1 weights at {source}, which are not on this machine: "
                "put them back there, or convert again with --copy-base"
            )
        folder = source
    return cls.from_pretrained(str(folder), use_safetensors=True, low_cpu_mem_usage=False)


class LoraSpec:
    """The adapters of the released UNet: name -> target module names, rank and alpha."""

    def __init__(self, adapters: dict[str, list[str]], rank: int, alpha: float) -> None:
        self.adapters, self.rank, self.alpha = adapters, int(rank), float(alpha)

    def to_json(self) -> str:
        return json.dumps({"rank": self.rank, "alpha": self.alpha, "adapters": self.adapters}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LoraSpec:
        d = json.loads(text)
        return cls(d["adapters"], d["rank"], d["alpha"])


class LoraConditionedUNet(nn.Module):
    """SD's ``UNet2DConditionModel`` conditioned on a learned embedding, with LoRA adapters.

    Called like the compact denoiser, ``denoiser(z_t, timesteps).sample``: the embedding is
    expanded over the batch as ``encoder_hidden_states``.
    """

    def __init__(
        self, unet: nn.Module, prompt_embedding: torch.Tensor, lora: LoraSpec | None = None, base: Path | None = None
    ) -> None:
        super().__init__()
        self.unet = unet
        self.base = base
        self.prompt_embedding = nn.Parameter(prompt_embedding.detach().clone(), requires_grad=False)
        self.lora = lora
        self.merged = False
        if lora is not None:
            import warnings

            from peft import LoraConfig

            with warnings.catch_warnings():  # peft warns that a second adapter joins the first: three is the design
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                for name, modules in lora.adapters.items():
                    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=modules)
                    unet.add_adapter(config, adapter_name=name)
            unet.set_adapter(list(lora.adapters))  # every adapter active, as the release trains them

    @property
    def config(self):
        return self.unet.config

    def forward(self, z_t: torch.Tensor, timesteps: torch.Tensor):
        context = self.prompt_embedding.to(z_t.dtype).unsqueeze(0).expand(z_t.shape[0], -1, -1)
        return self.unet(z_t, timesteps, encoder_hidden_states=context)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """What the release trains: LoRA weights, ``conv_in`` (base layer included) and the embedding."""
        if self.merged:
            raise RuntimeError("adapters are merged into the UNet; their weights can no longer be told apart")
        out = {k: v for k, v in self.unet.state_dict().items() if "lora" in k or k.startswith("conv_in.")}
        out[EMBEDDING_KEY] = self.prompt_embedding.data
        return out

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        """Loads :meth:`adapter_state`'s tensors; every key must exist in the UNet, and every
        LoRA tensor of the UNet must be given."""
        own = self.unet.state_dict()
        tensors = {k: v for k, v in state.items() if k != EMBEDDING_KEY}
        unknown = sorted(set(tensors) - set(own))
        missing = sorted(k for k in own if "lora" in k and k not in tensors)
        if unknown or missing:
            raise ValueError(f"LoRA weights do not fit this UNet: unknown {unknown[:3]}, missing {missing[:3]}")
        self.unet.load_state_dict(tensors, strict=False)
        if EMBEDDING_KEY in state:
            if state[EMBEDDING_KEY].shape != self.prompt_embedding.shape:
                raise ValueError(f"prompt embedding {tuple(state[EMBEDDING_KEY].shape)} != {tuple(self.prompt_embedding.shape)}")
            self.prompt_embedding.data.copy_(state[EMBEDDING_KEY])

    def merge_adapters(self) -> None:
        """Folds every adapter into the base weights and removes the LoRA layers (faster)."""
        if self.lora is None or self.merged:
            return
        self.unet.fuse_lora(adapter_names=list(self.lora.adapters))
        self.unet.unload_lora()
        self.merged = True

    # ------------------------------------------------------------------ model folder
    def save_pretrained(self, folder: str | Path) -> None:
        """Writes the adapters, and SD's UNet as a copy, or as a reference when ``base`` is set."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.lora is None:
            raise ValueError("a LoraConditionedUNet without adapters cannot be saved as one")
        if self.base is not None:
            write_base_reference(folder / "unet", self.base, "unet")
        else:
            base_unet = _without_adapters(self.unet)
            base_unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
        (folder / LORA_CONFIG).write_text(self.lora.to_json())
        save_file({k: v.detach().contiguous().cpu() for k, v in self.adapter_state().items()}, str(folder / LORA_WEIGHTS))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LoraConditionedUNet:
        from diffusers import UNet2DConditionModel

        folder = Path(folder)
        unet = load_base(UNet2DConditionModel, folder / "unet")
        state = load_file(str(folder / LORA_WEIGHTS))
        spec = LoraSpec.from_json((folder / LORA_CONFIG).read_text())
        model = cls(unet, state[EMBEDDING_KEY], spec, base_of(folder / "unet"))
        model.load_adapter_state(state)
        return model


def _without_adapters(unet: nn.Module) -> nn.Module:
    """A copy of ``unet`` with its LoRA layers removed (base weights only, conv_in as trained)."""
    import copy

    clone = copy.deepcopy(unet)
    clone.unload_lora()
    return clone
