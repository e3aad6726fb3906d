"""The generation pipeline: sampling, guidance, and its model folder (save_pretrained / from_pretrained)."""

import json
import shutil
from dataclasses import fields

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from torch.utils.data import default_collate

from cxrsynth.models.conditioning import Conditions, concatenate
from cxrsynth.tasks.diffusion.data import batch_conditions
from cxrsynth.tasks.diffusion.model_io import ModelConfig, model_config
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline
from cxrsynth.tasks.diffusion.previews import UNCONDITIONAL, condition_types
from cxrsynth.tasks.diffusion.sampling import GuidedDenoiser
from cxrsynth.tasks.diffusion.schedulers import SAMPLERS
from cxrsynth.tasks.diffusion.tokenizer import WordTokenizer
from tests.diffusion_data import tiny_diffusion, tiny_setup


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


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_an_image_depends_on_its_seed_not_its_batch(prepared, sampler):
    setup, cond = prepared
    pipeline = setup.pipeline().with_sampler(sampler)
    together = pipeline(cond, [5, 6, 7], 4, 2.0)
    assert together.shape == (3, 1, 16, 16)
    assert torch.equal(together, pipeline(cond, [5, 6, 7], 4, 2.0))  # the scheduler's state does not carry over
    single = pipeline(_row(cond, 1), [6], 4, 2.0)
    assert torch.allclose(single[0], together[1], atol=1e-4)
    other_seed = pipeline(_row(cond, 1), [8], 4, 2.0)
    assert not torch.allclose(other_seed[0], together[1], atol=1e-3)


def test_guidance_is_batched_cond_plus_uncond(prepared):
    setup, cond = prepared
    model = setup.model.eval()
    noisy, timestep = torch.randn(3, 1, 16, 16), torch.tensor(20)
    with torch.no_grad():
        conditional = model(noisy, timestep.expand(3), cond)
        unconditional = model(noisy, timestep.expand(3), cond.dropped())
        guided = GuidedDenoiser(model, cond, cond.dropped(), 3.0)
        plain = GuidedDenoiser(model, cond, cond.dropped(), 1.0)
        # encoded once, the batch doubled (cond + uncond) only when guiding
        assert len(guided.encoded.context) == 6 and len(plain.encoded.context) == 3
        assert torch.allclose(guided(noisy, timestep), unconditional + 3.0 * (conditional - unconditional), atol=1e-5)
        assert torch.allclose(plain(noisy, timestep), conditional, atol=1e-6)
        # the same encoded batch serves every step: a later timestep and image give that step's output
        later = torch.randn(3, 1, 16, 16)
        assert torch.allclose(plain(later, torch.tensor(5)), model(later, torch.tensor(5).expand(3), cond), atol=1e-6)


@pytest.fixture(scope="module")
def mask_only(tmp_path_factory):
    _, narrow = tiny_setup(tmp_path_factory.mktemp("mask_only"), tiny_diffusion(("mask",)))
    return narrow


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_samples_every_condition_type_of_full_and_narrow_models(prepared, mask_only, sampler):
    setup, cond = prepared
    for model_setup in (setup, mask_only):
        types = [*condition_types(model_setup.config.conditions), UNCONDITIONAL]
        every = concatenate([cond.keeping(() if t == UNCONDITIONAL else tuple(t.split("+"))) for t in types])
        images = model_setup.pipeline().with_sampler(sampler)(every, list(range(len(every))), 3, 2.0)
        assert images.shape == (len(every), 1, 16, 16) and torch.isfinite(images).all()
        assert images.min() >= 0 and images.max() <= 1 and images.std() > 0


def test_sample_checks_seed_count_and_restores_training_mode(prepared):
    setup, cond = prepared
    setup.model.train()
    pipeline = setup.pipeline().with_sampler("ddim")
    with pytest.raises(ValueError, match="2 seeds for 3 images"):
        pipeline(cond, [1, 2], 2, 1.0)
    pipeline(cond, [1, 2, 3], 2, 1.0)
    assert setup.model.training


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_save_and_load_give_the_same_pipeline_and_images(prepared, tmp_path):
    setup, cond = prepared
    pipeline = setup.pipeline()
    pipeline.save_pretrained(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"config.json", "model.pt", "vocab.json"}
    saved = json.loads((tmp_path / "model/config.json").read_text())
    assert saved == {**setup.config.as_dict(), "digest": setup.config.digest}

    loaded = GenerationPipeline.from_pretrained(tmp_path / "model", sampler="ddim")
    assert loaded.config == setup.config and isinstance(loaded.config, ModelConfig)
    assert loaded.tokenizer.vocabulary == setup.tokenizer.vocabulary
    assert torch.equal(_weights(loaded.denoiser), _weights(setup.model)) and not loaded.denoiser.training
    assert isinstance(loaded.scheduler, DDIMScheduler) and loaded.device == torch.device("cpu")
    assert loaded.autocast is None  # from_pretrained runs in float32 unless asked for mixed precision
    assert torch.equal(loaded(cond, [4, 5, 6], 3, 2.0), pipeline.with_sampler("ddim")(cond, [4, 5, 6], 3, 2.0))
    assert GenerationPipeline.load_config(tmp_path / "model") == setup.config


def test_components_are_the_denoiser_encoders_tokenizer_and_scheduler(prepared):
    setup, _ = prepared
    pipeline = setup.pipeline()
    assert isinstance(pipeline.scheduler, DPMSolverMultistepScheduler) and pipeline.sampler == "dpm_solver"
    assert pipeline.label_encoder is setup.model.label_encoder and pipeline.text_encoder is setup.model.text_encoder
    assert set(pipeline.components) == {"denoiser", "label_encoder", "text_encoder", "tokenizer", "scheduler"}
    other = pipeline.with_sampler("ddim")
    assert other.denoiser is pipeline.denoiser and other.tokenizer is pipeline.tokenizer
    assert isinstance(other.scheduler, DDIMScheduler) and isinstance(pipeline.scheduler, DPMSolverMultistepScheduler)
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        pipeline.with_sampler("euler")


def test_a_folder_missing_a_file_or_holding_another_models_weights_is_refused(prepared, tmp_path):
    setup, _ = prepared
    setup.pipeline().save_pretrained(tmp_path / "model")
    (tmp_path / "model/model.pt").unlink()
    with pytest.raises(ValueError, match=r"model\.pt: not found"):
        GenerationPipeline.load_config(tmp_path / "model")

    _, narrow = tiny_setup(tmp_path / "narrow", tiny_diffusion(("label", "mask")))
    narrow.pipeline().save_pretrained(tmp_path / "narrow_model")
    setup.pipeline().save_pretrained(tmp_path / "model")
    shutil.copy(tmp_path / "narrow_model/model.pt", tmp_path / "model/model.pt")
    with pytest.raises(ValueError, match=r"model\.pt: weights do not match config\.json"):
        GenerationPipeline.from_pretrained(tmp_path / "model")


def test_a_bad_config_names_the_file_and_key(prepared, tmp_path):
    setup, _ = prepared
    setup.pipeline().save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model/config.json").read_text())
    config["text_encoder"]["kind"] = "borrowed"
    (tmp_path / "model/config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: not a model config \(text_encoder\.kind"):
        GenerationPipeline.load_config(tmp_path / "model")


def test_config_digest_is_the_one_model_folders_and_checkpoints_already_hold():
    """The digest hashes the same JSON as before the config was typed: earlier folders and checkpoints load."""
    tokenizer = WordTokenizer(["<pad>", "<unk>", "a", "b"], 12)
    assert model_config(tiny_diffusion(), 32, tokenizer, ["nodule"]).digest == "106c25ce5af455ed"
    assert model_config(tiny_diffusion(("label", "mask")), 32, tokenizer, ["nodule"]).digest == "f6d62a069e5dab02"
