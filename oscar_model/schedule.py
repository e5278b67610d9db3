"""The diffusion schedule that gives each rate its pseudo-timestep.

OSCAR reads a compressed latent z~ as a noisy diffusion state
``z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps``, for which ``E[cos(z_t, z)] ~ sqrt(abar_t)``
(latents of about unit variance, as SD's scaling factor makes them). Each rate's timestep is
the t whose ``sqrt(abar_t)`` matches the cosine similarity measured on data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["ScaledLinearSchedule", "PREDICTION_TYPES"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class ScaledLinearSchedule:
    """Stable Diffusion's scaled-linear DDPM schedule (same numbers as diffusers'
    ``DDPMScheduler(beta_schedule="scaled_linear")`` with SD's defaults)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012

    @property
    def alphas_cumprod(self) -> np.ndarray:
        betas = np.linspace(self.beta_start**0.5, self.beta_end**0.5, self.num_train_timesteps, dtype=np.float64) ** 2
        return np.cumprod(1.0 - betas)

    def sqrt_alpha_bar(self, t: int) -> float:
        self._check(t)
        return float(np.sqrt(self.alphas_cumprod[t]))

    def timestep_for_cosine(self, cosine: float) -> int:
        """The timestep whose sqrt(abar_t) is closest to a measured E[cos(z~, z)].

        Cosines below sqrt(abar) at the last timestep (an untrained model) map to the last one.
        """
        if not -1.0 <= cosine <= 1.0:
            raise ValueError(f"cosine={cosine} is not a cosine similarity (outside [-1, 1])")
        return int(np.argmin(np.abs(np.sqrt(self.alphas_cumprod) - cosine)))

    def predict_x0(
        self, sample: torch.Tensor, model_output: torch.Tensor, timesteps: torch.Tensor, prediction_type: str
    ) -> torch.Tensor:
        """x0 from the network's output (what diffusers calls ``pred_original_sample``).

        ``timesteps`` holds one timestep per batch element.
        """
        import torch  # here, so that reading a model's config (a job's driver) needs no torch

        abar = torch.as_tensor(self.alphas_cumprod, dtype=torch.float32, device=sample.device)[timesteps.long()]
        a = abar.sqrt().view(-1, 1, 1, 1).to(sample.dtype)
        b = (1 - abar).sqrt().view(-1, 1, 1, 1).to(sample.dtype)
        if prediction_type == "epsilon":
            return (sample - b * model_output) / a
        if prediction_type == "v_prediction":
            return a * sample - b * model_output
        if prediction_type == "sample":
            return model_output
        raise ValueError(f"prediction_type={prediction_type!r}; expected one of {PREDICTION_TYPES}")

    def _check(self, t: int) -> None:
        if not 0 <= t < self.num_train_timesteps:
            raise ValueError(f"timestep {t} outside [0, {self.num_train_timesteps - 1}]")
