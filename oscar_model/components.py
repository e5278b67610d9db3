"""The networks of a model folder, each chosen by the type its ``oscar.json`` names.

A role's table maps a type name to the class that loads it (``"module:Class"``, imported only
when a folder asks for it, so oscar-tiny never imports peft). Every class has
``from_pretrained(folder)`` and ``save_pretrained(folder)``; diffusers' own models are loaded
with ``low_cpu_mem_usage=False`` so that no weight is left on a meta device.

To add a backend: write its network with those two methods and what its role's contract
names (:mod:`oscar_model.contracts`, checked on load), and add it to a table here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from torch import nn

from .contracts import check_component

__all__ = ["COMPONENT_TYPES", "component_class", "load_component", "check_types"]

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

    cls = component_class(role, kind)
    if issubclass(cls, ModelMixin):
        component = cls.from_pretrained(str(folder), low_cpu_mem_usage=False)
    else:
        component = cls.from_pretrained(Path(folder))
    return check_component(role, kind, component)
