"""runtime.channels_last: the conv networks train and infer in channels_last memory with the results of
contiguous memory (within float rounding), and what they save does not depend on the format."""

import copy
import hashlib

import pytest
import torch
from torch.utils.data import default_collate

from cxrsynth.models.classifier import build_classifier
from cxrsynth.tasks import manifest, torch_files
from cxrsynth.tasks.autoencoder.training import train_autoencoder
from cxrsynth.tasks.classifier import load_classifier, predict, save_classifier, train_classifier
from cxrsynth.tasks.classifier.training import VariantImages
from cxrsynth.tasks.device import CONTIGUOUS, MemoryFormat
from cxrsynth.tasks.diffusion.data import batch_conditions
from cxrsynth.tasks.diffusion.training import train_diffusion
from cxrsynth.tasks.params import AutoencoderParams, parse_params
from tests.blob_project import real_frame, write_images
from tests.diffusion_data import tiny_diffusion, tiny_setup

torch.set_num_threads(1)
CHANNELS_LAST = MemoryFormat("classifier", True, "test")


def _is_channels_last(model: torch.nn.Module) -> bool:
    """Whether every 4-D weight with more than one input channel is channels_last and not contiguous."""
    weights = [p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2:].numel() > 1]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                                 for p in weights)


def _md5_of_folder(folder) -> dict[str, str]:
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_saved_tensors_are_contiguous_and_the_bytes_do_not_depend_on_the_memory_format(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("densenet_small")
    state = model.state_dict()
    contiguous = tmp_path / "contiguous.pt"
    torch_files.save({"state_dict": state, "step": 3}, contiguous)
    CHANNELS_LAST.module(model)
    assert any(not t.is_contiguous() for t in model.state_dict().values())
    channels_last = tmp_path / "channels_last.pt"
    torch_files.save({"state_dict": model.state_dict(), "step": 3}, channels_last)
    assert channels_last.read_bytes() == contiguous.read_bytes()
    loaded = torch.load(channels_last, weights_only=True)["state_dict"]
    assert all(t.is_contiguous() for t in loaded.values())
    assert hasattr(loaded, "_metadata")  # the state_dict's version info is kept
    payload = {"a": [torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)], "b": "x"}
    assert torch_files.contiguous_tensors(payload)["a"][0].is_contiguous()
    plain = {"a": [torch.zeros(2)], "b": (1, 2)}
    assert torch_files.contiguous_tensors(plain) is plain


def _classifier_project(tmp_path):
    frame = manifest.conform(real_frame({"train": 16, "val": 8}), "generate")
    write_images(frame, tmp_path, 16)
    return VariantImages(frame[frame.split == "train"], frame[frame.split == "val"], 16, tmp_path)


def test_the_classifier_trains_channels_last_to_the_contiguous_model_and_saves_the_same_bytes(tmp_path):
    images = _classifier_project(tmp_path)
    settings = parse_params({"classifier": {"epochs": 1, "batch_size": 8, "patience": 2,
                                            "mixed_precision": "no"}}).classifier
    variant = {"variant": "t", "augmentation": None}
    plain = train_classifier(images, variant, settings, seed=0)
    nhwc = train_classifier(images, variant, settings, seed=0, channels_last=True)
    assert _is_channels_last(nhwc.model) and not _is_channels_last(plain.model)
    pixels = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    # Adam divides by the gradients' own size, so their last-bit differences move the weights by up to ~lr
    assert predict(nhwc.model, pixels) == pytest.approx(predict(plain.model, pixels), abs=5e-3)
    same_weights = CHANNELS_LAST.module(copy.deepcopy(plain.model))
    assert predict(same_weights, pixels) == pytest.approx(predict(plain.model, pixels), abs=1e-5)
    save_classifier(plain.model, tmp_path / "plain" / "model.pt")
    save_classifier(nhwc.model, tmp_path / "nhwc" / "model.pt")
    contiguous_copy = CONTIGUOUS["classifier"].module(copy.deepcopy(nhwc.model))
    save_classifier(contiguous_copy, tmp_path / "copy" / "model.pt")
    assert (tmp_path / "nhwc/model.pt").read_bytes() == (tmp_path / "copy/model.pt").read_bytes()
    loaded = load_classifier(tmp_path / "nhwc", layout=CHANNELS_LAST)
    assert _is_channels_last(loaded)
    assert predict(loaded, pixels) == pytest.approx(predict(nhwc.model, pixels), abs=1e-5)
    assert not _is_channels_last(load_classifier(tmp_path / "nhwc"))


def test_the_autoencoder_trains_channels_last_and_resumes_across_formats(tmp_path):
    settings = AutoencoderParams.model_validate(dict(
        downsampling=2, latent_channels=2, base_channels=8, steps=4, batch_size=4, checkpoint_every=2,
        learning_rate=1e-3, mixed_precision="no"))
    data = torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain = train_autoencoder(data, settings, seed=0, checkpoint_dir=tmp_path / "plain")
    nhwc = train_autoencoder(data, settings, seed=0, checkpoint_dir=tmp_path / "nhwc", channels_last=True)
    assert _is_channels_last(nhwc.ema_model) and not _is_channels_last(plain.ema_model)
    for ours, theirs in zip(plain.history, nhwc.history, strict=True):
        assert ours[1] == pytest.approx(theirs[1], rel=1e-4)
    # a channels_last checkpoint resumes in contiguous memory, to the same losses and weights within
    # rounding (Adam turns last-bit gradient differences into weight differences of up to ~lr)
    def stop_at_3(step, parts):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(data, settings, seed=0, checkpoint_dir=tmp_path / "cut", on_step=stop_at_3, channels_last=True)
    resumed = train_autoencoder(data, settings, seed=0, checkpoint_dir=tmp_path / "cut")
    assert not _is_channels_last(resumed.ema_model) and resumed.resumed_from == 2
    assert [loss for _, loss in resumed.history] == pytest.approx([loss for _, loss in nhwc.history], rel=1e-4)
    for ours, theirs in zip(resumed.ema_model.state_dict().values(), nhwc.ema_model.state_dict().values()):
        assert torch.allclose(ours, theirs, atol=5e-3)


def test_diffusion_trains_and_samples_channels_last_as_it_does_contiguous(tmp_path):
    diffusion = tiny_diffusion(steps=3)
    outcomes, pipelines = {}, {}
    for name, setting in (("plain", False), ("nhwc", True)):
        _, prepared = tiny_setup(tmp_path / name, diffusion)
        prepared.channels_last = setting
        outcomes[name] = train_diffusion(prepared, diffusion, tmp_path / name / "ck", seed=0)
        pipelines[name] = prepared.pipeline(outcomes[name].ema_model).to("cpu", "no", setting)
    assert _is_channels_last(outcomes["nhwc"].ema_model) and not _is_channels_last(outcomes["plain"].ema_model)
    assert pipelines["nhwc"].layouts["unet"].channels_last and not pipelines["plain"].layouts["unet"].channels_last
    for ours, theirs in zip(outcomes["plain"].history, outcomes["nhwc"].history, strict=True):
        assert ours[1] == pytest.approx(theirs[1], rel=1e-4)
    batch = default_collate([prepared.dataset[i] for i in range(3)])
    images = {name: pipeline(batch_conditions(batch), [1, 2, 3], 3, 2.0) for name, pipeline in pipelines.items()}
    assert images["nhwc"].is_contiguous() and (images["nhwc"] - images["plain"]).abs().max() < 1e-3
    # the model folder of a channels_last model is the folder of the same weights in contiguous memory
    pipelines["nhwc"].save_pretrained(tmp_path / "nhwc_model")
    pipelines["nhwc"].to("cpu", "no", False).save_pretrained(tmp_path / "contiguous_model")
    assert not _is_channels_last(outcomes["nhwc"].ema_model)
    assert _md5_of_folder(tmp_path / "nhwc_model") == _md5_of_folder(tmp_path / "contiguous_model")


def test_latent_diffusion_with_controlnet_trains_and_samples_channels_last_as_it_does_contiguous(tmp_path):
    from cxrsynth.tasks.diffusion.controlnet import train_with_control
    from cxrsynth.tasks.diffusion.train_stage import training_setup
    from cxrsynth.tasks.params import Params
    from tests.diffusion_data import make_project
    from tests.test_diffusion_latent import latent_diffusion, write_autoencoder

    frame = make_project(tmp_path, n_images=16, size=16)
    autoencoder = write_autoencoder(tmp_path / "autoencoder")
    diffusion = latent_diffusion(steps=2)
    diffusion = diffusion.model_copy(update={"mask_control": "controlnet",
                                             "controlnet": diffusion.controlnet.model_copy(update={"steps": 1})})
    outcomes, images = {}, {}
    for name, setting in (("plain", False), ("nhwc", True)):
        params = Params(diffusion=diffusion).model_copy(update={"runtime": Params().runtime.model_copy(
            update={"channels_last": setting})})
        setup = training_setup(params, frame, tmp_path, autoencoder)
        assert setup.channels_last is setting
        outcomes[name] = train_with_control(setup, diffusion, tmp_path / name, 0)
        pipeline = setup.pipeline(outcomes[name].ema_model).to("cpu", "no", setting)
        assert pipeline.layouts["autoencoder"].channels_last is setting
        batch = default_collate([setup.dataset[i] for i in range(2)])
        images[name] = pipeline(batch_conditions(batch), [1, 2], 2, 2.0)
    assert _is_channels_last(outcomes["nhwc"].ema_model.controlnet)
    assert [loss for _, loss in outcomes["nhwc"].history] == pytest.approx(
        [loss for _, loss in outcomes["plain"].history], rel=1e-4)
    assert (images["nhwc"] - images["plain"]).abs().max() < 1e-3
