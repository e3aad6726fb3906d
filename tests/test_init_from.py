"""init_from: MONAI-layout bundles the tests write (today's and MONAI Generative's older key names), this
project's model folders and checkpoints, refusal of another config, and the autoencoder's start."""

import json
import re
from dataclasses import asdict

import pytest
import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from torch.utils.data import default_collate

from cxrsynth.models.autoencoder import AutoencoderConfig, build_autoencoder
from cxrsynth.tasks.autoencoder.model_io import save_autoencoder
from cxrsynth.tasks.diffusion.data import batch_conditions
from cxrsynth.tasks.autoencoder.training import train_autoencoder
from cxrsynth.tasks.diffusion.model_io import build_model, load_text_backbone
from cxrsynth.tasks.diffusion.tokenizer import PretrainedTokenizer, pretrained_folders
from cxrsynth.tasks.diffusion.training import train_diffusion
from cxrsynth.tasks.init_from import (
    adapt_input_conv,
    init_autoencoder,
    init_diffusion,
    load_matching,
)
from cxrsynth.tasks.params import AutoencoderParams
from tests.diffusion_data import save_tiny_bert, tiny_diffusion, tiny_setup

# Small networks in the shape of the MIMIC-CXR bundle's definitions (latent in/out channels 3, attention
# on the deeper levels, cross-attention to the context), with this project's tiny widths.
DIFFUSION_DEF = {"_target_": "monai.networks.nets.DiffusionModelUNet", "spatial_dims": 2, "in_channels": 3,
                 "out_channels": 3, "channels": [8, 16], "attention_levels": [False, True], "num_res_blocks": 1,
                 "norm_num_groups": 4, "num_head_channels": 8, "with_conditioning": True,
                 "cross_attention_dim": "@context_width"}
AUTOENCODER_DEF = {"_target_": "monai.networks.nets.AutoencoderKL", "spatial_dims": 2, "in_channels": 1,
                   "out_channels": 1, "latent_channels": 3, "channels": [8, 16], "num_res_blocks": [1, 1],
                   "norm_num_groups": 8, "attention_levels": [False, True],
                   "with_encoder_nonlocal_attn": True, "with_decoder_nonlocal_attn": True}
AUTOENCODER = AutoencoderConfig(downsampling=2, latent_channels=3, base_channels=8, attention_at_bottom=True)


def _bundle_networks(context_width: int) -> tuple[DiffusionModelUNet, AutoencoderKL]:
    torch.manual_seed(1)
    unet_args = {k: v for k, v in DIFFUSION_DEF.items() if not k.startswith("_")} | {"cross_attention_dim": context_width}
    return DiffusionModelUNet(**unet_args), AutoencoderKL(**{k: v for k, v in AUTOENCODER_DEF.items() if k[0] != "_"})


def old_names(state: dict) -> dict:
    """Today's MONAI names written back in MONAI Generative's (what the real MIMIC-CXR bundle holds)."""
    renamed = {}
    for name, value in state.items():
        old = re.sub(r"\.attn\.(to_[qkv])\.", r".\1.", name)
        old = re.sub(r"\.attn\.out_proj\.", ".proj_attn.", old)
        old = re.sub(r"(attn[12])\.out_proj\.", r"\1.to_out.0.", old)
        renamed[old.replace("postconv", "conv")] = value
    return renamed


def write_bundle(folder, context_width=16, legacy=False, text=None):
    """A MONAI bundle in the MIMIC-CXR layout: configs/inference.json, models/autoencoder.pth and
    models/diffusion_model.pth (plain state dicts)."""
    unet, autoencoder = _bundle_networks(context_width)
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    config = {"context_width": context_width, "autoencoder_def": AUTOENCODER_DEF, "diffusion_def": DIFFUSION_DEF,
              "load_diffusion_path": "$@model_dir + '/diffusion_model.pth'"}
    (folder / "configs/inference.json").write_text(json.dumps(config))
    (folder / "configs/metadata.json").write_text(json.dumps({"version": "0.0.1", "task": "test"}))
    for network, name in ((unet, "diffusion_model.pth"), (autoencoder, "autoencoder.pth")):
        state = network.state_dict()
        torch.save(old_names(state) if legacy else state, folder / "models" / name)
    return unet, autoencoder


@pytest.mark.parametrize("legacy", [False, True], ids=["todays_names", "generative_names"])
def test_a_bundle_loads_what_matches_and_names_the_rest(tmp_path, legacy, capsys):
    bundle_unet, _ = write_bundle(tmp_path / "bundle", legacy=legacy)
    _, prepared = tiny_setup(tmp_path, tiny_diffusion(("label", "mask")))
    report = init_diffusion(prepared.model, prepared.config, tmp_path / "bundle")
    ours, theirs = prepared.model.state_dict(), bundle_unet.state_dict()
    assert report.kind == "MONAI bundle" and len(report.loaded) == len(theirs) - 3
    assert all(torch.equal(ours[name], theirs[name.removeprefix("unet.")]) for name in report.loaded)
    mismatched = {u.name: (u.ours, u.source) for u in report.not_loaded if u.source is not None}
    findings = len(prepared.config.findings)
    assert mismatched == {  # the image's channels (1 + masks) against the latent's 3, in and out
        "unet.conv_in.conv.weight": ((8, findings + 2, 3, 3), (8, 3, 3, 3)),
        "unet.out.2.conv.weight": ((1, 8, 3, 3), (3, 8, 3, 3)), "unet.out.2.conv.bias": ((1,), (3,)),
    }
    ours_only = {u.name for u in report.not_loaded if u.source is None}
    assert "anchor" in ours_only and all(n.startswith(("anchor", "label_encoder.")) for n in ours_only)
    assert "unet.conv_in.conv.bias" in report.loaded and not report.unused
    printed = capsys.readouterr().out
    assert "not loaded unet.conv_in.conv.weight: ours (8, 8, 3, 3), source (8, 3, 3, 3)" in printed


def test_a_bundle_with_another_context_width_loads_all_but_cross_attention(tmp_path):
    write_bundle(tmp_path / "bundle", context_width=32)
    _, prepared = tiny_setup(tmp_path, tiny_diffusion(("label", "mask")))
    report = init_diffusion(prepared.model, prepared.config, tmp_path / "bundle")
    cross = {u.name for u in report.not_loaded if u.source is not None and "attn2.to_" in u.name}
    assert cross and all(name.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for name in cross)


def test_a_bundle_autoencoder_loads_into_a_project_autoencoder(tmp_path):
    _, bundle_autoencoder = write_bundle(tmp_path / "bundle", legacy=True)
    autoencoder = build_autoencoder(AUTOENCODER)
    report = init_autoencoder(autoencoder, asdict(AUTOENCODER), tmp_path / "bundle")
    assert not report.not_loaded and not report.unused
    assert all(torch.equal(a, b) for a, b in zip(autoencoder.state_dict().values(),
                                                 bundle_autoencoder.state_dict().values()))


def test_a_bundle_whose_weights_do_not_fit_its_definition_is_refused(tmp_path):
    write_bundle(tmp_path / "bundle")
    config = json.loads((tmp_path / "bundle/configs/inference.json").read_text())
    config["diffusion_def"]["channels"] = [16, 16]
    config["diffusion_def"]["norm_num_groups"] = 4
    (tmp_path / "bundle/configs/inference.json").write_text(json.dumps(config))
    _, prepared = tiny_setup(tmp_path, tiny_diffusion(("label", "mask")))
    with pytest.raises(ValueError, match=r"diffusion_model\.pth: does not fit the bundle's own DiffusionModelUNet"):
        init_diffusion(prepared.model, prepared.config, tmp_path / "bundle")


def test_a_project_model_folder_and_checkpoint_load_in_full(tmp_path):
    diffusion = tiny_diffusion(("label", "mask"), steps=2)
    _, prepared = tiny_setup(tmp_path, diffusion)
    outcome = train_diffusion(prepared, diffusion, tmp_path / "ck", seed=0)
    prepared.pipeline(outcome.ema_model).save_pretrained(tmp_path / "model")
    trained = outcome.ema_model.state_dict()
    for source, kind in ((tmp_path / "model", "model folder"), (tmp_path / "ck", "checkpoint"),
                         (tmp_path / "ck/step_00000002.pt", "checkpoint")):
        fresh = build_model(prepared.config)
        report = init_diffusion(fresh, prepared.config, source)
        assert report.kind == kind and not report.not_loaded and not report.unused and not report.adapted
        assert all(torch.equal(value, trained[name]) for name, value in fresh.state_dict().items())


def test_a_project_model_of_another_config_is_refused_naming_the_differing_keys(tmp_path):
    diffusion = tiny_diffusion(("label", "mask"), steps=1)
    _, prepared = tiny_setup(tmp_path, diffusion)
    train_diffusion(prepared, diffusion, tmp_path / "ck", seed=0)
    other = tiny_diffusion(("label", "mask")).model_copy(update={"label_dim": 32, "timesteps": 60})
    _, other_setup = tiny_setup(tmp_path / "other", other)
    with pytest.raises(ValueError, match=r"diffusion\.init_from: .*another config \(label_dim: checkpoint 16, now 32; "
                                         r"process\.timesteps: checkpoint 50, now 60\)"):
        init_diffusion(other_setup.model, other_setup.config, tmp_path / "ck")


def test_a_concat_model_becomes_the_frozen_base_of_a_controlnet_model_exactly(tmp_path):
    """Across mask_control the U-Net's first convolution keeps its image channel: the loaded base predicts
    what the concat model predicts with its mask dropped."""
    concat = tiny_diffusion(("label", "mask"), steps=1)
    _, prepared = tiny_setup(tmp_path, concat)
    train_diffusion(prepared, concat, tmp_path / "ck", seed=0)
    control = concat.model_copy(update={"mask_control": "controlnet"})
    _, controlled = tiny_setup(tmp_path / "control", control)
    report = init_diffusion(controlled.model, controlled.config, tmp_path / "ck")
    assert report.adapted == ["unet.conv_in.conv.weight"]
    assert {u.name.split(".")[0] for u in report.not_loaded} == {"controlnet"}
    concat_model = build_model(prepared.config)
    init_diffusion(concat_model, prepared.config, tmp_path / "ck")
    cond = batch_conditions(default_collate([prepared.dataset[i] for i in range(3)])).keeping(("label",))
    noisy, timesteps = torch.randn(3, 1, 16, 16), torch.full((3,), 10)
    with torch.no_grad():
        assert torch.allclose(controlled.model.eval()(noisy, timesteps, cond), concat_model.eval()(noisy, timesteps, cond),
                              atol=1e-5)


def test_adapt_input_conv_touches_only_the_first_convolution_across_channel_counts():
    ours, theirs = torch.zeros(8, 4, 3, 3), torch.randn(8, 1, 3, 3)
    fitted = adapt_input_conv("unet.conv_in.conv.weight", ours, theirs)
    assert torch.equal(fitted[:, :1], theirs) and not fitted[:, 1:].any()
    assert adapt_input_conv("unet.out.2.conv.weight", ours, theirs) is None
    assert adapt_input_conv("unet.conv_in.conv.weight", torch.zeros(4, 4, 3, 3), theirs) is None


def test_load_matching_reports_unused_source_weights(capsys):
    model = torch.nn.Linear(2, 3)
    report = load_matching(model, {"weight": torch.ones(3, 2), "extra": torch.ones(5)}, "src", "test")
    assert report.loaded == ["weight"] and [u.name for u in report.not_loaded] == ["bias"]
    assert [(u.name, u.source) for u in report.unused] == [("extra", (5,))]
    assert json.loads(json.dumps(report.as_dict()))["unused"][0]["name"] == "extra"
    assert "unused extra: source (5,)" in capsys.readouterr().out


def test_a_missing_or_unrecognised_source_is_named(tmp_path):
    _, prepared = tiny_setup(tmp_path, tiny_diffusion(("label", "mask")))
    with pytest.raises(ValueError, match=r"diffusion\.init_from: .*nowhere does not exist"):
        init_diffusion(prepared.model, prepared.config, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a model folder"):
        init_diffusion(prepared.model, prepared.config, tmp_path / "empty")
    save_autoencoder(tmp_path / "autoencoder", build_autoencoder(AUTOENCODER), AUTOENCODER)
    with pytest.raises(ValueError, match=r"autoencoder is not a diffusion model of this project \(its config: \["):
        init_diffusion(prepared.model, prepared.config, tmp_path / "autoencoder")


def test_the_autoencoder_starts_from_init_from_unless_it_resumes(tmp_path):
    source = build_autoencoder(AUTOENCODER)
    save_autoencoder(tmp_path / "ae_model", source, AUTOENCODER)
    params = AutoencoderParams(downsampling=2, latent_channels=3, base_channels=8, attention_at_bottom=True, steps=1,
                               batch_size=2, mixed_precision="no", init_from=str(tmp_path / "ae_model"))
    images = torch.rand(4, 1, 16, 16) * 2 - 1
    outcome = train_autoencoder(images, params, seed=0, checkpoint_dir=tmp_path / "ck")
    assert outcome.init_report is not None and not outcome.init_report.not_loaded
    again = train_autoencoder(images, params, seed=0, checkpoint_dir=tmp_path / "ck")
    assert again.init_report is None and again.resumed_from == 1
    other = params.model_copy(update={"latent_channels": 4, "checkpoint_every": 1})
    with pytest.raises(ValueError, match=r"autoencoder\.init_from: .*latent_channels: checkpoint 3, now 4"):
        train_autoencoder(images, other, seed=0, checkpoint_dir=tmp_path / "ck_other")


def test_a_diffusers_folder_serves_as_the_pretrained_text_encoder(tmp_path):
    """The bundle's text encoder lives outside it (stabilityai/stable-diffusion-2-1-base: text_encoder/ and
    tokenizer/ subfolders); a local copy of that layout is a text_encoder.path."""
    save_tiny_bert(tmp_path / "sd/text_encoder")
    save_tiny_bert(tmp_path / "sd/tokenizer")
    assert pretrained_folders(tmp_path / "sd") == (tmp_path / "sd/text_encoder", tmp_path / "sd/tokenizer")
    assert pretrained_folders(tmp_path / "sd/text_encoder") == (tmp_path / "sd/text_encoder",) * 2
    backbone = load_text_backbone(tmp_path / "sd")
    tokens = PretrainedTokenizer.from_folder(tmp_path / "sd", 8).encode(["mild nodule", None])
    hidden = backbone(input_ids=tokens["text_ids"], attention_mask=tokens["text_attention"].long()).last_hidden_state
    assert hidden.shape == (2, 8, 16)


def test_the_report_is_logged_as_an_artifact_and_counts(tmp_path):
    import mlflow

    from cxrsynth.tasks.init_from import REPORT_FILE
    from cxrsynth.tasks.tracking import log_init_report

    report = load_matching(torch.nn.Linear(2, 3), {"weight": torch.ones(3, 2)}, "src", "test")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("init_from", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        log_init_report(report)
    logged = mlflow.get_run(run.info.run_id).data.params
    assert logged["init_from.loaded"] == "1" and logged["init_from.not_loaded"] == "1"
    artifact = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=REPORT_FILE,
                                                   dst_path=str(tmp_path / "out"))
    assert json.loads(open(artifact).read())["not_loaded"][0]["name"] == "bias"
