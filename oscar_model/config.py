"""``oscar.json``: what a model folder says about itself besides its networks' own configs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .components import check_types
from .rates import RateLadder
from .schedule import PREDICTION_TYPES, ScaledLinearSchedule

__all__ = ["CodecConfig"]


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

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={self.prediction_type!r}; expected one of {PREDICTION_TYPES}")
        check_types(autoencoder=self.autoencoder_type, hyper_encoder=self.hyper_encoder_type, denoiser=self.denoiser_type)

    def to_json(self, model_hash: str | None = None) -> str:
        """``model_hash`` (of the weights saved beside it) lets a job read the model id
        without loading the networks (:class:`~oscar_model.model_info.ModelInfo`)."""
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
    def from_json(cls, text: str) -> CodecConfig:
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
        )
