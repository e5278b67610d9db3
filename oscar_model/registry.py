"""What names mean: a model's name -> its folder, and a network's type name -> its class.

Named models:
``oscar-tiny`` ships inside the package. ``oscar-sd21`` (Stable Diffusion 2.1 with the
official OSCAR checkpoint) is made on the user's machine by ``oscar convert-official`` (which
reads the checkpoint with ``weights_only=True``) and placed at one of the paths below.
Look-up order for a name: ``$OSCAR_MODELS_DIR/<name>``, ``~/.cache/oscar/models/<name>``,
then the package's own ``weights/<name>``.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelEntry", "MODELS", "ModelWeightsMissing", "resolve_model_path", "search_paths", "CONFIG_NAME",
           "COMPONENT_TYPES", "component_class", "load_component", "check_types"]

CONFIG_NAME = "oscar.json"
PACKAGE_WEIGHTS = Path(__file__).parent / "weights"


class ModelWeightsMissing(FileNotFoundError):
    """A registered model whose weights are not on this machine."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    how_to_get: str


MODELS: dict[str, ModelEntry] = {
    "oscar-tiny": ModelEntry(
        "oscar-tiny",
        "our compact OSCAR (f8 autoencoder, per-rate hyper-encoders, one-step UNet), trained on BSDS500; CPU-friendly",
        "it ships with the package; retrain it with `python -m jobs.train` (see README, Training)",
    ),
    "oscar-sd21": ModelEntry(
        "oscar-sd21",
        "OSCAR on Stable Diffusion 2.1 (official checkpoint, LoRA + conv_in); needs a GPU and the 'sd21' extra",
        "`oscar convert-official --sd21 SD21_DIR --checkpoint OSCAR_CKPT --out ~/.cache/oscar/models/oscar-sd21`, "
        "then `oscar fit-tables --model ~/.cache/oscar/models/oscar-sd21 --images PHOTOS` (see README)",
    ),
}


def search_paths(name: str) -> list[Path]:
    paths = []
    if os.environ.get("OSCAR_MODELS_DIR"):
        paths.append(Path(os.environ["OSCAR_MODELS_DIR"]) / name)
    paths.append(Path.home() / ".cache" / "oscar" / "models" / name)
    paths.append(PACKAGE_WEIGHTS / name)
    return paths


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A model folder for a registered name or a path; a clear error when it is missing."""
    direct = Path(name_or_path)
    if (direct / CONFIG_NAME).is_file():
        return direct
    name = str(name_or_path)
    if name not in MODELS:
        if direct.exists():
            raise ModelWeightsMissing(f"{direct} is not an OSCAR model folder: {CONFIG_NAME} is missing there")
        raise ModelWeightsMissing(
            f"unknown model {name!r}: not a registered name ({', '.join(MODELS)}) nor a folder holding {CONFIG_NAME}"
        )
    tried = search_paths(name)
    for p in tried:
        if (p / CONFIG_NAME).is_file():
            return p
    looked = "\n  ".join(str(p) for p in tried)
    raise ModelWeightsMissing(
        f"weights of model {name!r} are missing: no {CONFIG_NAME} found in\n  {looked}\n"
        f"To get them: {MODELS[name].how_to_get}."
    )


# ---------------------------------------------------------------------------- network types
# A model folder's networks, each chosen by the type its ``oscar.json`` names. A role's table
# maps a type name to the class that loads it (``"module:Class"``, imported only when a folder
# asks for it, so oscar-tiny never imports peft). Every class has ``from_pretrained(folder)``
# and ``save_pretrained(folder)``; diffusers' own models are loaded with
# ``low_cpu_mem_usage=False`` so that no weight is left on a meta device. To add a backend:
# write its network with those two methods and what its role's contract names
# (:mod:`oscar_model.contracts`, checked on load), and add it to a table here.

COMPONENT_TYPES: dict[str, dict[str, str]] = {
    "autoencoder": {
        "compact": "oscar_model.autoencoder:CompactAutoencoder",
        "diffusers-kl": "oscar_model.autoencoder:DiffusersAutoencoder",
    },
    "hyper_encoder": {
        "compact": "oscar_model.hyper_encoder:HyperEncoder",
        "perco": "oscar_model.perco:PercoHyperEncoder",
    },
    "denoiser": {
        "unet2d": "diffusers:UNet2DModel",
        "sd21-lora": "oscar_model.sd21:LoraConditionedUNet",
    },
}


def check_types(**kinds: str) -> None:
    """Raises a ValueError naming the choices for any unknown ``role=type``."""
    for role, kind in kinds.items():
        if kind not in COMPONENT_TYPES[role]:
            raise ValueError(f"{role}_type={kind!r} is unknown; expected one of {sorted(COMPONENT_TYPES[role])}")


def component_class(role: str, kind: str) -> type:
    check_types(**{role: kind})
    module, name = COMPONENT_TYPES[role][kind].split(":")
    return getattr(importlib.import_module(module), name)


def load_component(role: str, kind: str, folder: str | Path) -> nn.Module:
    """The ``role`` network of type ``kind`` saved in ``folder``."""
    from diffusers.models.modeling_utils import ModelMixin

    from .contracts import check_component

    cls = component_class(role, kind)
    if issubclass(cls, ModelMixin):
        component = cls.from_pretrained(str(folder), low_cpu_mem_usage=False)
    else:
        component = cls.from_pretrained(Path(folder))
    return check_component(role, kind, component)
