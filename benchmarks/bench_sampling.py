"""Sampling speed against quality, per sampler and step count, in one table.

For each run (sampler, steps, and fp32 or bf16 autocast: ``unipc:15:bf16``): images/s, the speed-up over DDIM at 50 steps, FID against held-out
real images in the evaluation feature space, and that FID relative to DDIM-50's. Every run samples
the same conditions with the same seeds; guidance is batched as cond + uncond. FID on a few hundred
images is noisy, so the table also gives the noise floor: DDIM-50 again under other seeds (its FID
against the real images, and the FID between the two DDIM-50 sets).

Timing: the FID pass times every run once over all images; then ``--rounds`` timing rounds sample
one batch per run, the run order reversed every other round, so load from other processes hits all
runs alike. Images/s is the median over all of a run's timings; the speed-up is the median of the
per-round ratios to DDIM-50 (a ratio within one round is what survives a noisy machine). On a quiet
machine ``--rounds 0`` times only the FID pass: one long timing per run, over all its images.

Model and data:
- ``--model DIR`` (a GenerationPipeline folder, e.g. data/train_diffusion/model after ``dvc repro``):
  conditions come from the training split of ``--manifest`` (prepare_masks' manifest), real images
  from ``--real`` (a manifest: its real test split; or a folder of PNGs), and the feature space is
  evaluate's: ``--feature-network FILE`` (as evaluate.feature_network) or the real-only classifier
  ``--classifier DIR`` (data/classifiers/real_only/seed_0, one seed's classifier).
- without ``--model``: a small model is trained here on the toy project (tests.diffusion_data) for
  ``--train-steps`` steps, real images are a second toy project drawn with another seed, and the
  feature space is a fixed randomly initialised densenet_small (the project classifier's
  architecture; no real-only classifier exists here). Figures from this mode show the ratios,
  not the default profile's FID.

Run from the repository root:  python benchmarks/bench_sampling.py [--quick] [--model DIR ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import NamedTuple
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrsynth.models.classifier import build_classifier  # noqa: E402
from cxrsynth.models.conditioning import Conditions, concatenate  # noqa: E402
from cxrsynth.tasks import manifest  # noqa: E402
from cxrsynth.tasks.diffusion.data import DiffusionDataset, batch_conditions, readable_rows, training_rows  # noqa: E402
from cxrsynth.tasks.diffusion.labels import read_lesions  # noqa: E402
from cxrsynth.tasks.device import describe_cpu  # noqa: E402
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline  # noqa: E402
from cxrsynth.tasks.diffusion.schedulers import SAMPLERS  # noqa: E402
from cxrsynth.tasks.io import read_png16  # noqa: E402
from cxrsynth.tasks.metrics import classifiers  # noqa: E402
from cxrsynth.tasks.metrics.features import FeatureNetwork, classifier_features, load_feature_network  # noqa: E402
from cxrsynth.tasks.metrics.fidelity import fid_kid  # noqa: E402
from cxrsynth.tasks.metrics.inputs import load_set, read_real  # noqa: E402



class Run(NamedTuple):
    """One table row: a sampler, its step count and the denoiser's precision (fp32, or bf16 autocast)."""

    sampler: str
    steps: int
    precision: str = "fp32"

    def __str__(self) -> str:
        return f"{self.sampler}:{self.steps}" + (":bf16" if self.precision == "bf16" else "")


BASELINE = Run("ddim", 50)
DEFAULT_RUNS = ("ddim:50,dpm_solver:20,dpm_solver:15,dpm_solver:10,unipc:20,unipc:15,unipc:10,"
                "dpm_solver_3m:15,dpm_solver_3m:10")
# "At equal FID": a run's FID at most this much above DDIM-50's (lower is better: a run below it is as good).
FID_TOLERANCE = 0.10
NOISE_FLOOR_SEED_OFFSET = 10**6  # the second DDIM-50 set's seeds: disjoint from the first's


@dataclass
class Bench:
    """What every run samples and is scored against."""

    pipeline: GenerationPipeline
    cond: Conditions  # one row per image, the same for every run
    real: np.ndarray  # (N, H, W) held-out real images in [0, 1]
    network: FeatureNetwork
    description: str


def parse_runs(text: str) -> list[Run]:
    """``sampler:steps[:bf16],...`` -> runs, DDIM-50 in float32 (the baseline) first."""
    runs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        sampler, _, rest = item.partition(":")
        steps, _, precision = rest.partition(":")
        if sampler not in SAMPLERS or not steps.isdigit() or int(steps) < 1 or precision not in ("", "bf16"):
            raise SystemExit(f"--runs: {item!r} is not sampler:steps[:bf16] with sampler one of {SAMPLERS}")
        runs.append(Run(sampler, int(steps), precision or "fp32"))
    return [BASELINE] + [run for run in dict.fromkeys(runs) if run != BASELINE]


def repeat_conditions(dataset: DiffusionDataset, count: int, batch: int) -> Conditions:
    """``count`` images' conditions, cycling through the dataset's rows."""
    parts = []
    for start in range(0, count, batch):
        rows = [(start + i) % len(dataset) for i in range(min(batch, count - start))]
        parts.append(batch_conditions(default_collate([dataset[i] for i in rows])))
    return concatenate(parts)


def toy_bench(args, scratch: Path) -> Bench:
    """A small model trained here on the toy project; real images from a second toy project."""
    from cxrsynth.tasks.diffusion.train_stage import training_setup
    from cxrsynth.tasks.diffusion.training import train_diffusion
    from cxrsynth.tasks.params import DiffusionParams, Params
    from tests.diffusion_data import make_project

    print(f"toy mode: {args.toy_images} training images, {args.toy_size} px; training {args.train_steps} steps",
          file=sys.stderr)
    frame = make_project(scratch / "train", n_images=args.toy_images, size=args.toy_size, seed=0, lesion_rate=0.2)
    held_out = make_project(scratch / "real", n_images=args.images, size=args.toy_size, seed=1, lesion_rate=0.2)
    diffusion = DiffusionParams.model_validate({  # the default profile's process and conditions, scaled down
        "unet": {"channels": [16, 32, 64], "attention_levels": [False, False, True], "num_res_blocks": 1,
                 "num_head_channels": 16, "norm_num_groups": 8},
        "label_dim": 32, "text_encoder": {"max_tokens": 24, "dim": 32, "layers": 1},
        "train": {"steps": args.train_steps, "batch_size": 16, "checkpoint_every": 10**6, "learning_rate": 1e-3,
                  "ema_decay": 0.99}})
    setup = training_setup(Params(diffusion=diffusion), frame, scratch / "train")
    started = time.perf_counter()
    outcome = train_diffusion(setup, diffusion, scratch / "checkpoints", seed=0)
    print(f"trained in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    real = load_set(held_out, scratch / "real", args.toy_size, "real").images
    torch.manual_seed(0)  # the feature network's fixed random weights
    network = classifier_features(build_classifier("densenet_small").eval())
    return Bench(setup.pipeline(outcome.ema_model.eval()), repeat_conditions(setup.dataset, args.images, args.batch),
                 real, network, f"toy model ({args.train_steps} steps, {args.toy_size} px), "
                 "features of a fixed random densenet_small")


def real_images(path: Path, root: Path, size: int, count: int) -> np.ndarray:
    """Up to ``count`` held-out real images in [0, 1]: a manifest's real test split, or a folder of PNGs."""
    if path.suffix == ".parquet":
        frame = read_real(path)
        frame = frame[frame["split"] == "test"].head(count)
        return load_set(frame, root, size, "real").images
    files = sorted(path.glob("*.png"))[:count]
    if not files:
        raise SystemExit(f"--real: {path} holds no PNG files")
    return np.stack([read_png16(file) for file in files])


def project_bench(args) -> Bench:
    """A trained model folder, the training split's conditions, held-out real images, evaluate's features."""
    pipeline = GenerationPipeline.from_pretrained(args.model)
    config = pipeline.config
    rows, _ = readable_rows(training_rows(manifest.read(args.manifest)), args.root)
    dataset = DiffusionDataset(rows, args.root, pipeline.tokenizer, config.text_encoder.source,
                               lesions=read_lesions(args.root))
    if args.feature_network:
        network = load_feature_network(args.feature_network, config.image_size)
    else:
        network = classifier_features(classifiers.load(Path(args.classifier)))
    real = real_images(Path(args.real or args.manifest), Path(args.root), config.image_size, args.images)
    return Bench(pipeline, repeat_conditions(dataset, args.images, args.batch), real, network,
                 f"model {args.model}, features: {network.name}")


def sample(bench: Bench, run: Run, seeds: list[int], count: int, args) -> tuple[np.ndarray, float]:
    """The first ``count`` images (N, H, W) of one run, and the seconds they took."""
    pipeline = bench.pipeline.with_sampler(run.sampler).to(bench.pipeline.device,
                                                            "bf16" if run.precision == "bf16" else "no")
    images = []
    started = time.perf_counter()
    for start in range(0, count, args.batch):
        rows = slice(start, min(start + args.batch, count))
        part = Conditions(**{name: value[rows] for name, value in vars(bench.cond).items()})
        images.append(pipeline(part, seeds[rows], run.steps, args.guidance)[:, 0].numpy())
    return np.concatenate(images), time.perf_counter() - started


def fid(bench: Bench, first: np.ndarray, second: np.ndarray) -> float:
    return fid_kid(bench.network, first, second, seed=0)["fid"]


def measure(bench: Bench, runs: list[Run], args) -> dict:
    """FID of every run over all images, then images/s and the per-round speed-up over DDIM-50 (the FID
    pass is round 0; the timing rounds alternate the run order)."""
    count, seeds = len(bench.cond), list(range(len(bench.cond)))
    for warm_up in dict.fromkeys(Run(run.sampler, 2, run.precision) for run in runs):  # first calls allocate
        sample(bench, warm_up, seeds, min(count, args.batch), args)
    rounds: list[dict[Run, float]] = [{}]
    fids: dict[Run, float] = {}
    baseline_images = None
    for run in runs:
        images, seconds = sample(bench, run, seeds, count, args)
        rounds[0][run] = count / seconds
        fids[run] = fid(bench, bench.real, images)
        baseline_images = images if run == BASELINE else baseline_images
        print(f"  {run}: {rounds[0][run]:.2f} img/s, FID {fids[run]:.4g}", file=sys.stderr)
    other_seeds = [seed + NOISE_FLOOR_SEED_OFFSET for seed in seeds]
    floor_images, _ = sample(bench, BASELINE, other_seeds, count, args)
    floor = {"ddim_50_other_seeds_fid": fid(bench, bench.real, floor_images),
             "ddim_50_vs_ddim_50_fid": fid(bench, baseline_images, floor_images)}
    timed = min(count, args.batch)
    for round_index in range(1, args.rounds + 1):
        rounds.append({})
        for run in runs if round_index % 2 == 0 else runs[::-1]:
            _, seconds = sample(bench, run, seeds, timed, args)
            rounds[-1][run] = timed / seconds
        print(f"  timing round {round_index} done", file=sys.stderr)
    return {"rates": {run: statistics.median(r[run] for r in rounds) for run in runs},
            "speedups": {run: statistics.median(r[run] / r[BASELINE] for r in rounds) for run in runs},
            "fids": fids, "floor": floor}


def table(bench: Bench, runs: list[Run], result: dict, args) -> str:
    rates, speedups, fids, floor = result["rates"], result["speedups"], result["fids"], result["floor"]
    base_fid = fids[BASELINE]
    lines = [f"sampling: {bench.description}",
             f"{len(bench.cond)} images per run vs {len(bench.real)} real, batch {args.batch}, "
             f"guidance {args.guidance}, {args.rounds} alternating timing rounds; {describe_cpu()}",
             f"{'sampler':<16}{'steps':>6}{'prec.':>6}{'img/s':>9}{'speed-up':>10}{'FID':>9}{'FID/ddim50':>12}  as good (<= 1.10)",
             "-" * 80]
    for run in runs:
        relative = fids[run] / base_fid
        lines.append(f"{run.sampler:<16}{run.steps:>6}{run.precision:>6}{rates[run]:>9.2f}{speedups[run]:>9.2f}x{fids[run]:>9.4g}"
                     f"{relative:>12.3f}  {'yes' if relative <= 1 + FID_TOLERANCE else 'no'}")
    lines.append(f"noise floor: DDIM-50 under other seeds FID {floor['ddim_50_other_seeds_fid']:.4g} "
                 f"({floor['ddim_50_other_seeds_fid'] / base_fid:.3f} x DDIM-50's); "
                 f"FID between the two DDIM-50 sets {floor['ddim_50_vs_ddim_50_fid']:.4g}")
    lines.append("img/s: median over rounds; speed-up: median of the per-round ratios to DDIM-50")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GenerationPipeline folder (e.g. data/train_diffusion/model); none: toy mode")
    parser.add_argument("--manifest", default="data/prepare_masks/manifest.parquet",
                        help="manifest whose training split gives the conditions (with --model)")
    parser.add_argument("--root", default=".", help="project root the manifest's paths are relative to")
    parser.add_argument("--real", help="held-out real images: a manifest (its test split) or a PNG folder; "
                        "default: --manifest's test split")
    parser.add_argument("--feature-network", help="local TorchScript / DenseNet121 file, as evaluate.feature_network")
    parser.add_argument("--classifier", default="data/classifiers/real_only/seed_0",
                        help="real-only classifier folder whose features FID uses (evaluate's default)")
    parser.add_argument("--runs", default=DEFAULT_RUNS, help="sampler:steps,... (ddim:50, the baseline, always runs)")
    parser.add_argument("--images", type=int, default=300, help="images per run (and real images)")
    parser.add_argument("--batch", type=int, default=50, help="images per sampling call")
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating timing rounds of one batch per run (0: time the FID pass only)")
    parser.add_argument("--train-steps", type=int, default=400, help="toy mode: training steps")
    parser.add_argument("--toy-images", type=int, default=300, help="toy mode: training images")
    parser.add_argument("--toy-size", type=int, default=32, help="toy mode: image side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="a sanity run: few images, steps and rounds")
    args = parser.parse_args()
    if args.quick:
        args.images, args.batch, args.rounds, args.train_steps, args.toy_images = 24, 12, 1, 30, 48
        args.runs = "ddim:50,dpm_solver:20,unipc:10"
    torch.set_num_threads(args.threads)
    runs = parse_runs(args.runs)
    with tempfile.TemporaryDirectory() as scratch:
        bench = project_bench(args) if args.model else toy_bench(args, Path(scratch))
        result = measure(bench, runs, args)
    print(table(bench, runs, result, args))
    print(json.dumps({str(run): {"images_per_s": result["rates"][run], "speedup": result["speedups"][run],
                                 "fid": result["fids"][run]}
                      for run in runs} | {"noise_floor": result["floor"]}, indent=2))


if __name__ == "__main__":
    main()
