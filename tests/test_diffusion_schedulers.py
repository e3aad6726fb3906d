import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from cxrsynth.tasks.diffusion.schedulers import (
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
    kinds = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm_solver": DPMSolverMultistepScheduler}
    for name, kind in kinds.items():
        scheduler = sampling_scheduler(process, name)
        assert isinstance(scheduler, kind) and scheduler.config.prediction_type == "v_prediction"
        assert scheduler.config.num_train_timesteps == 100
        scheduler.set_timesteps(10)
        assert len(scheduler.timesteps) == 10 and scheduler.timesteps[0] == 99
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        sampling_scheduler(process, "euler")


def test_dpm_solver_clips_x0_and_skips_the_cosine_schedules_infinite_noise_end():
    cosine = sampling_scheduler(Process(1000, "cosine", "epsilon"), "dpm_solver")
    assert cosine.config.thresholding and cosine.config.sample_max_value == 1.0
    cosine.set_timesteps(20)
    assert cosine.timesteps[0] < 999  # lambda >= -5.1 starts a little below the last timestep
    linear = sampling_scheduler(Process(1000, "linear", "epsilon"), "dpm_solver")
    linear.set_timesteps(20)
    assert linear.timesteps[0] == 999
