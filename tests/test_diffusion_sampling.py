from dataclasses import fields

import pytest
import torch
from torch.utils.data import default_collate

from cxrsynth.models.conditioning import Conditions
from cxrsynth.tasks.diffusion.data import batch_conditions
from cxrsynth.tasks.diffusion.model_io import process_of
from cxrsynth.tasks.diffusion.sampling import guided_output, sample
from tests.diffusion_data import tiny_setup


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    _, prepared = tiny_setup(tmp_path_factory.mktemp("sampling"))
    with torch.no_grad():  # MONAI zero-initialises the output layer: give the untrained model a voice
        for parameter in prepared.model.parameters():
            if parameter.abs().sum() == 0:
                parameter.normal_(0, 0.1)
    batch = default_collate([prepared.dataset[i] for i in range(3)])
    return prepared, batch_conditions(batch)


def _row(cond, index):
    return Conditions(**{f.name: getattr(cond, f.name)[index:index + 1] for f in fields(cond)})


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm_solver"])
def test_an_image_depends_on_its_seed_not_its_batch(prepared, sampler):
    setup, cond = prepared
    process = process_of(setup.config)
    together = sample(setup.model, process, cond, [5, 6, 7], sampler, 4, 2.0, 16)
    assert torch.equal(together, sample(setup.model, process, cond, [5, 6, 7], sampler, 4, 2.0, 16))
    single = sample(setup.model, process, _row(cond, 1), [6], sampler, 4, 2.0, 16)
    assert torch.allclose(single[0], together[1], atol=1e-4)
    other_seed = sample(setup.model, process, _row(cond, 1), [8], sampler, 4, 2.0, 16)
    assert not torch.allclose(other_seed[0], together[1], atol=1e-3)


def test_guidance_is_batched_cond_plus_uncond(prepared):
    setup, cond = prepared
    model = setup.model.eval()
    noisy, timestep = torch.randn(3, 1, 16, 16), torch.tensor(20)
    with torch.no_grad():
        conditional = model(noisy, timestep.expand(3), cond)
        unconditional = model(noisy, timestep.expand(3), cond.dropped())
        guided = guided_output(model, noisy, timestep, cond, cond.dropped(), 3.0)
        plain = guided_output(model, noisy, timestep, cond, cond.dropped(), 1.0)
    assert torch.allclose(guided, unconditional + 3.0 * (conditional - unconditional), atol=1e-5)
    assert torch.allclose(plain, conditional, atol=1e-6)


def test_sample_checks_seed_count_and_restores_training_mode(prepared):
    setup, cond = prepared
    setup.model.train()
    with pytest.raises(ValueError, match="2 seeds for 3 images"):
        sample(setup.model, process_of(setup.config), cond, [1, 2], "ddim", 2, 1.0, 16)
    sample(setup.model, process_of(setup.config), cond, [1, 2, 3], "ddim", 2, 1.0, 16)
    assert setup.model.training
