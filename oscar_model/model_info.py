"""What a job needs to know about a model, read from its folder without loading any weights.

The driver of a Ray job only needs the model's name, id and ladder: the networks are loaded
by the actors. ``oscar.json`` records the model hash when the folder is saved; a folder
written before it did falls back to loading the codec once on the CPU to compute it. Actors
check the hash of what they load against it (:meth:`ModelInfo.check`), so a folder whose
weights were changed by hand cannot write rows under a stale id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .rates import RateLadder
from .registry import CONFIG_NAME, resolve_model_path

__all__ = ["ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    model_hash: str
    ladder: RateLadder

    @property
    def model_id(self) -> str:
        """The 4-byte id every stream of this model carries, as 8 hex digits."""
        return self.model_hash[:8]

    @property
    def nominal_bpp(self) -> dict[int, float]:
        return {p.index: p.nominal_bpp for p in self.ladder}

    @classmethod
    def read(cls, name_or_path: str | Path) -> ModelInfo:
        """A registered name or a model folder -> its info (weights are not loaded when
        ``oscar.json`` records the hash)."""
        path = resolve_model_path(name_or_path)
        config = json.loads((path / CONFIG_NAME).read_text())
        model_hash = config.get("model_hash")
        if model_hash is None:  # saved before oscar.json recorded it
            from .model import OscarModel

            model_hash = OscarModel.from_pretrained(path, device="cpu").model_hash
        return cls(config["name"], str(path), model_hash, RateLadder.from_dicts(config["ladder"]))

    def check(self, loaded_hash: str) -> None:
        """Raises when the weights loaded from ``path`` are not the ones this info describes."""
        if loaded_hash != self.model_hash:
            raise ValueError(
                f"{self.path}: oscar.json records model hash {self.model_hash[:16]}..., the weights there hash to "
                f"{loaded_hash[:16]}...: the folder was changed after it was saved; save it again with save_pretrained"
            )

    def to_dict(self) -> dict[str, Any]:
        """What a run manifest records about the model."""
        return {"name": self.name, "path": self.path, "model_id": self.model_id, "model_hash": self.model_hash,
                "ladder": self.ladder.to_dicts()}
