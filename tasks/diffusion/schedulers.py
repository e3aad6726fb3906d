"""The diffusion process and its samplers, all diffusers schedulers; nothing here knows the model.

``process`` describes the forward process the model was trained under (timesteps, beta schedule,
prediction type); it travels with the model in its config so generation samples under exactly the
process of training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

# dpm_solver: DPM-Solver++ 2M; dpm_solver_3m: its third-order multistep form; dpm_solver_sde: the
# stochastic SDE-DPM-Solver++ 2M; unipc: UniPC (bh2), a predictor-corrector on the same x0 estimates.
Sampler = Literal["ddpm", "ddim", "dpm_solver", "dpm_solver_3m", "dpm_solver_sde", "unipc"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)

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


class _ClampedX0:
    """x0 clipped to the data range [-sample_max_value, sample_max_value]. diffusers' dynamic
    thresholding with ``sample_max_value`` 1 is exactly this clamp (its per-image quantile is clamped
    to 1), so the quantile, most of a solver step's own cost, is skipped; with a wider range (latent
    diffusion's latents) dynamic thresholding would rescale each image's latent, which means nothing
    for latents, so it is a plain clamp there too."""

    def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        bound = float(self.config.sample_max_value)
        return sample.clamp(-bound, bound)


class ClampedDPMSolver(_ClampedX0, DPMSolverMultistepScheduler):
    """DPM-Solver++ (multistep) with the cheap x0 clamp."""


class ClampedUniPC(_ClampedX0, UniPCMultistepScheduler):
    """UniPC with the cheap x0 clamp and DPM-Solver's ``lambda_min_clipped``, which diffusers' UniPC lacks:
    its timesteps are the DPM-Solver's for the same config, so both skip the same near-pure-noise end."""

    def __init__(self, lambda_min_clipped: float = -float("inf"), **config) -> None:
        super().__init__(**config)
        self.lambda_min_clipped = lambda_min_clipped

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None, **kwargs) -> None:
        super().set_timesteps(num_inference_steps, device, **kwargs)
        if self.lambda_min_clipped == -float("inf"):
            return
        reference = DPMSolverMultistepScheduler.from_config(self.config, lambda_min_clipped=self.lambda_min_clipped)
        reference.set_timesteps(num_inference_steps)
        timesteps = reference.timesteps.numpy()
        # sigma = sqrt((1 - alpha_bar) / alpha_bar) at those timesteps, then 0 at the end, as UniPC's own
        # set_timesteps computes them for its timesteps (final_sigmas_type "zero").
        alpha_bar = self.alphas_cumprod.numpy()
        sigmas = np.interp(timesteps, np.arange(len(alpha_bar)), ((1 - alpha_bar) / alpha_bar) ** 0.5)
        self.sigmas = torch.from_numpy(np.append(sigmas, 0.0).astype(np.float32))
        self.timesteps = torch.from_numpy(timesteps).to(device=device, dtype=torch.int64)
        self.num_inference_steps = len(timesteps)


def _x0_care(process: Process, clip: float) -> dict:
    """What every x0-predicting solver needs here (DPM-Solver++, UniPC): x0 is clipped to the data range
    (+-``clip``) each step (what clip_sample does for DDPM / DDIM), and under the cosine schedule the first,
    near-infinite-noise steps are skipped (lambda >= -5.1, as diffusers advises): there
    x0 = (x - sigma * eps) / alpha magnifies the noise estimate's error by 1 / alpha ~ 20000 and the
    solver saturates."""
    return {"thresholding": True, "sample_max_value": clip,
            "lambda_min_clipped": -5.1 if process.schedule == "cosine" else -float("inf")}


def sampling_scheduler(process: Process, sampler: str, clip: float = 1.0):
    """A fresh scheduler for one sampling run, one of ``SAMPLERS``: ddpm (ancestral), ddim (eta 0),
    dpm_solver (DPM-Solver++ 2M), dpm_solver_3m (3M), dpm_solver_sde (SDE-DPM-Solver++ 2M) or unipc (UniPC bh2).
    Each clips its x0 estimate to +-``clip``: 1 for images in [-1, 1], the scaled latents' range in latent space."""
    config = scheduler_config(process)
    if sampler == "ddpm":
        return DDPMScheduler(**config, clip_sample=True, clip_sample_range=clip)
    if sampler == "ddim":
        return DDIMScheduler(**config, clip_sample=True, clip_sample_range=clip)
    if sampler in ("dpm_solver", "dpm_solver_3m", "dpm_solver_sde"):
        return ClampedDPMSolver(
            **config, **_x0_care(process, clip), solver_order=3 if sampler == "dpm_solver_3m" else 2,
            algorithm_type="sde-dpmsolver++" if sampler == "dpm_solver_sde" else "dpmsolver++")
    if sampler == "unipc":
        return ClampedUniPC(**config, **_x0_care(process, clip), solver_order=2, solver_type="bh2", predict_x0=True)
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
