"""bf16 autocast against float32 on this CPU, each part measured side by side in one run.

1. step: seconds per training step of the default profile's U-Net (channels 32/64/128, batch 16, 64 px,
   8 input channels, cross-attention over the condition tokens; random tensors, MSE, AdamW, as
   bench_diffusion's bare loop) in fp32, bf16, bf16 + channels_last and, with ``--compile``, bf16 +
   torch.compile (inductor; its compile time is reported apart from its steady-state step). Then the
   project's own loop (tasks.diffusion.training.train_diffusion: conditions, lesion-preserving loss,
   EMA) in fp32, bf16 and bf16 + channels_last (runtime.channels_last: true), and a training step of
   the classifier (densenet_small, batch 32, 64 px, masked BCE, Adam) and of the autoencoder (the
   profile's shape and batch, L1 + KL, Adam) under bf16, contiguous and channels_last: the figures
   behind ``runtime.channels_last: auto`` (tasks/device.py). Variants alternate within every round, so
   load from other processes hits each alike; the ratios are medians of per-round ratios.
2. loss: the loss curve of the first ``--loss-steps`` steps of train_diffusion on a toy project
   (tests.diffusion_data.make_project) in fp32 and bf16 from the same initial weights and seed, and a
   second fp32 run with another data seed as the noise band: mean loss per window, and whether bf16's
   distance from fp32 stays inside the fp32-vs-fp32 spread.
3. fid: FID (tasks.metrics.fidelity.fid_kid, in the feature space of the project's classifier trained
   on the toy project's real images) of samples drawn from one model under fp32 and bf16 sampling
   with the same seeds, against the FID difference of two fp32 draws with different seeds (the noise).
   The model is the fp32 model part 2 trains, or ``--model`` (a train_diffusion model folder).

Run from the repository root:  python benchmarks/bench_precision.py [step] [loss] [fid] [--quick]
(no part named: all three; the loss and fid parts take about half an hour on 2 cores).
The step part alone, with the default profile's shapes (no training run of the other parts):
    python benchmarks/bench_precision.py step [--rounds 5 --steps 3] [--compile] [--only channels_last]
(``--only channels_last``: only the channels_last rows and the bf16 rows they are compared with).
``--quick`` runs every part on the tiny test profile in a few minutes (a sanity check, not a measurement).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TORCH_THREADS = torch.get_num_threads()  # before tests.diffusion_data sets one thread for the test suite
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torch.utils.data import default_collate  # noqa: E402

from cxrsynth.tasks import manifest  # noqa: E402
from cxrsynth.tasks.classifier import train_classifier  # noqa: E402
from cxrsynth.models.autoencoder import build_autoencoder, kl_divergence  # noqa: E402
from cxrsynth.models.classifier import build_classifier, masked_bce  # noqa: E402
from cxrsynth.tasks.autoencoder.training import config_of  # noqa: E402
from cxrsynth.tasks.classifier.training import VariantImages  # noqa: E402
from cxrsynth.tasks.device import NATIVE_BF16_FLAGS, autocast, cpu_flags, cpu_model, native_bf16  # noqa: E402
from cxrsynth.tasks.diffusion.data import DiffusionDataset, batch_conditions, training_rows  # noqa: E402
from cxrsynth.tasks.diffusion.labels import read_lesions  # noqa: E402
from cxrsynth.tasks.diffusion.pipeline import GenerationPipeline  # noqa: E402
from cxrsynth.tasks.diffusion.train_stage import training_setup  # noqa: E402
from cxrsynth.tasks.diffusion.training import TrainHooks, train_diffusion  # noqa: E402
from cxrsynth.tasks.findings import FINDINGS  # noqa: E402
from cxrsynth.tasks.io import read_png16, write_json  # noqa: E402
from cxrsynth.tasks.metrics.features import classifier_features  # noqa: E402
from cxrsynth.tasks.metrics.fidelity import fid_kid  # noqa: E402
from cxrsynth.tasks.params import ClassifierParams, Params, load_params  # noqa: E402
from tests.diffusion_data import make_project  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PARTS = ("step", "loss", "fid")
CLASSIFIER_BATCH = 32  # classifier.batch_size of the default profile
PROJECT_MODES = {"project_fp32": ("no", False), "project_bf16": ("bf16", False),
                 "project_bf16_channels_last": ("bf16", True)}  # mixed_precision, runtime.channels_last


def machine() -> dict:
    model = cpu_model()
    flags = sorted(f for f in cpu_flags() if f in (*NATIVE_BF16_FLAGS, "amx_tile", "avx512f", "avx512_fp16"))
    native, why = native_bf16()
    return {"cpu": model, "flags": flags, "native_bf16": native, "reason": why, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def _manifest(root: Path):
    return manifest.read(root / "data/prepare_masks/manifest.parquet")


def profile(quick: bool) -> Params:
    return load_params(ROOT / ("tests/params.tiny.yaml" if quick else "params.yaml"))


def with_runtime(params: Params, **runtime) -> Params:
    return params.model_copy(update={"runtime": params.runtime.model_copy(update=runtime)})


def with_train(params: Params, **train) -> Params:
    diffusion = params.diffusion.model_copy(update={"train": params.diffusion.train.model_copy(update=train)})
    return params.model_copy(update={"diffusion": diffusion})


# ------------------------------------------------------------------------------------------ 1. step time


class BareStep:
    """One optimisation step of a copy of the project's U-Net on fixed random tensors (the issue's bare step)."""

    def __init__(self, prepared, batch_size: int, precision: torch.dtype | None, channels_last: bool = False,
                 compiled: bool = False) -> None:
        config = prepared.config
        unet = copy.deepcopy(prepared.model.unet).train()
        tokens = 1 + len(FINDINGS) + config.text_encoder.max_tokens
        size, generator = config.image_size, torch.Generator().manual_seed(0)
        self.inputs = torch.randn(batch_size, 1 + len(FINDINGS) + 1, size, size, generator=generator)
        self.target = torch.randn(batch_size, 1, size, size, generator=generator)
        self.context = torch.randn(batch_size, tokens, config.label_dim, generator=generator)
        if channels_last:
            unet = unet.to(memory_format=torch.channels_last)
            self.inputs = self.inputs.contiguous(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(unet.parameters(), lr=2e-4)
        self.network = torch.compile(unet) if compiled else unet
        self.precision, self.batch_size = precision, batch_size

    def __call__(self) -> float:
        started = time.perf_counter()
        timesteps = torch.randint(0, 1000, (self.batch_size,))
        with autocast("cpu", self.precision):
            output = self.network(self.inputs, timesteps, self.context)
        loss = (output.float() - self.target).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - started


class NetworkStep:
    """One optimisation step (Adam) of ``network`` on fixed random ``inputs``, its forward pass under
    autocast to ``precision``, the loss (``loss_of(output)``) in float32, optionally channels_last."""

    def __init__(self, network: torch.nn.Module, inputs: torch.Tensor, loss_of, precision: torch.dtype | None,
                 channels_last: bool = False, learning_rate: float = 1e-3) -> None:
        self.network = network.to(memory_format=torch.channels_last) if channels_last else network
        self.inputs = inputs.contiguous(memory_format=torch.channels_last) if channels_last else inputs
        self.loss_of, self.precision = loss_of, precision
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=learning_rate)

    def __call__(self) -> float:
        started = time.perf_counter()
        with autocast("cpu", self.precision):
            output = self.network(self.inputs)
        loss = self.loss_of(output)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - started


def classifier_step(params: Params, precision: torch.dtype | None, channels_last: bool) -> NetworkStep:
    """The default classifier's step (batch CLASSIFIER_BATCH at the working resolution, random labels)."""
    size, generator = params.ingest.image_size, torch.Generator().manual_seed(0)
    images = torch.rand(CLASSIFIER_BATCH, 1, size, size, generator=generator)
    labels = torch.randint(0, 2, (CLASSIFIER_BATCH, len(FINDINGS)), generator=generator).float()
    torch.manual_seed(0)
    return NetworkStep(build_classifier(params.classifier.architecture), images,
                       lambda logits: masked_bce(logits.float(), labels), precision, channels_last,
                       params.classifier.learning_rate)


def autoencoder_step(params: Params, precision: torch.dtype | None, channels_last: bool) -> NetworkStep:
    """The profile's autoencoder step (its shape and batch at the working resolution): L1 + KL."""
    settings, size = params.autoencoder, params.ingest.image_size
    images = torch.rand(settings.batch_size, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def loss_of(output):
        reconstruction, z_mu, z_sigma = (part.float() for part in output)
        return F.l1_loss(reconstruction, images) + settings.loss.kl_weight * kl_divergence(z_mu, z_sigma)

    torch.manual_seed(0)
    return NetworkStep(build_autoencoder(config_of(settings)), images, loss_of, precision, channels_last,
                       settings.learning_rate)


def project_steps(params: Params, root: Path, mixed_precision: str, steps: int, seed: int,
                  channels_last: bool = False) -> list[float]:
    """Seconds of each step after the first of the project's training loop (checkpoint writes excluded)."""
    params = with_train(with_runtime(params, channels_last=channels_last), steps=steps, checkpoint_every=10**6,
                        sample_every=10**6, mixed_precision=mixed_precision)
    prepared = training_setup(params, _manifest(root), root)
    ends: list[float] = []
    with tempfile.TemporaryDirectory() as checkpoints:
        train_diffusion(prepared, params.diffusion, checkpoints, seed=seed,
                        hooks=TrainHooks(on_step=lambda step, parts: ends.append(time.perf_counter())))
    return list(np.diff(ends))


def step_variants(args, params: Params, root: Path) -> dict:
    """Every variant of the step part as (warm-up or None, timed round: round index -> median s/step)."""
    batch = params.diffusion.train.batch_size
    prepared = training_setup(params, _manifest(root), root)
    bare = {"fp32": BareStep(prepared, batch, None), "bf16": BareStep(prepared, batch, torch.bfloat16),
            "bf16_channels_last": BareStep(prepared, batch, torch.bfloat16, channels_last=True)}
    if args.compile:
        bare["bf16_compile"] = BareStep(prepared, batch, torch.bfloat16, compiled=True)
    for network, build in (("classifier", classifier_step), ("autoencoder", autoencoder_step)):
        bare[f"{network}_bf16"] = build(params, torch.bfloat16, False)
        bare[f"{network}_bf16_channels_last"] = build(params, torch.bfloat16, True)
    variants = {name: (step, lambda _, step=step: statistics.median(step() for _ in range(args.steps)))
                for name, step in bare.items()}
    for name, (mixed, channels_last) in PROJECT_MODES.items():
        variants[name] = (None, lambda round_index, mixed=mixed, channels_last=channels_last: statistics.median(
            project_steps(params, root, mixed, args.steps + 1, round_index, channels_last)))
    return variants


def selected(names: list[str], only: list[str] | None) -> list[str]:
    """The variants whose name contains one of ``only`` (all when None), with the baselines they are
    compared with."""
    if not only:
        return names
    chosen = {name for name in names if any(part in name for part in only)}
    chosen |= {base for name, base in step_baselines(names) if name in chosen}
    return [name for name in names if name in chosen]


def bench_step(args) -> dict:
    params = profile(args.quick)
    batch = params.diffusion.train.batch_size
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        make_project(root, n_images=max(64, 2 * batch), size=params.ingest.image_size, lesion_rate=0.2)
        variants = step_variants(args, params, root)
        names = selected(list(variants), args.only)
        first = {name: variants[name][0]() for name in names if variants[name][0]}  # warm-up; compile happens here
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(args.rounds):
            for name in names if round_index % 2 == 0 else names[::-1]:
                times[name].append(variants[name][1](round_index))
            print(f"  round {round_index}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()), file=sys.stderr)
    result = {name: {"median_s": statistics.median(t), "rounds_s": t} for name, t in times.items()}
    for name, base in step_baselines(names):
        ratios = [a / b for a, b in zip(times[name], times[base], strict=True)]
        result[name][f"ratio_to_{base}"] = statistics.median(ratios)
        result[name]["round_ratios"] = ratios
        result[name]["baseline"] = base
    if "bf16_compile" in first:
        result["bf16_compile"]["first_step_s"] = first["bf16_compile"]
    result["shape"] = {"batch": batch, "image_size": params.ingest.image_size,
                       "channels": list(params.diffusion.unet.channels)}
    print(f"\nstep time ({batch} x {params.ingest.image_size} px, channels {list(params.diffusion.unet.channels)}, "
          f"median of {args.rounds} rounds x {args.steps} steps)")
    print(f"{'variant':30s} {'s/step':>8s} {'ratio':>7s}  {'to':22s} per-round ratios")
    for name in times:
        row = result[name]
        base = row.get("baseline")
        ratio = f"{row[f'ratio_to_{base}']:7.3f}" if base else ""
        print(f"{name:30s} {row['median_s']:8.3f} {ratio:>7s}  {base or '':22s} "
              f"{' '.join(f'{r:.3f}' for r in row.get('round_ratios', []))}")
    if "bf16_compile" in first:
        print(f"bf16_compile: first step (compile) {first['bf16_compile']:.1f} s")
    return result


def step_baselines(names: list[str]) -> list[tuple[str, str]]:
    """(variant, the variant it is compared with) among ``names``: precision against fp32, channels_last
    and compile against the same precision without them."""
    pairs = [(name, "fp32") for name in ("bf16", "bf16_channels_last", "bf16_compile")]
    pairs += [(name, "bf16") for name in ("bf16_channels_last", "bf16_compile")]
    pairs += [(name, name.removesuffix("_channels_last")) for name in names
              if name.endswith("_channels_last") and not name.startswith("bf16")]
    pairs.append(("project_bf16", "project_fp32"))
    return [(name, base) for name, base in pairs if name in names and base in names]


# ------------------------------------------------------------------------------------------ 2. loss curves


def train_run(params: Params, root: Path, mixed_precision: str, seed: int, folder: Path):
    """train_diffusion from the profile's initial weights (params.seed) with data/noise seed ``seed``."""
    run_params = with_train(params, mixed_precision=mixed_precision, checkpoint_every=10**6, sample_every=10**6)
    prepared = training_setup(run_params, _manifest(root), root)
    started = time.perf_counter()
    outcome = train_diffusion(prepared, run_params.diffusion, folder / "checkpoints", seed=seed)
    print(f"  {mixed_precision} seed {seed}: {outcome.steps} steps in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    return prepared, outcome


def window_means(history: list[tuple[int, float]], window: int) -> list[float]:
    losses = [loss for _, loss in history]
    return [float(np.mean(losses[start:start + window])) for start in range(0, len(losses), window)]


def bench_loss(args, root: Path, params: Params) -> tuple[dict, GenerationPipeline]:
    params = with_train(params, steps=args.loss_steps)
    runs = {}
    for name, mixed, seed in (("fp32", "no", 0), ("bf16", "bf16", 0), ("fp32_seed1", "no", 1)):
        prepared, outcome = train_run(params, root, mixed, seed, root / name)
        runs[name] = window_means(outcome.history, args.window)
        if name == "fp32":
            model = prepared.pipeline(outcome.ema_model)
    noise = [abs(a - b) for a, b in zip(runs["fp32"], runs["fp32_seed1"], strict=True)]
    gap = [abs(a - b) for a, b in zip(runs["fp32"], runs["bf16"], strict=True)]
    inside = [g <= n for g, n in zip(gap, noise, strict=True)]
    print(f"\nloss per {args.window}-step window ({args.loss_steps} steps, same initial weights)")
    print(f"{'steps':>11s} {'fp32':>8s} {'bf16':>8s} {'fp32 s1':>8s} {'|bf16-fp32|':>12s} {'|fp32-fp32 s1|':>15s}  inside")
    for index, ok in enumerate(inside):
        start = index * args.window
        print(f"{start + 1:5d}-{min(start + args.window, args.loss_steps):<5d} {runs['fp32'][index]:8.4f} "
              f"{runs['bf16'][index]:8.4f} {runs['fp32_seed1'][index]:8.4f} {gap[index]:12.4f} {noise[index]:15.4f}  "
              f"{'yes' if ok else 'no'}")
    mean_gap, mean_noise = float(np.mean(gap)), float(np.mean(noise))
    print(f"mean |bf16 - fp32| {mean_gap:.4f} vs mean |fp32 - fp32(seed 1)| {mean_noise:.4f}: "
          f"{sum(inside)} of {len(inside)} windows inside the fp32 spread")
    return {"windows": runs, "gap": gap, "noise": noise, "inside": inside, "mean_gap": mean_gap,
            "mean_noise": mean_noise, "window": args.window, "steps": args.loss_steps}, model


# ------------------------------------------------------------------------------------------ 3. FID


def feature_network(frame, root: Path, image_size: int, quick: bool):
    """The evaluate stage's default feature space: the project's classifier trained on real images."""
    settings = ClassifierParams(epochs=2 if quick else 6, patience=10, batch_size=32, mixed_precision="no")
    images = VariantImages(frame[frame["split"] == "train"], frame[frame["split"] == "val"], image_size, root)
    result = train_classifier(images, {"variant": "bench", "augmentation": None, "class_balance": "none"}, settings)
    return classifier_features(result.model)


def draw(pipeline: GenerationPipeline, batches: list, seeds: list[int], steps: int) -> np.ndarray:
    images, start = [], 0
    for cond in batches:
        images.append(pipeline(cond, seeds[start:start + len(cond)], steps, 2.0))
        start += len(cond)
    return torch.cat(images)[:, 0].numpy()


def sampling_conditions(pipeline: GenerationPipeline, root: Path, n: int, batch: int) -> list:
    """Conditions of the first ``n`` training rows of the toy project (tokenized by the model's tokenizer),
    in batches of ``batch``."""
    rows = training_rows(_manifest(root))
    dataset = DiffusionDataset(rows, root, pipeline.tokenizer, pipeline.config.text_encoder.source,
                               lesions=read_lesions(root))
    picks = [index % len(dataset) for index in range(n)]
    return [batch_conditions(default_collate([dataset[i] for i in picks[start:start + batch]]))
            for start in range(0, n, batch)]


def bench_fid(args, root: Path, params: Params, pipeline: GenerationPipeline) -> dict:
    frame = _manifest(root)
    network = feature_network(frame, root, params.ingest.image_size, args.quick)
    real = np.stack([read_png16(root / path) for path in frame.loc[frame["split"] != "train", "path"]])
    batches = sampling_conditions(pipeline, root, args.samples, args.batch)
    seeds_a, seeds_b = list(range(args.samples)), list(range(10**6, 10**6 + args.samples))
    draws, seconds = {}, {}
    for name, precision, seeds in (("fp32", None, seeds_a), ("bf16", torch.bfloat16, seeds_a),
                                   ("fp32_other_seeds", None, seeds_b)):
        pipeline.autocast = precision
        started = time.perf_counter()
        draws[name] = draw(pipeline, batches, seeds, args.sample_steps)
        seconds[name] = time.perf_counter() - started
    fids = {name: fid_kid(network, real, images, seed=0)["fid"] for name, images in draws.items()}
    noise, gap = abs(fids["fp32"] - fids["fp32_other_seeds"]), abs(fids["bf16"] - fids["fp32"])
    pixel_gap = float(np.abs(draws["bf16"] - draws["fp32"]).mean())
    print(f"\nFID of {args.samples} samples ({pipeline.sampler}, {args.sample_steps} steps, guidance 2) against "
          f"{len(real)} real images, in the project classifier's feature space")
    print(f"{'sampling':18s} {'FID':>9s} {'s':>7s}")
    for name in draws:
        print(f"{name:18s} {fids[name]:9.3f} {seconds[name]:7.1f}")
    print(f"|FID bf16 - FID fp32| {gap:.3f} vs |FID fp32 - FID fp32 other seeds| {noise:.3f}: "
          f"{'inside' if gap <= noise else 'outside'} the seed noise; mean |pixel bf16 - fp32| same seeds {pixel_gap:.4f}")
    return {"fid": fids, "seconds": seconds, "gap": gap, "noise": noise, "inside": gap <= noise,
            "pixel_mean_abs_diff": pixel_gap, "n_samples": args.samples, "n_real": len(real)}


def bench_quality(args, which: list[str]) -> dict:
    """Parts 2 and 3 share the toy project (and part 3, by default, part 2's fp32 model)."""
    params = profile(args.quick)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        size = params.ingest.image_size
        if args.model:
            pipeline = GenerationPipeline.from_pretrained(args.model)
            size = pipeline.config.image_size
        make_project(root, n_images=args.images, size=size, lesion_rate=0.2)
        if "loss" in which:
            results["loss"], trained = bench_loss(args, root, params)
            pipeline = pipeline if args.model else trained
        elif not args.model:
            prepared, outcome = train_run(with_train(params, steps=args.loss_steps), root, "no", 0, root / "fp32")
            pipeline = prepared.pipeline(outcome.ema_model)
        if "fid" in which:
            results["fid"] = bench_fid(args, root, params, pipeline)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", help=f"parts to run, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny profile, few steps: a sanity run")
    parser.add_argument("--rounds", type=int, help="step part: alternating rounds (default 5; quick 2)")
    parser.add_argument("--steps", type=int, help="step part: timed steps per variant and round (default 3; quick 2)")
    parser.add_argument("--compile", action="store_true", help="step part: also bf16 + torch.compile (minutes to compile)")
    parser.add_argument("--only", type=lambda text: text.split(","), metavar="NAMES",
                        help="step part: only the variants whose name contains one of these comma-separated words "
                             "(and the baselines they are compared with), e.g. channels_last, project, classifier")
    parser.add_argument("--loss-steps", type=int, help="loss part: training steps per run (default 300; quick 30)")
    parser.add_argument("--window", type=int, help="loss part: steps per window (default 50; quick 10)")
    parser.add_argument("--images", type=int, help="toy training project size (default 400; quick 48)")
    parser.add_argument("--samples", type=int, help="fid part: samples per draw (default 128; quick 16)")
    parser.add_argument("--sample-steps", type=int, default=20, help="fid part: DPM-Solver++ steps")
    parser.add_argument("--batch", type=int, default=32, help="fid part: images per sampling call")
    parser.add_argument("--model", type=Path, help="fid part: a train_diffusion model folder (default: part 2's fp32 model)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, help=f"also write the figures here (e.g. {RESULTS.relative_to(ROOT)}/precision.json)")
    args = parser.parse_args()
    args.which = args.which or list(PARTS)
    if set(args.which) - set(PARTS):
        parser.error(f"unknown part(s) {sorted(set(args.which) - set(PARTS))}; choose from {', '.join(PARTS)}")
    defaults = {"rounds": (5, 2), "steps": (3, 2), "loss_steps": (300, 30), "window": (50, 10), "images": (400, 48),
                "samples": (128, 16)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    torch.set_num_threads(args.threads or TORCH_THREADS)
    about = machine()
    print(f"CPU: {about['cpu']}; flags {', '.join(about['flags']) or 'none'}; auto precision: "
          f"{'bf16' if about['native_bf16'] else 'fp32'} ({about['reason']}); torch {about['torch']}, "
          f"{about['threads']} threads")
    results: dict = {"machine": about}
    if "step" in args.which:
        results["step"] = bench_step(args)
    quality = [part for part in args.which if part in ("loss", "fid")]
    if quality:
        results |= bench_quality(args, quality)
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
