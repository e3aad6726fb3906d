"""The diffusion process and its samplers, all diffusers schedulers; nothing here knows the model.

``process`` describes the forward process the model was trained under (timesteps, beta schedule,
prediction type); it travels with the model in its config so generation samples under exactly the
process of training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

Sampler = Literal["ddpm", "ddim", "dpm_solver"]
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpm_solver")

# diffusers' names for the project's schedule names.
BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


@dataclass(frozen=True)
class Process:
    timesteps: int
    schedule: Literal["linear", "cosine"]
    prediction: Literal["epsilon", "v_prediction"]

    def as_dict(self) -> dict:
        return asdict(self)


def scheduler_config(process: Process) -> dict:
    """Keyword arguments shared by every scheduler of this process."""
    if process.schedule not in BETA_SCHEDULES:
        raise ValueError(f"diffusion.schedule: unknown schedule {process.schedule!r}; "
                         f"expected one of {sorted(BETA_SCHEDULES)}")
    # DDPM's linear betas (1e-4 .. 0.02) are tuned for 1000 steps; scale them so that a shorter
    # process still ends in (nearly) pure noise (Nichol & Dhariwal 2021).
    scale = 1000.0 / process.timesteps
    return {
        "num_train_timesteps": process.timesteps,
        "beta_schedule": BETA_SCHEDULES[process.schedule],
        "beta_start": 1e-4 * scale,
        "beta_end": min(0.02 * scale, 0.999),
        "prediction_type": process.prediction,
        # start sampling at the last training timestep, from pure noise (Lin et al. 2024)
        "timestep_spacing": "trailing",
    }


def training_scheduler(process: Process) -> DDPMScheduler:
    """The forward process used in training (noising, velocity targets, alphas)."""
    return DDPMScheduler(**scheduler_config(process), clip_sample=False)


def sampling_scheduler(process: Process, sampler: str):
    """A fresh scheduler for one sampling run: ddpm (ancestral), ddim (eta 0) or dpm_solver (DPM-Solver++ 2M)."""
    config = scheduler_config(process)
    if sampler == "ddpm":
        return DDPMScheduler(**config, clip_sample=True)
    if sampler == "ddim":
        return DDIMScheduler(**config, clip_sample=True)
    if sampler == "dpm_solver":
        # x0 is clipped to the data range each step (what clip_sample does for DDPM / DDIM), and under
        # the cosine schedule the first, near-infinite-noise steps are skipped (lambda >= -5.1, as
        # diffusers advises): there x0 = (x - sigma * eps) / alpha magnifies the noise estimate's
        # error by 1 / alpha ~ 20000 and the solver saturates.
        return DPMSolverMultistepScheduler(
            **config, algorithm_type="dpmsolver++", solver_order=2, thresholding=True, sample_max_value=1.0,
            lambda_min_clipped=-5.1 if process.schedule == "cosine" else -float("inf"))
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")


def training_target(scheduler: DDPMScheduler, clean: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """What the network regresses: the noise, or the velocity for v-prediction."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    return noise


def _alpha_bar(scheduler: DDPMScheduler, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    alpha_bar = scheduler.alphas_cumprod.to(like.device)[timesteps].to(torch.float32)
    return alpha_bar.view(-1, *([1] * (like.ndim - 1)))


def predicted_clean(scheduler: DDPMScheduler, noisy: torch.Tensor, output: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """The clean image x0 implied by the network output at ``timesteps``."""
    alpha_bar = _alpha_bar(scheduler, timesteps, noisy)
    signal, sigma = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if scheduler.config.prediction_type == "v_prediction":
        return signal * noisy.float() - sigma * output.float()
    return (noisy.float() - sigma * output.float()) / signal


def min_snr_weight(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-image min(SNR, gamma) / gamma; all ones when gamma is 0 (no weighting)."""
    if gamma <= 0:
        return torch.ones(timesteps.shape[0], device=timesteps.device)
    alpha_bar = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / gamma
