import pytest
import torch

from tests.conftest import conv_output_dtypes

from cxrsynth.tasks import device, threads
from cxrsynth.tasks.autoencoder.training import load_perceptual_network, train_autoencoder
from cxrsynth.tasks.diffusion.checkpoints import CheckpointMismatch
from cxrsynth.tasks.params import AutoencoderParams

TINY = dict(downsampling=2, latent_channels=2, base_channels=8, steps=6, batch_size=4, checkpoint_every=2,
            learning_rate=1e-3, mixed_precision="no")  # float32: the same numbers on every CPU


class Interrupt(Exception):
    pass


def images(n=10, size=16):
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, size, size, generator=generator) * 2 - 1


def params(**overrides):
    return AutoencoderParams.model_validate(TINY | overrides)


@pytest.mark.parametrize("adversarial", [0.0, 0.1])
def test_resume_after_an_interruption_ends_on_the_same_weights(tmp_path, adversarial):
    settings = params(loss={"adversarial_weight": adversarial, "adversarial_from_step": 2})
    data = images(size=32)  # the patch discriminator needs at least 32 px
    whole = train_autoencoder(data, settings, seed=3, checkpoint_dir=tmp_path / "a")

    def stop_at_3(step, parts):
        if step == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_autoencoder(data, settings, seed=3, checkpoint_dir=tmp_path / "b", on_step=stop_at_3)
    resumed = train_autoencoder(data, settings, seed=3, checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from == 2 and resumed.steps == 6
    assert [loss for _, loss in resumed.history] == pytest.approx([loss for _, loss in whole.history])
    for (name, a), (_, b) in zip(whole.ema_model.state_dict().items(), resumed.ema_model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    if adversarial:
        assert "discriminator" in resumed.last_parts


def test_every_step_ticks_the_thread_governor(tmp_path, monkeypatch):
    ticks = []
    monkeypatch.setattr(threads, "tick", lambda: ticks.append(1))
    train_autoencoder(images(), params(steps=3), seed=0, checkpoint_dir=tmp_path)
    assert len(ticks) == 3


def test_training_lowers_the_reconstruction_error(tmp_path):
    outcome = train_autoencoder(images(8), params(steps=40, checkpoint_every=40), seed=0, checkpoint_dir=tmp_path)
    first, last = outcome.history[0][1], outcome.history[-1][1]
    assert last < 0.8 * first


def test_a_checkpoint_of_another_config_is_refused_naming_the_key(tmp_path):
    train_autoencoder(images(), params(steps=2), seed=0, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch, match="latent_channels"):
        train_autoencoder(images(), params(steps=4, latent_channels=3), seed=0, checkpoint_dir=tmp_path)


def test_perceptual_term_needs_a_local_network(tmp_path):
    with pytest.raises(ValueError, match="perceptual_network"):
        params(loss={"perceptual_weight": 0.1})
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_perceptual_network(tmp_path / "missing.pt")
    scripted = torch.jit.script(torch.nn.Conv2d(1, 4, 3, padding=1))
    scripted.save(str(tmp_path / "features.pt"))
    perceptual = load_perceptual_network(tmp_path / "features.pt")
    outcome = train_autoencoder(images(), params(steps=2, loss={"perceptual_weight": 0.1,
                                                                 "perceptual_network": str(tmp_path / "features.pt")}),
                                seed=0, checkpoint_dir=tmp_path / "run", perceptual=perceptual)
    assert "perceptual" in outcome.last_parts


@pytest.mark.skipif(not device.native_bf16()[0], reason=f"this CPU lacks native bf16 ({device.native_bf16()[1]})")
def test_bf16_trains_the_autoencoder_and_discriminator_with_float32_weights(tmp_path):
    settings = params(steps=3, mixed_precision="bf16", loss={"adversarial_weight": 0.1})
    with conv_output_dtypes() as convs:
        outcome = train_autoencoder(images(size=32), settings, seed=0, checkpoint_dir=tmp_path)
    assert set(convs) == {torch.bfloat16}
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in outcome.history) and "discriminator" in outcome.last_parts
    assert {v.dtype for v in outcome.ema_model.state_dict().values() if v.is_floating_point()} == {torch.float32}
