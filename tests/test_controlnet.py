"""ControlNet mask control: the branch's residuals, guidance without the mask, branch-only training on a
frozen base, both training phases with resume, every sampler, and the model folder."""

import json

import pytest
import torch
from torch.utils.data import default_collate

from cxrsynth.models.conditioning import concatenate
from cxrsynth.tasks.diffusion.checkpoints import latest_checkpoint
from cxrsynth.tasks.diffusion.controlnet import (
    BASE_FOLDER,
    branch_from_base,
    branch_settings,
    train_branch_only,
    train_with_control,
)
from cxrsynth.tasks.diffusion.data import batch_conditions
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline
from cxrsynth.tasks.diffusion.sampling import GuidedDenoiser
from cxrsynth.tasks.diffusion.schedulers import SAMPLERS
from cxrsynth.tasks.diffusion.training import TrainHooks, train_diffusion
from cxrsynth.tasks.params import DiffusionParams
from tests.diffusion_data import tiny_diffusion, tiny_setup


def control_diffusion(conditions=("label", "mask", "text"), base_steps=1, branch_steps=2, **settings) -> DiffusionParams:
    params = tiny_diffusion(conditions, steps=base_steps)
    return params.model_copy(update={"mask_control": "controlnet",
                                     "controlnet": params.controlnet.model_copy(update={"steps": branch_steps}),
                                     **settings})


def _give_voice(model):
    """MONAI zero-initialises output layers and ControlNet's zero convolutions: make every path live."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.abs().sum() == 0:
                parameter.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    _, prepared = tiny_setup(tmp_path_factory.mktemp("controlnet"), control_diffusion())
    _give_voice(prepared.model).eval()
    batch = default_collate([prepared.dataset[i] for i in range(3)])
    return prepared, batch_conditions(batch)


def _base_state(model) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items() if not name.startswith("controlnet.")}


def test_the_base_sees_no_mask_channels_and_the_branch_takes_them(controlled):
    prepared, _ = controlled
    model = prepared.model
    assert model.unet.conv_in.conv.in_channels == 1
    assert model.controlnet.controlnet_cond_embedding.conv_in.conv.in_channels == len(prepared.config.findings) + 1


def test_residuals_apply_only_to_images_whose_mask_is_given(controlled):
    prepared, cond = controlled
    model = prepared.model
    noisy, timesteps = torch.randn(3, 1, 16, 16), torch.full((3,), 20)
    mixed = cond.with_keep(torch.ones(3, dtype=torch.bool), torch.tensor([True, False, True]),
                           torch.ones(3, dtype=torch.bool))
    with torch.no_grad():
        output = model(noisy, timesteps, mixed)
        encoded = model.encode(mixed)
        base = model.unet(noisy, timesteps, context=encoded.context)
    assert torch.allclose(output[1], base[1], atol=1e-6)  # mask dropped: the base alone
    assert not torch.allclose(output[0], base[0], atol=1e-3) and not torch.allclose(output[2], base[2], atol=1e-3)


def test_guidance_contrasts_with_the_base_without_control_residuals(controlled):
    prepared, cond = controlled
    model = prepared.model
    noisy, timestep = torch.randn(3, 1, 16, 16), torch.tensor(20)
    uncond = cond.dropped()
    with torch.no_grad():
        conditional = model(noisy, timestep.expand(3), cond)
        base_alone = model.unet(noisy, timestep.expand(3), context=model.encode(uncond).context)
        guided = GuidedDenoiser(model, cond, uncond, 3.0)(noisy, timestep)
        mask_only_dropped = model(noisy, timestep.expand(3), cond.keeping(("label", "text")))
        label_text_base = model.unet(noisy, timestep.expand(3), context=model.encode(cond).context)
    assert torch.allclose(guided, base_alone + 3.0 * (conditional - base_alone), atol=1e-5)
    assert torch.allclose(mask_only_dropped, label_text_base, atol=1e-6)  # dropping the mask drops the residuals


def test_training_the_branch_leaves_the_base_unchanged_bit_for_bit(tmp_path):
    diffusion = control_diffusion(init_from=None)
    _, prepared = tiny_setup(tmp_path, diffusion)
    model = train_branch_only(prepared.model)
    branch_from_base(model)
    before, branch_before = _base_state(model), [p.detach().clone() for p in model.controlnet.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(model.controlnet.conv_in.parameters(), model.unet.conv_in.parameters()))
    outcome = train_diffusion(prepared, branch_settings(diffusion), tmp_path / "ck", seed=0)
    assert outcome.steps == diffusion.controlnet.steps
    for state in (_base_state(model), _base_state(outcome.ema_model)):  # the trained model and its EMA
        assert state.keys() == before.keys()
        assert all(torch.equal(state[name], before[name]) for name in before), "a base weight moved"
    assert any(not torch.equal(a, b) for a, b in zip(model.controlnet.parameters(), branch_before))
    saved = torch.load(latest_checkpoint(tmp_path / "ck"), weights_only=True)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert len(saved["optimizer"]["param_groups"][0]["params"]) == len(trained) == len(list(model.controlnet.parameters()))


def test_base_then_branch_in_one_stage_resumes_to_a_no_op(tmp_path):
    diffusion = control_diffusion(base_steps=2, branch_steps=2)
    _, prepared = tiny_setup(tmp_path, diffusion)
    seen: list[int] = []
    outcome = train_with_control(prepared, diffusion, tmp_path / "ck", seed=0,
                                 hooks=TrainHooks(on_step=lambda step, parts: seen.append(step)))
    assert seen == [1, 2, 3, 4] and [step for step, _ in outcome.history] == [1, 2, 3, 4]
    assert outcome.steps == 4 and outcome.steps_this_run == 4 and outcome.images_per_s > 0
    assert latest_checkpoint(tmp_path / "ck" / BASE_FOLDER).name == "step_00000002.pt"
    assert latest_checkpoint(tmp_path / "ck").name == "step_00000002.pt"
    base_ema = torch.load(latest_checkpoint(tmp_path / "ck" / BASE_FOLDER), weights_only=True)["ema"]
    final = outcome.ema_model.state_dict()
    assert all(torch.equal(base_ema[f"module.{name}"], final[name]) for name in final
               if not name.startswith("controlnet.")), "the branch's training moved the base"
    _, again = tiny_setup(tmp_path / "again", diffusion)
    resumed = train_with_control(again, diffusion, tmp_path / "ck", seed=0)
    assert resumed.steps == 4 and resumed.steps_this_run == 0
    assert all(torch.equal(value, resumed.ema_model.state_dict()[name]) for name, value in final.items())


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_samples_a_controlnet_model(controlled, sampler):
    prepared, cond = controlled
    every = concatenate([cond, cond.keeping(("label", "text")), cond.dropped()])
    images = prepared.pipeline().with_sampler(sampler)(every, list(range(len(every))), 3, 2.0)
    assert images.shape == (9, 1, 16, 16) and torch.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0


def test_the_model_folder_records_mask_control_and_reloads(controlled, tmp_path):
    prepared, cond = controlled
    pipeline = prepared.pipeline()
    pipeline.save_pretrained(tmp_path / "model")
    assert json.loads((tmp_path / "model/config.json").read_text())["mask_control"] == "controlnet"
    loaded = GenerationPipeline.from_pretrained(tmp_path / "model")
    assert loaded.config.mask_control == "controlnet" and loaded.denoiser.controlnet is not None
    assert torch.equal(loaded(cond, [1, 2, 3], 3, 2.0), pipeline(cond, [1, 2, 3], 3, 2.0))


def test_controlnet_without_the_mask_condition_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="mask_control 'controlnet' needs 'mask' in diffusion.conditions"):
        DiffusionParams.model_validate({"mask_control": "controlnet", "conditions": ["label", "text"]})


def test_with_init_from_the_loaded_base_is_kept_as_is_and_only_the_branch_trains(tmp_path):
    concat = tiny_diffusion(("label", "mask"), steps=1)
    _, prepared = tiny_setup(tmp_path, concat)
    train_diffusion(prepared, concat, tmp_path / "concat_ck", seed=0)
    diffusion = control_diffusion(("label", "mask"), branch_steps=2, init_from=str(tmp_path / "concat_ck"))
    _, controlled = tiny_setup(tmp_path / "control", diffusion)
    assert controlled.init_report is not None and controlled.init_report.adapted == ["unet.conv_in.conv.weight"]
    loaded = _base_state(controlled.model)
    outcome = train_with_control(controlled, diffusion, tmp_path / "ck", seed=0)
    assert outcome.steps == 2 and not (tmp_path / "ck" / BASE_FOLDER).exists()
    final = _base_state(outcome.ema_model)
    assert all(torch.equal(final[name], loaded[name]) for name in loaded)


def test_a_concat_folder_records_mask_control_and_one_saved_before_the_key_still_loads(tmp_path):
    _, prepared = tiny_setup(tmp_path, tiny_diffusion(("label", "mask")))
    prepared.pipeline().save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model/config.json").read_text())
    assert config["mask_control"] == "concat"
    del config["mask_control"]  # what a folder written before mask_control existed holds
    (tmp_path / "model/config.json").write_text(json.dumps(config))
    assert GenerationPipeline.from_pretrained(tmp_path / "model").config.mask_control == "concat"
