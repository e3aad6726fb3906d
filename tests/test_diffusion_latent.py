"""Latent diffusion (diffusion.space: latent): the codec, training in latent space for every condition
combination, every sampler decoding to working-resolution images, the measured scale in the model
folder, and a mismatched autoencoder refused."""

import itertools
import json

import pytest
import torch
from torch.utils.data import default_collate

from cxrsynth.models.autoencoder import AutoencoderConfig, build_autoencoder
from cxrsynth.models.latent import LatentCodec, latent_scale_factor, mask_grid
from cxrsynth.tasks.autoencoder.model_io import save_autoencoder
from cxrsynth.tasks.diffusion.data import batch_conditions
from cxrsynth.tasks.diffusion.latent import autoencoder_digest, encode_dataset
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline
from cxrsynth.tasks.diffusion.schedulers import SAMPLERS, training_scheduler
from cxrsynth.tasks.diffusion.train_stage import training_setup
from cxrsynth.tasks.diffusion.training import diffusion_loss, draw_step, train_diffusion
from cxrsynth.tasks.params import Params
from tests.diffusion_data import make_project, tiny_diffusion

SIZE = 16  # working resolution of the toy project; factor 4 -> a 4 x 4 latent grid
AUTOENCODER = AutoencoderConfig(downsampling=4, latent_channels=3, base_channels=8)
COMBINATIONS = [c for n in (1, 2, 3) for c in itertools.combinations(("label", "mask", "text"), n)]


def latent_diffusion(conditions=("label", "mask", "text"), ssim_weight=0.1, **train):
    diffusion = tiny_diffusion(conditions, **train)
    return diffusion.model_copy(update={"space": "latent",
                                        "loss": diffusion.loss.model_copy(update={"ssim_weight": ssim_weight})})


def write_autoencoder(folder, seed=0):
    torch.manual_seed(seed)
    save_autoencoder(folder, build_autoencoder(AUTOENCODER), AUTOENCODER)
    return folder


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A toy project and a (random, untrained) autoencoder folder beside it."""
    root = tmp_path_factory.mktemp("latent")
    frame = make_project(root, n_images=16, size=SIZE)
    return root, frame, write_autoencoder(root / "autoencoder")


def latent_setup(project, diffusion=None):
    root, frame, autoencoder = project
    return training_setup(Params(diffusion=diffusion or latent_diffusion()), frame, root, autoencoder)


def test_max_pooling_keeps_a_two_pixel_nodule_on_the_latent_grid():
    masks = torch.zeros(1, 2, 8, 8)
    masks[0, 0, 5, 2:4] = 1  # two pixels, straddling two 4 x 4 cells
    grid = mask_grid(masks, 4)
    assert grid.shape == (1, 2, 2, 2)
    assert grid[0, 0].tolist() == [[0, 0], [1, 0]] and grid[0, 1].sum() == 0
    assert torch.equal(mask_grid(masks, 1), masks)
    with pytest.raises(ValueError, match="do not divide"):
        mask_grid(torch.zeros(1, 1, 6, 6), 4)


def test_codec_encodes_the_posterior_mean_scaled_and_decodes_back_without_training_the_autoencoder():
    torch.manual_seed(0)
    autoencoder = build_autoencoder(AUTOENCODER)
    codec = LatentCodec(autoencoder, 2.0).train()
    assert not codec.training and not any(p.requires_grad for p in codec.parameters())
    images = torch.rand(2, 1, SIZE, SIZE) * 2 - 1
    latents = codec.encode(images)
    assert latents.shape == (2, 3, 4, 4)
    assert torch.allclose(latents, autoencoder.encode(images)[0] * 2.0)  # the mean, twice: no sampling noise
    assert torch.allclose(codec.decode(latents), autoencoder.decode(latents / 2.0))
    wanted = latents.clone().requires_grad_(True)
    codec.decode(wanted).sum().backward()
    assert wanted.grad is not None and wanted.grad.abs().sum() > 0
    assert latent_scale_factor(torch.randn(10000) * 4) == pytest.approx(0.25, rel=0.05)
    with pytest.raises(ValueError, match="no spread"):
        latent_scale_factor(torch.ones(3, 4))


def test_the_scale_factor_is_measured_on_the_training_latents_and_saved(project, tmp_path):
    setup = latent_setup(project)
    unscaled = encode_dataset(LatentCodec(setup.codec.autoencoder, 1.0), setup.dataset)
    latent = setup.config.latent
    assert latent.scale_factor == pytest.approx(1 / float(unscaled.std()), rel=1e-5)
    assert float(setup.dataset.latents.std()) == pytest.approx(1.0, rel=1e-4)
    assert latent.clip >= float(setup.dataset.latents.abs().max())
    assert setup.codec.scale_factor == latent.scale_factor
    assert setup.config.sample_shape == (3, 4, 4) and setup.config.image_size == SIZE
    assert setup.dataset[0]["latent"].shape == (3, 4, 4) and setup.dataset[0]["image"].shape == (1, SIZE, SIZE)
    assert latent_setup(project).config.digest == setup.config.digest  # a rerun (resume) is the same model
    setup.pipeline().save_pretrained(tmp_path / "model")
    saved = json.loads((tmp_path / "model/config.json").read_text())
    assert saved["space"] == "latent" and saved["latent"]["scale_factor"] == latent.scale_factor
    assert saved["latent"]["autoencoder_digest"] == autoencoder_digest(setup.codec.autoencoder)


def test_a_pixel_model_folder_records_pixel_space_and_reads_no_autoencoder(project, tmp_path):
    root, frame, _ = project
    pixel = training_setup(Params(diffusion=tiny_diffusion()), frame, root, autoencoder_dir=tmp_path / "absent")
    assert pixel.codec is None and pixel.config.sample_shape == (1, SIZE, SIZE)
    pixel.pipeline().save_pretrained(tmp_path / "model")
    assert json.loads((tmp_path / "model/config.json").read_text())["space"] == "pixel"
    GenerationPipeline.from_pretrained(tmp_path / "model", autoencoder=tmp_path / "absent")


@pytest.mark.parametrize("conditions", COMBINATIONS, ids="+".join)
def test_every_condition_combination_trains_and_samples_in_latent_space(project, tmp_path, conditions):
    diffusion = latent_diffusion(conditions, steps=1)
    setup = latent_setup(project, diffusion)
    before = [p.detach().clone() for p in setup.codec.parameters()]
    outcome = train_diffusion(setup, diffusion, tmp_path / "checkpoints", seed=0)
    assert outcome.steps == 1 and torch.isfinite(torch.tensor(outcome.history[0][1]))
    assert all(torch.equal(a, b) for a, b in zip(before, setup.codec.parameters()))  # the autoencoder stays frozen
    batch = default_collate([setup.dataset[i] for i in range(3)])
    images = setup.pipeline(outcome.ema_model)(batch_conditions(batch).keeping(conditions), [1, 2, 3], 2, 2.0)
    assert images.shape == (3, 1, SIZE, SIZE) and torch.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1


@pytest.fixture(scope="module")
def latent_model(project):
    setup = latent_setup(project)
    with torch.no_grad():  # MONAI zero-initialises the output layer: give the untrained model a voice
        for parameter in setup.model.parameters():
            if parameter.abs().sum() == 0:
                parameter.normal_(0, 0.1)
    return setup


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_decodes_latents_to_working_resolution_images(latent_model, sampler):
    pipeline = latent_model.pipeline().with_sampler(sampler)
    assert pipeline.codec is latent_model.codec
    bound = pipeline.scheduler.config.get("clip_sample_range") if sampler in ("ddpm", "ddim") \
        else pipeline.scheduler.config.sample_max_value
    assert bound == latent_model.config.latent.clip  # x0 clipped to the latents' range, not to [-1, 1]
    batch = default_collate([latent_model.dataset[i] for i in range(2)])
    images = pipeline(batch_conditions(batch), [4, 5], 3, 2.0)
    assert images.shape == (2, 1, SIZE, SIZE) and torch.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0


def test_the_ssim_term_decodes_only_images_with_a_lesion(latent_model):
    diffusion = latent_diffusion()
    items = [latent_model.dataset[i] for i in range(len(latent_model.dataset))]
    with_lesion = [item for item in items if item["masks"].amax() > 0]
    without = [item for item in items if item["masks"].amax() == 0]
    batch = default_collate(with_lesion[:5] + without[:3])
    lesions = len(with_lesion[:5])
    assert 0 < lesions and len(without[:3]) > 0  # the toy set has images with and without lesions
    decoded: list[int] = []
    hook = latent_model.codec.autoencoder.decoder.register_forward_hook(
        lambda module, inputs, output: decoded.append(output.shape[0]))
    draws = draw_step(len(batch["latent"]), batch["latent"].shape[1:], diffusion, 50, torch.Generator().manual_seed(0))
    draws.timesteps[:] = 1  # near-clean: the Min-SNR weight leaves the SSIM term its full size
    scheduler = training_scheduler(latent_model.config.process)
    losses = diffusion_loss(latent_model.model, scheduler, batch, diffusion, draws, torch.device("cpu"),
                            codec=latent_model.codec)
    hook.remove()
    assert decoded == [lesions]
    assert losses["ssim"] > 0 and losses["lesion"] > 0
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in latent_model.model.parameters())
    latent_model.model.zero_grad(set_to_none=True)
    plain = diffusion_loss(latent_model.model, scheduler, batch, latent_diffusion(ssim_weight=0.0), draws,
                           torch.device("cpu"), codec=latent_model.codec)
    assert plain["ssim"] == 0 and plain["noise"] == losses["noise"]


def test_the_model_folder_round_trips_with_its_autoencoder_and_refuses_another(latent_model, project, tmp_path):
    _, _, autoencoder = project
    latent_model.pipeline().save_pretrained(tmp_path / "model")
    loaded = GenerationPipeline.from_pretrained(tmp_path / "model", autoencoder=autoencoder)
    batch = default_collate([latent_model.dataset[i] for i in range(2)])
    cond = batch_conditions(batch)
    assert torch.allclose(loaded(cond, [7, 8], 2, 2.0), latent_model.pipeline()(cond, [7, 8], 2, 2.0), atol=1e-5)

    other = write_autoencoder(tmp_path / "other_autoencoder", seed=1)
    with pytest.raises(ValueError, match=r"other_autoencoder: this autoencoder \(digest \w+\) is not the one"):
        GenerationPipeline.from_pretrained(tmp_path / "model", autoencoder=other)
    with pytest.raises(ValueError, match="needs the autoencoder it was trained with"):
        GenerationPipeline.from_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match="needs its latent codec"):
        GenerationPipeline(latent_model.model, latent_model.tokenizer, latent_model.config)


def test_an_image_size_the_autoencoder_cannot_divide_is_refused_naming_the_key(tmp_path):
    frame = make_project(tmp_path, n_images=8, size=18)
    with pytest.raises(ValueError, match=r"ingest\.image_size: 18 px is not a multiple .* factor 4"):
        training_setup(Params(diffusion=latent_diffusion()), frame, tmp_path, write_autoencoder(tmp_path / "ae"))


def test_latent_space_without_an_autoencoder_names_the_missing_folder(tmp_path):
    frame = make_project(tmp_path, n_images=8, size=SIZE)
    with pytest.raises(FileNotFoundError, match=r"train_autoencoder/model/config\.json: not found"):
        training_setup(Params(diffusion=latent_diffusion()), frame, tmp_path)


@pytest.mark.parametrize("sampler", ["dpm_solver", "unipc"])
def test_a_solver_clips_x0_to_the_latent_range_without_rescaling_it(sampler):
    from cxrsynth.tasks.diffusion.schedulers import Process, sampling_scheduler

    scheduler = sampling_scheduler(Process(100, "cosine", "v_prediction"), sampler, clip=2.5)
    x0 = torch.tensor([[[[-4.0, -1.2], [0.3, 3.0]]]])
    assert torch.equal(scheduler._threshold_sample(x0), torch.tensor([[[[-2.5, -1.2], [0.3, 2.5]]]]))


def test_controlnet_mask_control_trains_and_samples_in_latent_space(project, tmp_path):
    from cxrsynth.tasks.diffusion.controlnet import train_with_control

    diffusion = latent_diffusion(steps=1)
    diffusion = diffusion.model_copy(update={"mask_control": "controlnet",
                                             "controlnet": diffusion.controlnet.model_copy(update={"steps": 1})})
    setup = latent_setup(project, diffusion)
    assert setup.model.controlnet is not None
    outcome = train_with_control(setup, diffusion, tmp_path / "checkpoints", 0)
    assert outcome.steps == 2
    batch = default_collate([setup.dataset[i] for i in range(2)])
    images = setup.pipeline(outcome.ema_model)(batch_conditions(batch), [1, 2], 2, 2.0)
    assert images.shape == (2, 1, SIZE, SIZE) and torch.isfinite(images).all()
