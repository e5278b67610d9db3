"""``oscar.json``: what a model folder says about itself, read in this module and nowhere else.

Light on purpose (no torch): a job's driver and the ``oscar`` command read a model's name, id
and ladder from here without loading a network (:class:`~oscar_model.model_info.ModelInfo`
adds the folder and the weights' hash). The hash is recorded when the folder is saved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rates import RateLadder
from .registry import CONFIG_NAME, check_types, resolve_model_path
from .schedule import PREDICTION_TYPES, ScaledLinearSchedule

__all__ = ["CodecConfig", "read_model_config"]


@dataclass
class CodecConfig:
    """What ``oscar.json`` holds besides the networks' own configs."""

    name: str
    ladder: RateLadder
    autoencoder_type: str = "compact"
    hyper_encoder_type: str = "compact"
    denoiser_type: str = "unet2d"
    prediction_type: str = "v_prediction"
    schedule: ScaledLinearSchedule = field(default_factory=ScaledLinearSchedule)
    hyper_encoder: dict[str, Any] = field(default_factory=dict)
    tiling: dict[str, int] = field(default_factory=dict)
    """Tile and overlap in latent pixels (:class:`~oscar_model.tiling.Tiling`); {} = its defaults."""
    info: dict[str, Any] = field(default_factory=dict)
    model_hash: str | None = None
    """The hash of the weights saved beside this file (None in a folder saved before it was recorded)."""

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={self.prediction_type!r}; expected one of {PREDICTION_TYPES}")
        check_types(autoencoder=self.autoencoder_type, hyper_encoder=self.hyper_encoder_type, denoiser=self.denoiser_type)

    def to_json(self, model_hash: str | None = None) -> str:
        """``model_hash`` (of the weights saved beside it) lets a job read the model id
        without loading the networks (:class:`ModelInfo`)."""
        model_hash = model_hash or self.model_hash
        return json.dumps(
            {
                "name": self.name,
                "autoencoder_type": self.autoencoder_type,
                **({"hyper_encoder_type": self.hyper_encoder_type} if self.hyper_encoder_type != "compact" else {}),
                "denoiser_type": self.denoiser_type,
                "prediction_type": self.prediction_type,
                "schedule": vars(self.schedule),
                "hyper_encoder": self.hyper_encoder,
                "ladder": self.ladder.to_dicts(),
                **({"tiling": self.tiling} if self.tiling else {}),
                "info": self.info,
                **({"model_hash": model_hash} if model_hash else {}),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str, where: str = CONFIG_NAME) -> CodecConfig:
        """The parsed file; a one-line ValueError naming ``where`` when it is not an OSCAR config."""
        try:
            d = json.loads(text)
            return cls(
                name=d["name"],
                ladder=RateLadder.from_dicts(d["ladder"]),
                autoencoder_type=d.get("autoencoder_type", "compact"),
                hyper_encoder_type=d.get("hyper_encoder_type", "compact"),
                denoiser_type=d.get("denoiser_type", "unet2d"),
                prediction_type=d.get("prediction_type", "v_prediction"),
                schedule=ScaledLinearSchedule(**d.get("schedule", {})),
                hyper_encoder=d.get("hyper_encoder", {}),
                tiling=d.get("tiling", {}),
                info=d.get("info", {}),
                model_hash=d.get("model_hash"),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{where} is not an OSCAR model config ({type(e).__name__}: {e})") from None


def read_model_config(name_or_path: str | Path) -> tuple[Path, CodecConfig]:
    """A registered name or a local model folder -> (the folder, its ``oscar.json``)."""
    path = resolve_model_path(name_or_path)
    return path, CodecConfig.from_json((path / CONFIG_NAME).read_text(), str(path / CONFIG_NAME))
