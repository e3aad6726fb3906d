"""Which working resolution and space the default profile should train in (issue 13, deliverable 6):
pixel 64 px (today), pixel 128 px and latent 128 px, each trained for the same wall time.

Each arm trains on the default profile's own data (the phantom collection through phantom, ingest,
parse_reports and prepare_masks at its resolution: a scratch clone of this repository per
resolution, `dvc repro prepare_masks`), with the default params but ``diffusion.space`` and the
number of diffusion steps, which fills the time budget:

  steps = (budget - autoencoder training - training setup) / seconds per step,

seconds per step measured in a short calibration run (not counted). The latent arm's budget pays
for its autoencoder (``autoencoder`` params' defaults at 128 px) and for encoding the training set.
Each model then samples the same kind of plan the generate stage would (default generate params,
``--images`` per rare finding), and the images are judged at 128 px, the resolution the question
is about (pixel 64 px samples are upsampled bilinearly, their masks by nearest neighbour):

- training images/s of the diffusion model (the autoencoder's time is in the budget, not here);
- FID / KID against the real test split, in the feature space evaluate uses by default (the
  penultimate layer of a real-only classifier: here one trained at 128 px on the real training split);
- condition accuracy of each rare finding: the share of images requested with it that this
  classifier calls positive at evaluate's specificity (its thresholds on the real test split);
- mask IoU of each rare finding on the mask-conditioned images, from a lesion segmenter trained on
  the real 128 px training masks (its IoU on real test masks printed beside, as the ceiling);
- whether 128 px makes a nodule visible to the classifier: the real-only classifier's test AUROC
  per rare finding at 64 and at 128 px.

A sample grid per arm (lesions outlined) is written under ``--out`` to look at.

Training (the timed part) runs first, every arm back to back, and prints TRAINING DONE; sampling,
the judges and the scores follow. Run from the repository root, with nothing else running while it
trains:
    python benchmarks/bench_resolution.py [--minutes 12] [--images 48] [--quick]
``--quick`` is a sanity run on the tiny profile's data sizes (not a measurement).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrsynth.flows.evaluate import scoring  # noqa: E402
from cxrsynth.tasks import manifest  # noqa: E402
from cxrsynth.tasks.autoencoder import stage as autoencoder_stage  # noqa: E402
from cxrsynth.tasks.classifier import train_classifier  # noqa: E402
from cxrsynth.tasks.classifier.training import VariantImages, classifier_precision  # noqa: E402
from cxrsynth.tasks.device import describe_cpu  # noqa: E402
from cxrsynth.tasks.diffusion import generation  # noqa: E402
from cxrsynth.tasks.diffusion.grids import enlarge, outlined, tile, write_rgb  # noqa: E402
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline  # noqa: E402
from cxrsynth.tasks.diffusion.train_stage import training_setup  # noqa: E402
from cxrsynth.tasks.diffusion.training import TrainHooks, train_diffusion  # noqa: E402
from cxrsynth.tasks.findings import FINDINGS  # noqa: E402
from cxrsynth.tasks.masks import labelmap  # noqa: E402
from cxrsynth.tasks.metrics import downstream, fidelity, lesions  # noqa: E402
from cxrsynth.tasks.metrics.classifiers import predict  # noqa: E402
from cxrsynth.tasks.metrics.features import classifier_features  # noqa: E402
from cxrsynth.tasks.metrics.inputs import ImageSet, evaluation_labels, finding_states, load_set, mask_conditioned  # noqa: E402
from cxrsynth.tasks.params import Params, load_params  # noqa: E402

ARMS = {"pixel 64 px": ("pixel", 64), "pixel 128 px": ("pixel", 128), "latent 128 px": ("latent", 128)}
JUDGE_SIZE = 128
PLAIN = {"variant": "real_only", "augmentation": None, "class_balance": "none"}
CALIBRATION_STEPS = 5


# ------------------------------------------------------------------------------------------ data


def prepared_project(size: int, cache: Path, quick: bool) -> Path:
    """A scratch clone of this repository whose prepare_masks stage ran at ``size`` px (kept in
    ``cache`` between runs: dvc repro is a no-op when nothing changed)."""
    project = cache / f"project_{size}"
    if not (project / ".git").exists():
        shutil.rmtree(project, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(project)], check=True)
    if quick:
        shutil.copy(ROOT / "tests/params.tiny.yaml", project / "params.yaml")
    else:
        subprocess.run(["git", "checkout", "-q", "params.yaml"], cwd=project, check=True)
    text = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(re.sub(r"(?m)^(  image_size:) \d+", rf"\1 {size}", text, count=1))
    environment = {**os.environ, "PYTHONPATH": str(project)}
    print(f"dvc repro prepare_masks in {project} ({size} px)", flush=True)
    subprocess.run(["dvc", "repro", "prepare_masks"], cwd=project, env=environment, check=True,
                   stdout=subprocess.DEVNULL)
    return project


@dataclass
class Project:
    """One resolution's prepared data and the default params at that resolution."""

    root: Path
    params: Params
    frame: pd.DataFrame

    @property
    def size(self) -> int:
        return self.params.ingest.image_size

    def split(self, name: str) -> pd.DataFrame:
        frame = self.frame
        return frame[(frame["split"] == name) & (frame["source"] == "real")].reset_index(drop=True)


def load_project(root: Path) -> Project:
    return Project(root, load_params(root / "params.yaml"), manifest.read(root / "data/prepare_masks/manifest.parquet"))


def upsampled(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[-1] == size:
        return images
    return F.interpolate(torch.from_numpy(images)[:, None], size=(size, size), mode="bilinear",
                         align_corners=False)[:, 0].clamp(0, 1).numpy()


def upsampled_masks(masks: np.ndarray, size: int) -> np.ndarray:
    if masks.shape[-1] == size:
        return masks
    return F.interpolate(torch.from_numpy(masks.astype(np.float32)), size=(size, size), mode="nearest").numpy() > 0.5


def at_size(images: ImageSet, size: int) -> ImageSet:
    return ImageSet(images.frame, upsampled(images.images, size), upsampled_masks(images.masks, size), images.quarantined)


# ------------------------------------------------------------------------------------------ judges


@dataclass
class Judge:
    """What scores every arm at 128 px: the real-only classifier, its thresholds, the FID feature
    network, the lesion segmenter and the real test split."""

    classifier: torch.nn.Module
    thresholds: dict
    test: ImageSet
    segmenter: torch.nn.Module
    segmenter_on_real_test: dict
    precision: torch.dtype | None


def real_only_classifier(project: Project, test: ImageSet) -> tuple[torch.nn.Module, np.ndarray, dict]:
    """Trained on the real training split (validation for early stopping) as train_baseline's
    real_only variant with its first seed; its probabilities on ``test`` and AUROC per rare finding."""
    settings = project.params.classifier
    started = time.perf_counter()
    result = train_classifier(VariantImages(project.split("train"), project.split("val"), project.size, project.root),
                              PLAIN, settings, "cpu")
    print(f"  real-only classifier at {project.size} px: {time.perf_counter() - started:.0f} s, "
          f"{len(result.history)} epochs (one seed; the default profile trains 7 variants x 3 seeds)", flush=True)
    probabilities = predict(result.model, test.images, precision=classifier_precision(settings, "cpu").dtype)
    labels = evaluation_labels(test.frame)
    aurocs = {finding: downstream.finding_metrics(labels[:, FINDINGS.index(finding)],
                                                  probabilities[:, FINDINGS.index(finding)],
                                                  scoring(project.params))["auroc"]
              for finding in project.params.generate.rare_findings}
    return result.model, probabilities, aurocs


def real_split(project: Project, split: str) -> ImageSet:
    return autoencoder_stage.real_split(project.frame, project.root, project.size, split)


def build_judge(project: Project) -> tuple[Judge, dict]:
    """The judge at the project's size, and its real-only classifier's AUROC per rare finding."""
    params, test = project.params, real_split(project, "test")
    model, probabilities, aurocs = real_only_classifier(project, test)
    thresholds = downstream.operating_thresholds(evaluation_labels(test.frame), probabilities, scoring(params))
    train = real_split(project, "train")
    masked = train.subset(train.masks.any(axis=(1, 2, 3)))
    segmenter = lesions.train_segmenter(masked.images, masked.masks,
                                        lesions.known_channels(masked.masks, finding_states(masked.frame)),
                                        lesions.SegmenterTraining(params.evaluate.segmenter_epochs, params.evaluate.seed))
    on_test = lesions.mask_iou(lesions.segment(segmenter, test.images), test.masks, FINDINGS)
    precision = classifier_precision(params.classifier, "cpu").dtype
    return Judge(model, thresholds, test, segmenter, on_test, precision), aurocs


# ------------------------------------------------------------------------------------------ arms


def arm_params(project: Project, space: str, steps: int) -> Params:
    diffusion = project.params.diffusion
    train = diffusion.train.model_copy(update={"steps": steps, "sample_every": 10**9})
    return project.params.model_copy(update={"diffusion": diffusion.model_copy(update={"space": space, "train": train})})


def seconds_per_step(setup, params: Params, folder: Path) -> float:
    """Steady-state seconds per training step (the first step, which warms up, left out)."""
    ends: list[float] = []
    train_diffusion(setup, params.diffusion, folder, seed=params.seed,
                    hooks=TrainHooks(on_step=lambda step, parts: ends.append(time.perf_counter())))
    return (ends[-1] - ends[0]) / (len(ends) - 1)


@dataclass
class Trained:
    model_dir: Path
    autoencoder_dir: Path | None
    steps: int
    autoencoder_s: float
    setup_s: float
    diffusion_s: float
    images_per_s: float


def print_autoencoder_fidelity(report: dict, size: int) -> None:
    image = report["image"]
    print(f"  autoencoder at {size} px on the real test split: PSNR {number(image.get('psnr'), 1)}, "
          f"SSIM {number(image.get('ssim'))}; per finding crop SSIM / lesion contrast kept (after / before):")
    for finding, figures in report["lesions"].items():
        print(f"    {finding:<18} {number(figures['crop_ssim'], 2)} / {number(figures['contrast_kept'], 2)} "
              f"({figures['n_lesions']} lesions)", flush=True)


def train_arm(project: Project, space: str, budget_s: float, folder: Path) -> Trained:
    """Autoencoder (latent space), then the diffusion model for the steps left in ``budget_s``."""
    shutil.rmtree(folder, ignore_errors=True)
    params = arm_params(project, space, CALIBRATION_STEPS)
    autoencoder_dir, autoencoder_s = None, 0.0
    if space == "latent":
        started = time.perf_counter()
        outcome = autoencoder_stage.train(params, real_split(project, "train"), folder / "autoencoder_checkpoints", torch.device("cpu"))
        autoencoder_dir = folder / "autoencoder"
        autoencoder_stage.write_model(autoencoder_dir, outcome, params)
        autoencoder_s = time.perf_counter() - started
        fidelity_report = autoencoder_stage.measure_fidelity(
            outcome.ema_model, real_split(project, "test"),
            params.autoencoder.batch_size, torch.device("cpu")).report  # not counted: the stage measures it too
        print_autoencoder_fidelity(fidelity_report, project.size)
    started = time.perf_counter()
    setup = training_setup(params, project.frame, project.root, autoencoder_dir)
    setup_s = time.perf_counter() - started
    # the calibration trains a copy: the timed run starts from the same fresh weights
    per_step = seconds_per_step(replace(setup, model=copy.deepcopy(setup.model)), params, folder / "calibration")
    steps = max(1, int((budget_s - autoencoder_s - setup_s) / per_step))
    print(f"  {space} {project.size} px: autoencoder {autoencoder_s:.0f} s, setup {setup_s:.0f} s, "
          f"{per_step:.2f} s/step -> {steps} steps", flush=True)
    params = arm_params(project, space, steps)
    started = time.perf_counter()
    outcome = train_diffusion(setup, params.diffusion, folder / "checkpoints", seed=params.seed)
    diffusion_s = time.perf_counter() - started
    model_dir = folder / "model"
    setup.pipeline(outcome.ema_model).save_pretrained(model_dir)
    return Trained(model_dir, autoencoder_dir, steps, autoencoder_s, setup_s, diffusion_s, outcome.images_per_s)


def sample_arm(project: Project, trained: Trained, per_finding: int, folder: Path) -> ImageSet:
    """The generate stage's plan for the rare findings, its first ``per_finding`` requests each."""
    settings = project.params.generate
    config = GenerationPipeline.load_config(trained.model_dir)
    _, requests, maps = generation.plan_for(project.frame, project.root, settings, config)
    requests = requests[requests["finding"].isin(settings.rare_findings)]
    requests = requests.groupby("finding", group_keys=False).head(per_finding).reset_index(drop=True)
    maps = {image_id: maps[image_id] for image_id in requests["image_id"] if image_id in maps}
    generation.write_condition_masks(maps, folder)
    pipeline = GenerationPipeline.from_pretrained(trained.model_dir, "cpu", sampler=settings.sampler,
                                                  mixed_precision=generation.SAMPLING_PRECISION,
                                                  autoencoder=trained.autoencoder_dir)
    started = time.perf_counter()
    generation.sample_requests(pipeline, requests, maps, settings, folder)
    print(f"  sampled {len(requests)} images in {time.perf_counter() - started:.0f} s", flush=True)
    frame = generation.synthetic_manifest(requests, project.size, "bench", settings)
    return load_set(frame, folder, project.size, "synthetic")


def score_arm(synthetic: ImageSet, judge: Judge, rare: list[str], seed: int) -> dict:
    synthetic = at_size(synthetic, JUDGE_SIZE)
    network = classifier_features(judge.classifier)
    fid = fidelity.fid_kid(network, judge.test.images, synthetic.images, seed)
    probabilities = predict(judge.classifier, synthetic.images, precision=judge.precision)
    accuracy = lesions.condition_accuracy(finding_states(synthetic.frame), probabilities, judge.thresholds, rare)
    conditioned = synthetic.subset(mask_conditioned(synthetic.frame))
    iou = lesions.mask_iou(lesions.segment(judge.segmenter, conditioned.images), conditioned.masks, FINDINGS)
    return {"fid": fid, "condition_accuracy": accuracy, "mask_iou": {f: iou.get(f) for f in rare},
            "n_images": len(synthetic), "n_mask_conditioned": len(conditioned)}


def sample_grid(synthetic: ImageSet, path: Path, count: int = 16) -> None:
    """The first ``count`` images at 128 px, each with its conditioning lesions outlined."""
    synthetic = at_size(synthetic, JUDGE_SIZE)
    shown = range(min(count, len(synthetic)))
    tiles = [outlined(synthetic.images[i], labelmap.encode(
        {f: synthetic.masks[i, j] for j, f in enumerate(FINDINGS) if synthetic.masks[i, j].any()},
        synthetic.images.shape[1:])) for i in shown]
    write_rgb(path, enlarge(tile(tiles, columns=8)))


# ------------------------------------------------------------------------------------------ report


def number(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(results: dict, aurocs_by_size: dict, ceiling: dict, rare: list[str], budget_s: float) -> None:
    print(f"\nCPU: {describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"budget {budget_s:.0f} s of training per arm (autoencoder and setup included)")
    header = ["arm", "steps", "AE s", "train s", "img/s", "FID", "KID"]
    header += [f"{f[:5]} acc" for f in rare] + [f"{f[:5]} IoU" for f in rare]
    rows = []
    for arm, result in results.items():
        trained, scores = result["trained"], result["scores"]
        row = [arm, trained["steps"], f"{trained['autoencoder_s']:.0f}",
               f"{trained['autoencoder_s'] + trained['setup_s'] + trained['diffusion_s']:.0f}",
               f"{trained['images_per_s']:.1f}", number(scores["fid"]["fid"], 2), number(scores["fid"].get("kid_mean"), 4)]
        row += [number(scores["condition_accuracy"][f]["detected"], 2) for f in rare]
        row += [number((scores["mask_iou"][f] or {}).get("iou"), 2) for f in rare]
        rows.append(row)
    rows.append(["real test (segmenter ceiling)", "", "", "", "", "", ""] + ["" for _ in rare]
                + [number((ceiling.get(f) or {}).get("iou"), 2) for f in rare])
    print(pd.DataFrame(rows, columns=header).to_string(index=False))
    print("\nreal-only classifier, real test AUROC per rare finding (is the finding visible at this size?)")
    for size, aurocs in aurocs_by_size.items():
        print(f"  {size} px: " + ", ".join(f"{f} {number(a)}" for f, a in aurocs.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=12.0, help="training wall time per arm")
    parser.add_argument("--images", type=int, default=48, help="synthetic images per rare finding and arm")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cxrsynth_bench_resolution"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/cxrsynth_bench_resolution/out"))
    parser.add_argument("--quick", action="store_true", help="tiny profile data, 20 s per arm, 8 images")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.images, args.cache, args.out = 1 / 3, 8, args.cache / "quick", args.out / "quick"
    torch.set_num_threads(args.threads)
    budget_s = args.minutes * 60
    sizes = sorted({size for _, size in ARMS.values()} | {JUDGE_SIZE})
    projects = {size: load_project(prepared_project(size, args.cache, args.quick)) for size in sizes}
    rare = list(projects[JUDGE_SIZE].params.generate.rare_findings)
    seed = projects[JUDGE_SIZE].params.seed
    # Training, the timed part, runs first and back to back; sampling and judging are not timed.
    trained = {arm: train_arm(projects[ARMS[arm][1]], ARMS[arm][0], budget_s, args.out / arm.replace(" ", "_"))
               for arm in args.arms}
    print(f"TRAINING DONE: {', '.join(trained)} (what follows is not timed)", flush=True)
    samples = {arm: sample_arm(projects[ARMS[arm][1]], trained[arm], args.images,
                               args.out / arm.replace(" ", "_") / "samples") for arm in args.arms}
    judge, aurocs = build_judge(projects[JUDGE_SIZE])
    aurocs_by_size = {size: real_only_classifier(project, real_split(project, "test"))[2] if size != JUDGE_SIZE else aurocs
                      for size, project in projects.items()}
    results = {}
    for arm, synthetic in samples.items():
        sample_grid(synthetic, args.out / f"grid_{arm.replace(' ', '_')}.png")
        results[arm] = {"trained": trained[arm].__dict__ | {"model_dir": str(trained[arm].model_dir),
                                                             "autoencoder_dir": str(trained[arm].autoencoder_dir)},
                        "scores": score_arm(synthetic, judge, rare, seed)}
    print_table(results, aurocs_by_size, judge.segmenter_on_real_test, rare, budget_s)
    (args.out / "results.json").write_text(json.dumps({"cpu": describe_cpu(), "budget_s": budget_s, "arms": results,
                                                       "judge_aurocs": aurocs_by_size}, indent=2, default=str))
    print(f"\nresults and sample grids in {args.out}")


if __name__ == "__main__":
    main()
