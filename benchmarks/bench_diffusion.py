"""Diffusion benchmarks, each measured side by side in one run.

1. train: steady-state images/s of the project's training loop (tasks.diffusion.training.train_diffusion: data,
   condition encoders and dropout, lesion-preserving loss, EMA, clipping, progress bar) against a
   bare loop of the same MONAI U-Net (same config, batch, input channels and context length; random
   tensors in memory, MSE, AdamW). Rounds alternate so load from other processes hits both alike.
2. sample: images/s of DDIM at 50 steps and DPM-Solver++ at 20 steps on the same model and
   conditions (guidance batched as cond + uncond), alternating rounds. Every sampler and step count
   with its FID: benchmarks/bench_sampling.py.
3. stages: wall time and peak memory (child ru_maxrss) of the train_diffusion and generate flows on
   the default profile, in a scratch project of toy radiographs at the phantom's default size and
   prevalence; ``--train-steps`` caps the training run and its time is extrapolated to the profile's
   step count and preview grids (generate runs its full default plan).

Run from the repository root:  python benchmarks/bench_diffusion.py [train] [sample] [stages]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monai.networks.nets import DiffusionModelUNet  # noqa: E402

from cxrsynth.tasks.diffusion.data import batch_conditions  # noqa: E402
from cxrsynth.tasks.diffusion.model_io import ModelConfig  # noqa: E402
from cxrsynth.tasks.diffusion.train_stage import training_setup  # noqa: E402
from cxrsynth.tasks.diffusion.training import TrainHooks, train_diffusion  # noqa: E402
from cxrsynth.tasks.findings import FINDINGS  # noqa: E402
from cxrsynth.tasks.params import load_params  # noqa: E402
from tests.diffusion_data import make_project  # noqa: E402


def default_params(**train):
    params = load_params(ROOT / "params.yaml")
    diffusion = params.diffusion.model_copy(update={"train": params.diffusion.train.model_copy(update=train)})
    return params.model_copy(update={"diffusion": diffusion})


def toy_project(root: Path, n_images: int, size: int, lesion_rate: float) -> None:
    print(f"writing {n_images} toy radiographs ({size} px) to {root}", file=sys.stderr)
    make_project(root, n_images=n_images, size=size, lesion_rate=lesion_rate)


def bare_loop(config: ModelConfig, batch_size: int, steps: int, context_tokens: int, untimed: int = 1,
              on_step: Callable[[], None] | None = None) -> float:
    """Images/s of the plain MONAI U-Net training loop the project's loop is measured against
    (steady state: the first ``untimed`` steps are not timed); ``on_step`` runs after each step."""
    unet = config.unet
    model = DiffusionModelUNet(
        spatial_dims=2, in_channels=1 + len(FINDINGS) + 1, out_channels=1, channels=unet.channels,
        attention_levels=unet.attention_levels, num_res_blocks=unet.num_res_blocks,
        num_head_channels=unet.num_head_channels, norm_num_groups=unet.norm_num_groups,
        with_conditioning=True, cross_attention_dim=config.label_dim, use_flash_attention=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    size = config.image_size
    inputs = torch.randn(batch_size, 1 + len(FINDINGS) + 1, size, size)
    target = torch.randn(batch_size, 1, size, size)
    context = torch.randn(batch_size, context_tokens, config.label_dim)
    ends = []
    for _ in range(steps):
        timesteps = torch.randint(0, 1000, (batch_size,))
        loss = (model(inputs, timesteps, context) - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if on_step is not None:
            on_step()
        ends.append(time.perf_counter())
    return batch_size * (steps - untimed) / (ends[-1] - ends[untimed - 1])


def project_loop(params, root: Path, steps: int, round_index: int) -> float:
    """Images/s of the project's loop, timed like the bare one: from the end of step 1 to the end of
    the last step (so neither the first batch's file reads nor the final checkpoint write count;
    the loop writes a checkpoint every ``checkpoint_every`` = 250 steps in the default profile)."""
    diffusion = params.diffusion.model_copy(update={"train": params.diffusion.train.model_copy(
        update={"steps": steps, "checkpoint_every": 10**6})})
    prepared = training_setup(params, _manifest(root), root)
    ends: list[float] = []
    train_diffusion(prepared, diffusion, root / f"bench_checkpoints_{round_index}",
                    seed=round_index, hooks=TrainHooks(on_step=lambda step, parts: ends.append(time.perf_counter())))
    return diffusion.train.batch_size * (steps - 1) / (ends[-1] - ends[0])


def _manifest(root: Path):
    from cxrsynth.tasks import manifest

    return manifest.read(root / "data/prepare_masks/manifest.parquet")


def bench_train(args) -> dict:
    params = default_params()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        toy_project(root, n_images=args.images, size=params.ingest.image_size, lesion_rate=0.08)
        prepared = training_setup(params, _manifest(root), root)
        tokens = 1 + len(FINDINGS) + params.diffusion.text_encoder.max_tokens
        bare_loop(prepared.config, params.diffusion.train.batch_size, 2, tokens)  # warm-up
        project_loop(params, root, 2, args.rounds)  # warm-up
        bare, ours = [], []
        for round_index in range(args.rounds):
            # Alternate which loop goes first, so a change in the machine's load hits both alike.
            runs = [lambda: bare.append(bare_loop(prepared.config, params.diffusion.train.batch_size, args.steps, tokens)),
                    lambda: ours.append(project_loop(params, root, args.steps, round_index))]
            for run in runs if round_index % 2 == 0 else runs[::-1]:
                run()
            print(f"  round {round_index}: bare {bare[-1]:.2f} img/s, project {ours[-1]:.2f} img/s "
                  f"(ratio {ours[-1] / bare[-1]:.3f})", file=sys.stderr)
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    result = {"bare_images_per_s": statistics.median(bare), "project_images_per_s": statistics.median(ours),
              "ratio": statistics.median(ratios), "ratios": ratios}
    print(f"train throughput (batch {params.diffusion.train.batch_size}, {params.ingest.image_size} px, "
          f"{args.steps} steps x {args.rounds} rounds): bare MONAI loop {result['bare_images_per_s']:.2f} img/s, "
          f"project loop {result['project_images_per_s']:.2f} img/s (medians); median per-round ratio {result['ratio']:.3f}")
    return result


def bench_sample(args) -> dict:
    from torch.utils.data import default_collate

    params = default_params()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        toy_project(root, n_images=max(args.batch, 24), size=params.ingest.image_size, lesion_rate=0.2)
        prepared = training_setup(params, _manifest(root), root)
        batch = default_collate([prepared.dataset[i] for i in range(args.batch)])
        cond, seeds = batch_conditions(batch), list(range(args.batch))
        pipeline = prepared.pipeline(prepared.model.eval())
        runs = {"ddim_50": ("ddim", 50), "dpm_solver_20": ("dpm_solver", 20)}
        timings: dict[str, list[float]] = {name: [] for name in runs}
        for round_index in range(args.rounds):
            for name, (sampler, steps) in runs.items():
                started = time.perf_counter()
                pipeline.with_sampler(sampler)(cond, seeds, steps, 2.0)
                timings[name].append(args.batch / (time.perf_counter() - started))
                print(f"  round {round_index}: {name} {timings[name][-1]:.3f} img/s", file=sys.stderr)
    result = {f"{name}_images_per_s": statistics.median(values) for name, values in timings.items()}
    result["ratio"] = result["dpm_solver_20_images_per_s"] / result["ddim_50_images_per_s"]
    print(f"sampling throughput (batch {args.batch}, guidance 2.0, median of {args.rounds}): DDIM 50 steps "
          f"{result['ddim_50_images_per_s']:.3f} img/s, DPM-Solver++ 20 steps {result['dpm_solver_20_images_per_s']:.3f} "
          f"img/s, ratio {result['ratio']:.2f}")
    return result


def run_stage(root: Path, stage: str) -> dict:
    """Run one stage as its own process; its wall time and peak resident memory (that process alone)."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "cxrsynth.flows.cli", "stage", stage], cwd=root,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"stage {stage} failed with exit code {child.returncode}")
    return {"wall_s": time.perf_counter() - started, "peak_rss_mb": usage.ru_maxrss / 1024}


def bench_stages(args) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    train = params["diffusion"]["train"]
    full_steps, full_sample_every = train["steps"], train["sample_every"]
    train.update({"steps": args.train_steps, "checkpoint_every": args.train_steps, "sample_every": args.train_steps})
    params["runtime"]["torch_threads"] = args.threads
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        # The phantom's default size: 1500 patients, 20 % with a second study, 70 % train; 3 % rare findings.
        toy_project(root, n_images=1800, size=params["ingest"]["image_size"], lesion_rate=0.03)
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        training = run_stage(root, "train_diffusion")
        trained = json.loads((root / "metrics/train_diffusion.json").read_text())
        per_step = train["batch_size"] / trained["images_per_s"]  # training alone, no grid or checkpoint
        # The measured run made one preview grid and one checkpoint; the full profile makes
        # steps / sample_every grids (the checkpoints are small beside them).
        side = trained["wall_s"] - per_step * trained["steps"]
        grids = full_steps // full_sample_every
        training["extrapolated_wall_s"] = training["wall_s"] + per_step * (full_steps - args.train_steps) \
            + side * (grids - 1)
        generating = run_stage(root, "generate")
        generated = json.loads((root / "metrics/generate.json").read_text())
        planned = generated["planned"]
        generating["images"] = planned
    print(f"train_diffusion ({args.train_steps} of {full_steps} steps, {args.threads} torch thread(s)): "
          f"{training['wall_s']:.0f} s wall, {per_step:.2f} s/step -> about {training['extrapolated_wall_s'] / 60:.0f} min "
          f"for {full_steps} steps; peak RSS {training['peak_rss_mb']:.0f} MB")
    print(f"generate ({planned} images, default sampler): {generating['wall_s']:.0f} s wall "
          f"({generated['images_per_s']:.2f} img/s while sampling); peak RSS {generating['peak_rss_mb']:.0f} MB")
    return {"train_diffusion": training, "generate": generating}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", default=["train", "sample", "stages"], choices=["train", "sample", "stages"])
    parser.add_argument("--steps", type=int, default=10, help="training steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=200, help="toy training images for the throughput runs")
    parser.add_argument("--batch", type=int, default=16, help="images per sampling call")
    parser.add_argument("--train-steps", type=int, default=30, help="steps of the measured train_diffusion run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for which in args.which:
        results[which] = {"train": bench_train, "sample": bench_sample, "stages": bench_stages}[which](args)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
