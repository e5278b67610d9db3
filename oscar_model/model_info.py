"""What a job needs to know about a model, read from its folder without loading any weights.

The driver of a Ray job only needs the model's name, id and ladder: the networks are loaded by
the actors. Its ``oscar.json`` (parsed by :mod:`oscar_model.config`) records the model hash when
the folder is saved; a folder written before it did falls back to loading the model once on the
CPU to compute it. Actors check the hash of what they load against it (:meth:`ModelInfo.check`),
so a folder whose weights were changed by hand cannot write rows under a stale id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import CodecConfig, read_model_config
from .rates import RateLadder
from .registry import CONFIG_NAME

__all__ = ["ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """A model as a job's driver knows it: where it is, its weights' hash and its ``oscar.json``."""

    path: str
    model_hash: str
    config: CodecConfig

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def ladder(self) -> RateLadder:
        return self.config.ladder

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
        path, config = read_model_config(name_or_path)
        model_hash = config.model_hash
        if model_hash is None:  # saved before oscar.json recorded it
            from .model import OscarModel

            model_hash = OscarModel.from_pretrained(path, device="cpu").model_hash
        return cls(str(path), model_hash, config)

    @classmethod
    def from_text(cls, path: str, text: str) -> ModelInfo:
        """A folder's ``oscar.json`` as read from elsewhere (object storage); it must record the hash,
        since the weights are not here to compute it."""
        config = CodecConfig.from_json(text, f"{path}/{CONFIG_NAME}")
        if not config.model_hash:
            raise ValueError(f"{path}/{CONFIG_NAME} records no model_hash: save the folder again with save_pretrained "
                             "before serving it from object storage (the hash is how each node checks its copy)")
        return cls(path, config.model_hash, config)

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
