import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

from cxrsynth.tasks.diffusion.schedulers import (
    SAMPLERS,
    Process,
    min_snr_weight,
    predicted_clean,
    sampling_scheduler,
    training_scheduler,
    training_target,
)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_end_in_noise_for_any_length(schedule):
    for timesteps in (50, 1000):
        scheduler = training_scheduler(Process(timesteps, schedule, "epsilon"))
        alpha_bar = scheduler.alphas_cumprod
        assert len(alpha_bar) == timesteps and alpha_bar[0] > 0.95 and alpha_bar[-1] < 0.01


def test_cosine_keeps_more_signal_midway_than_linear():
    linear = training_scheduler(Process(1000, "linear", "epsilon")).alphas_cumprod[500]
    cosine = training_scheduler(Process(1000, "cosine", "epsilon")).alphas_cumprod[500]
    assert cosine > linear


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_predicted_clean_inverts_the_forward_process(prediction):
    scheduler = training_scheduler(Process(100, "cosine", prediction))
    clean, noise = torch.rand(4, 1, 8, 8) * 2 - 1, torch.randn(4, 1, 8, 8)
    timesteps = torch.tensor([0, 10, 50, 90])
    noisy = scheduler.add_noise(clean, noise, timesteps)
    target = training_target(scheduler, clean, noise, timesteps)
    assert torch.equal(target, noise) == (prediction == "epsilon")
    assert torch.allclose(predicted_clean(scheduler, noisy, target, timesteps), clean, atol=1e-3)


def test_min_snr_weight_is_one_at_low_noise_and_small_at_high_noise():
    scheduler = training_scheduler(Process(100, "cosine", "epsilon"))
    weights = min_snr_weight(scheduler, torch.tensor([0, 99]), gamma=5.0)
    assert weights[0] == 1.0 and weights[1] < 0.01
    assert torch.equal(min_snr_weight(scheduler, torch.tensor([0, 99]), gamma=0.0), torch.ones(2))


def test_samplers_are_the_diffusers_schedulers_of_the_same_process():
    process = Process(100, "linear", "v_prediction")
    kinds = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm_solver": DPMSolverMultistepScheduler,
             "dpm_solver_3m": DPMSolverMultistepScheduler, "dpm_solver_sde": DPMSolverMultistepScheduler,
             "unipc": UniPCMultistepScheduler}
    assert set(kinds) == set(SAMPLERS)
    for name, kind in kinds.items():
        scheduler = sampling_scheduler(process, name)
        assert isinstance(scheduler, kind) and scheduler.config.prediction_type == "v_prediction"
        assert scheduler.config.num_train_timesteps == 100
        scheduler.set_timesteps(10)
        assert len(scheduler.timesteps) == 10 and scheduler.timesteps[0] == 99
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        sampling_scheduler(process, "euler")


X0_SOLVERS = ("dpm_solver", "dpm_solver_3m", "dpm_solver_sde", "unipc")


@pytest.mark.parametrize("sampler", X0_SOLVERS)
def test_x0_solvers_clip_x0_and_skip_the_cosine_schedules_infinite_noise_end(sampler):
    cosine = sampling_scheduler(Process(1000, "cosine", "epsilon"), sampler)
    assert cosine.config.thresholding and cosine.config.sample_max_value == 1.0
    cosine.set_timesteps(20)
    assert cosine.timesteps[0] < 999  # lambda >= -5.1 starts a little below the last timestep
    reference = sampling_scheduler(Process(1000, "cosine", "epsilon"), "dpm_solver")
    reference.set_timesteps(20)
    assert torch.equal(cosine.timesteps, reference.timesteps)  # every x0 solver skips the same end
    linear = sampling_scheduler(Process(1000, "linear", "epsilon"), sampler)
    linear.set_timesteps(20)
    assert linear.timesteps[0] == 999


def test_solver_orders_and_kinds_are_what_their_names_say():
    process = Process(100, "cosine", "v_prediction")
    assert sampling_scheduler(process, "dpm_solver").config.solver_order == 2
    assert sampling_scheduler(process, "dpm_solver_3m").config.solver_order == 3
    assert sampling_scheduler(process, "dpm_solver_sde").config.algorithm_type == "sde-dpmsolver++"
    unipc = sampling_scheduler(process, "unipc")
    assert unipc.config.solver_type == "bh2" and unipc.config.predict_x0


@pytest.mark.parametrize("sampler", X0_SOLVERS)
def test_the_x0_clamp_is_diffusers_thresholding_at_max_value_one(sampler):
    """The cheap clamp that replaces the per-image quantile gives diffusers' result exactly."""
    scheduler = sampling_scheduler(Process(100, "cosine", "epsilon"), sampler)
    x0 = torch.randn(4, 1, 8, 8) * 3
    kind = UniPCMultistepScheduler if sampler == "unipc" else DPMSolverMultistepScheduler
    library = kind.from_config(scheduler.config)._threshold_sample(x0)  # diffusers' own, with its quantile
    assert torch.equal(scheduler._threshold_sample(x0), library)


@pytest.mark.parametrize("sampler", X0_SOLVERS)
def test_x0_solvers_sigmas_follow_their_clipped_timesteps(sampler):
    scheduler = sampling_scheduler(Process(1000, "cosine", "epsilon"), sampler)
    scheduler.set_timesteps(10)
    alpha_bar = scheduler.alphas_cumprod[scheduler.timesteps]
    assert len(scheduler.sigmas) == 11 and scheduler.sigmas[-1] == 0
    assert torch.allclose(scheduler.sigmas[:-1], ((1 - alpha_bar) / alpha_bar).sqrt(), rtol=1e-4)


def test_generate_sampler_param_offers_exactly_the_samplers():
    from typing import get_args

    from cxrsynth.tasks.params import GenerateParams

    assert get_args(GenerateParams.model_fields["sampler"].annotation) == SAMPLERS
