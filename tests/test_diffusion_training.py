import itertools

import pytest
import torch
from torch.utils.data import default_collate

from cxrsynth.tasks.diffusion.checkpoints import CheckpointMismatch, checkpoints, latest_checkpoint
from cxrsynth.tasks.diffusion.data import batch_conditions
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline
from cxrsynth.tasks.diffusion.train_stage import loss_table, training_metrics, write_training_outputs
from cxrsynth.tasks import device, threads
from cxrsynth.tasks.diffusion.schedulers import training_scheduler
from cxrsynth.tasks.diffusion.training import TrainHooks, diffusion_loss, draw_step, make_ema, train_diffusion
from tests.diffusion_data import save_tiny_bert, tiny_diffusion, tiny_setup

COMBINATIONS = [c for n in (1, 2, 3) for c in itertools.combinations(("label", "mask", "text"), n)]


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("conditions", COMBINATIONS, ids="+".join)
def test_every_condition_combination_trains_a_step_and_samples(tmp_path, conditions):
    _, prepared = tiny_setup(tmp_path, tiny_diffusion(conditions, steps=1))
    before = _weights(prepared.model).clone()
    outcome = train_diffusion(prepared, tiny_diffusion(conditions, steps=1), tmp_path / "checkpoints", seed=0)
    assert outcome.steps == 1 and torch.isfinite(torch.tensor(outcome.history[0][1]))
    assert not torch.equal(_weights(prepared.model), before)
    batch = default_collate([prepared.dataset[i] for i in range(3)])
    cond = batch_conditions(batch).keeping(conditions)
    images = prepared.pipeline(outcome.ema_model)(cond, [1, 2, 3], 2, 2.0)
    assert images.shape == (3, 1, 16, 16) and torch.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1


NATIVE_BF16, WHY = device.native_bf16()
needs_native_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason=f"this CPU lacks native bf16 ({WHY})")


def _record_conv_dtypes(model) -> list[torch.dtype]:
    """The output dtype of the model's first convolution at every forward pass."""
    seen: list[torch.dtype] = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    return seen


def test_every_step_ticks_the_thread_governor(tmp_path, monkeypatch):
    ticks = []
    monkeypatch.setattr(threads, "tick", lambda: ticks.append(1))
    _, prepared = tiny_setup(tmp_path, tiny_diffusion(steps=3))
    train_diffusion(prepared, tiny_diffusion(steps=3), tmp_path / "ck", seed=0)
    assert len(ticks) == 3


@needs_native_bf16
def test_bf16_on_the_cpu_trains_and_samples_with_float32_state(tmp_path):
    diffusion = tiny_diffusion(steps=3, mixed_precision="bf16")
    _, prepared = tiny_setup(tmp_path, diffusion)
    convs = _record_conv_dtypes(prepared.model)
    outcome = train_diffusion(prepared, diffusion, tmp_path / "ck", seed=0)
    assert set(convs) == {torch.bfloat16}  # the forward passes ran in bf16 ...
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in outcome.history)
    saved = torch.load(tmp_path / "ck/step_00000003.pt", weights_only=False)
    optimizer_state = [t for state in saved["optimizer"]["state"].values() for t in state.values() if t.ndim]
    assert {t.dtype for t in [*saved["model"].values(), *saved["ema"].values(), *optimizer_state]
            if t.is_floating_point()} == {torch.float32}  # ... the weights, EMA and Adam moments stay float32
    batch = default_collate([prepared.dataset[i] for i in range(3)])
    pipeline = prepared.pipeline(outcome.ema_model).to("cpu", "bf16")
    assert pipeline.autocast == torch.bfloat16
    images = pipeline(batch_conditions(batch), [1, 2, 3], 3, 2.0)
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    full = prepared.pipeline(outcome.ema_model)(batch_conditions(batch), [1, 2, 3], 3, 2.0)
    assert (images - full).abs().max() < 0.1  # bf16 sampling draws the fp32 images, give or take rounding


def test_the_loss_is_float32_under_bf16_autocast(tmp_path):
    diffusion = tiny_diffusion()
    _, prepared = tiny_setup(tmp_path, diffusion)
    batch = default_collate([prepared.dataset[i] for i in range(4)])
    draws = draw_step(4, batch["image"].shape[1:], diffusion, 50, torch.Generator().manual_seed(0))
    outputs: list[torch.Tensor] = []
    prepared.model.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    scheduler = training_scheduler(prepared.config.process)
    losses = diffusion_loss(prepared.model, scheduler, batch, diffusion, draws, torch.device("cpu"), torch.bfloat16)
    assert outputs[0].dtype == torch.bfloat16
    assert {name: value.dtype for name, value in losses.items()} == dict.fromkeys(losses, torch.float32)
    plain = diffusion_loss(prepared.model, scheduler, batch, diffusion, draws, torch.device("cpu"))
    assert outputs[1].dtype == torch.float32
    assert losses["loss"].item() == pytest.approx(plain["loss"].item(), rel=0.05)


def test_auto_on_a_cpu_without_bf16_flags_trains_in_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "_cpuinfo_text", lambda: "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    diffusion = tiny_diffusion(steps=1, mixed_precision="auto")
    _, prepared = tiny_setup(tmp_path, diffusion)
    convs = _record_conv_dtypes(prepared.model)
    train_diffusion(prepared, diffusion, tmp_path / "ck", seed=0)
    assert convs == [torch.float32]


def test_fp16_on_the_cpu_is_refused_naming_the_key(tmp_path):
    diffusion = tiny_diffusion(steps=1, mixed_precision="fp16")
    _, prepared = tiny_setup(tmp_path, diffusion)
    with pytest.raises(ValueError, match=r"diffusion\.train\.mixed_precision: fp16 autocast is for CUDA only"):
        train_diffusion(prepared, diffusion, tmp_path / "ck", seed=0)


class Interrupted(RuntimeError):
    pass


def _stop_at(step):
    def on_step(current, parts):
        if current == step:
            raise Interrupted(f"stopped at step {step}")
    return TrainHooks(on_step=on_step)


def test_resume_after_interruption_continues_exactly(tmp_path):
    diffusion = tiny_diffusion(steps=6, checkpoint_every=2)
    _, straight = tiny_setup(tmp_path / "a", diffusion)
    reference = train_diffusion(straight, diffusion, tmp_path / "a/ck", seed=0)

    _, first = tiny_setup(tmp_path / "b", diffusion)
    with pytest.raises(Interrupted):
        train_diffusion(first, diffusion, tmp_path / "b/ck", seed=0, hooks=_stop_at(5))
    assert latest_checkpoint(tmp_path / "b/ck").name == "step_00000004.pt"  # lost one step, not the run
    assert len(checkpoints(tmp_path / "b/ck")) == 1

    _, second = tiny_setup(tmp_path / "b", diffusion)  # a fresh process: new, differently seeded weights
    torch.manual_seed(123)
    resumed = train_diffusion(second, diffusion, tmp_path / "b/ck", seed=0)
    assert resumed.resumed_from == 4 and resumed.steps_this_run == 2 and resumed.steps == 6
    assert [s for s, _ in resumed.history] == list(range(1, 7))
    assert [loss for _, loss in resumed.history] == pytest.approx([loss for _, loss in reference.history])
    assert torch.allclose(_weights(resumed.ema_model), _weights(reference.ema_model), atol=1e-6)
    assert torch.allclose(_weights(second.model), _weights(straight.model), atol=1e-6)


def test_finished_run_resumes_to_a_no_op(tmp_path):
    diffusion = tiny_diffusion(steps=2)
    _, prepared = tiny_setup(tmp_path, diffusion)
    done = train_diffusion(prepared, diffusion, tmp_path / "ck", seed=0)
    again = train_diffusion(prepared, diffusion, tmp_path / "ck", seed=0)
    assert again.steps_this_run == 0 and again.history == done.history
    assert torch.equal(_weights(again.ema_model), _weights(done.ema_model))


def test_checkpoint_of_a_different_model_is_refused_with_the_difference(tmp_path):
    _, prepared = tiny_setup(tmp_path, tiny_diffusion(steps=1))
    train_diffusion(prepared, tiny_diffusion(steps=1), tmp_path / "ck", seed=0)
    wider = tiny_diffusion(steps=2).model_copy(update={"label_dim": 32})
    _, other = tiny_setup(tmp_path, wider)
    with pytest.raises(CheckpointMismatch, match=r"label_dim: checkpoint 16, now 32.*delete"):
        train_diffusion(other, wider, tmp_path / "ck", seed=0)


def test_ema_warms_up_then_averages_slowly():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = make_ema(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(0.0)
        ema.update_parameters(model)  # the first update copies
        model.weight.fill_(1.0)
        ema.update_parameters(model)
    assert ema.module.weight.item() == pytest.approx(1 - 2 / 11)  # decay (1 + n) / (10 + n) at n = 1


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_model_folder_round_trip_and_outputs(tmp_path, prediction):
    diffusion = tiny_diffusion(steps=2).model_copy(update={"prediction": prediction})
    _, prepared = tiny_setup(tmp_path, diffusion)
    outcome = train_diffusion(prepared, diffusion, tmp_path / "ck", seed=0)
    write_training_outputs(outcome, prepared, tmp_path)
    pipeline = GenerationPipeline.from_pretrained(tmp_path / "data/train_diffusion/model")
    config = pipeline.config
    assert config == prepared.config and pipeline.tokenizer.vocabulary == prepared.tokenizer.vocabulary
    assert config.process.prediction == prediction
    assert torch.equal(_weights(pipeline.denoiser), _weights(outcome.ema_model))
    assert (tmp_path / "plots/train_diffusion/loss.csv").read_text() == loss_table(outcome.history)
    metrics = training_metrics(outcome, prepared)
    assert metrics["steps"] == 2 and metrics["n_train_images"] == len(prepared.dataset)
    assert config.digest in (tmp_path / "data/train_diffusion/model/config.json").read_text()


def test_pretrained_text_encoder_trains_and_reloads_from_the_model_folder(tmp_path):
    bert = save_tiny_bert(tmp_path / "bert")
    diffusion = tiny_diffusion(steps=1).model_copy(update={
        "text_encoder": tiny_diffusion().text_encoder.model_copy(update={"kind": "pretrained", "path": str(bert)})})
    _, prepared = tiny_setup(tmp_path, diffusion)
    frozen = {n: p.clone() for n, p in prepared.model.text_encoder.backbone.named_parameters()}
    outcome = train_diffusion(prepared, diffusion, tmp_path / "ck", seed=0)
    assert all(torch.equal(p, frozen[n]) for n, p in prepared.model.text_encoder.backbone.named_parameters())
    prepared.pipeline(outcome.ema_model).save_pretrained(tmp_path / "model")
    (bert / "model.safetensors").unlink()  # generation needs only the model folder
    pipeline = GenerationPipeline.from_pretrained(tmp_path / "model")
    model, tokenizer = pipeline.denoiser, pipeline.tokenizer
    batch = default_collate([prepared.dataset[i] for i in range(2)])
    noisy, timesteps = torch.randn(2, 1, 16, 16), torch.tensor([3, 30])
    with torch.no_grad():
        assert torch.allclose(model(noisy, timesteps, batch_conditions(batch)),
                              outcome.ema_model(noisy, timesteps, batch_conditions(batch)), atol=1e-5)
    assert tokenizer.encode(["mild left nodule."])["text_attention"].sum() == 6


def test_setup_quarantines_unreadable_training_images(tmp_path):
    from cxrsynth.tasks.diffusion.train_stage import training_setup
    from cxrsynth.tasks.params import Params
    from tests.diffusion_data import make_project

    frame = make_project(tmp_path, n_images=16, size=16)
    (tmp_path / frame.at[0, "path"]).write_bytes(b"broken")
    prepared = training_setup(Params(diffusion=tiny_diffusion()), frame, tmp_path)
    assert [q["image_id"] for q in prepared.quarantined] == [frame.at[0, "image_id"]]
    assert frame.at[0, "image_id"] not in set(prepared.dataset.frame["image_id"])


@pytest.mark.slow
def test_stage_killed_mid_run_resumes_from_its_last_checkpoint(tmp_path, diffusion_project):
    """SIGKILL, not an exception: what survives is what was on disk (atomic checkpoint writes)."""
    import json
    import signal
    import subprocess
    import sys
    import time

    diffusion_project(diffusion={"train": {"steps": 60, "checkpoint_every": 5, "sample_every": 1000}})
    command = [sys.executable, "-m", "cxrsynth.flows.cli", "stage", "train_diffusion"]
    first = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints_dir = tmp_path / "data/train_diffusion/checkpoints"
    deadline = time.monotonic() + 300
    while latest_checkpoint(checkpoints_dir) is None and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = int(latest_checkpoint(checkpoints_dir).stem.split("_")[1])
    assert 0 < killed_at < 60, "the run must be killed between its first checkpoint and its end"

    resumed = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics/train_diffusion.json").read_text())
    assert metrics["resumed_from_step"] >= killed_at and metrics["steps"] == 60
    assert not list(checkpoints_dir.glob(".*.tmp"))  # no half-written checkpoint left behind
