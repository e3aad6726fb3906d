"""Training step time of the default profile's U-Net in pixel and latent space, side by side in one run.

Variants (the default profile's model, batch, loss and mixed precision; toy radiographs with lesions):

- pixel 64 px: today's default, the U-Net on (1, 64, 64) images;
- latent 64 px: f = 4 autoencoder (autoencoder params' defaults), the U-Net on (3, 16, 16) latents;
- latent 128 px: the same autoencoder at 128 px, the U-Net on (3, 32, 32) latents;

each with the lesion SSIM term (``diffusion.loss.ssim_weight`` as in params.yaml; in latent space it
decodes the predicted clean latent of every image with a lesion through the autoencoder's decoder
and back-propagates through it) and without it (``ssim_weight`` 0). One "step" is the project's
whole training step (tasks.diffusion.training.train_diffusion: condition dropout, loss, AdamW, EMA,
clipping), timed from the end of its first step to the end of its last. Rounds alternate the order of
the variants, so a change in the machine's load hits them alike; ratios are per round against pixel
64 px with the SSIM term (today's default). The autoencoder's weights are random: its cost does not
depend on them.

Run from the repository root:  python benchmarks/bench_latent.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrsynth.models.autoencoder import build_autoencoder  # noqa: E402
from cxrsynth.tasks import manifest  # noqa: E402
from cxrsynth.tasks.autoencoder.model_io import save_autoencoder  # noqa: E402
from cxrsynth.tasks.autoencoder.training import config_of  # noqa: E402
from cxrsynth.tasks.device import describe_cpu  # noqa: E402
from cxrsynth.tasks.diffusion.train_stage import training_setup  # noqa: E402
from cxrsynth.tasks.diffusion.training import TrainHooks, train_diffusion, training_precision  # noqa: E402
from cxrsynth.tasks.params import AutoencoderParams, load_params  # noqa: E402
from tests.diffusion_data import make_project  # noqa: E402

SPACES = {"pixel 64 px": ("pixel", 64), "latent 64 px": ("latent", 64), "latent 128 px": ("latent", 128)}
BASELINE = "pixel 64 px, ssim"


def with_diffusion(params, **update):
    return params.model_copy(update={"diffusion": params.diffusion.model_copy(update=update)})


def prepare(scratch: Path, space: str, size: int, args):
    """A toy project at ``size`` px and its training setup (in latent space, with a fresh autoencoder)."""
    root = scratch / f"{space}_{size}"
    print(f"writing {args.images} toy radiographs ({size} px) to {root}", file=sys.stderr)
    make_project(root, n_images=args.images, size=size, lesion_rate=args.lesion_rate)
    autoencoder_dir = None
    if space == "latent":
        shape = config_of(AutoencoderParams())
        torch.manual_seed(0)
        autoencoder_dir = root / "autoencoder"
        save_autoencoder(autoencoder_dir, build_autoencoder(shape), shape)
    params = with_diffusion(load_params(ROOT / "params.yaml"), space=space)
    return params, training_setup(params, manifest.read(root / "data/prepare_masks/manifest.parquet"), root,
                                  autoencoder_dir)


def seconds_per_step(setup, diffusion, folder: Path, steps: int) -> float:
    ends: list[float] = []
    train = diffusion.train.model_copy(update={"steps": steps, "checkpoint_every": 10**6, "sample_every": 10**6})
    train_diffusion(setup, diffusion.model_copy(update={"train": train}), folder, seed=0,
                    hooks=TrainHooks(on_step=lambda step, parts: ends.append(time.perf_counter())))
    return (ends[-1] - ends[0]) / (steps - 1)


def variants(prepared: dict) -> dict:
    """Each space with and without the SSIM term: name -> (setup, diffusion params)."""
    found = {}
    for name, (params, setup) in prepared.items():
        loss = params.diffusion.loss
        found[f"{name}, ssim"] = (setup, params.diffusion)
        found[f"{name}, no ssim"] = (setup, params.diffusion.model_copy(
            update={"loss": loss.model_copy(update={"ssim_weight": 0.0})}))
    return found


def lesion_share(setup) -> float:
    return sum(bool(setup.dataset[i]["masks"].amax() > 0) for i in range(len(setup.dataset))) / len(setup.dataset)


def measure(args) -> dict:
    timings: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        prepared = {name: prepare(scratch, space, size, args) for name, (space, size) in SPACES.items()}
        runs = variants(prepared)
        share = lesion_share(next(iter(prepared.values()))[1])
        names = list(runs)
        for round_index in range(args.rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for name in order:
                setup, diffusion = runs[name]
                folder = scratch / f"checkpoints_{round_index}_{names.index(name)}"
                timings.setdefault(name, []).append(seconds_per_step(setup, diffusion, folder, args.steps))
                print(f"  round {round_index}: {name}: {timings[name][-1]:.3f} s/step", file=sys.stderr)
        shapes = {name: tuple(setup.config.sample_shape) for name, (_, setup) in prepared.items()}
        precision = training_precision(next(iter(prepared.values()))[0].diffusion.train, torch.device("cpu")).name
    return {"timings": timings, "shapes": shapes, "lesion_share": share, "precision": precision}


def report(result: dict, args) -> dict:
    timings = result["timings"]
    ratios = {name: statistics.median(t / b for t, b in zip(values, timings[BASELINE], strict=True))
              for name, values in timings.items()}
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(f"CPU: {describe_cpu()}; torch threads {torch.get_num_threads()}; precision {result['precision']}")
    print(f"batch 16, {args.steps - 1} timed steps x {args.rounds} rounds; {result['lesion_share']:.0%} of the toy "
          f"images have a lesion mask (only those are decoded for the latent SSIM term)")
    print(f"{'variant':<24} {'denoiser input':>15} {'s/step':>8} {'vs pixel 64 px, ssim':>21}")
    for name, median in medians.items():
        shape = "x".join(map(str, result["shapes"][name.split(",")[0]]))
        print(f"{name:<24} {shape:>15} {median:>8.3f} {ratios[name]:>20.2f}x")
    for space in SPACES:
        overhead = statistics.median(a / b for a, b in zip(timings[f"{space}, ssim"], timings[f"{space}, no ssim"],
                                                           strict=True))
        print(f"SSIM term cost in {space}: step time x{overhead:.2f} (median per-round ratio with / without)")
    return {"s_per_step": medians, "ratio_to_pixel_64_ssim": ratios, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="training steps per variant and round (first untimed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=64, help="toy training images per resolution")
    parser.add_argument("--lesion-rate", type=float, default=0.1, help="per-finding lesion rate of the toy images")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="a sanity run: 3 steps, 1 round, 24 images")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.images = 3, 1, 24
    torch.set_num_threads(args.threads)
    print(json.dumps(report(measure(args), args), indent=2, default=str))


if __name__ == "__main__":
    main()
