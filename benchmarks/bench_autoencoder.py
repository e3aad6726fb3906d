"""The autoencoder of latent diffusion on this machine: training step time and images/s of the
profile's ``autoencoder`` params, and encode + decode throughput, side by side in one run.

1. train: seconds per step of the project's own step (tasks.autoencoder.training.train_step: L1 +
   KL, Adam, EMA) at the profile's working size and batch, under the precision ``autoencoder.
   mixed_precision`` picks here (auto: bf16 on a CPU with AMX / AVX-512 BF16) against float32,
   the baseline. The variants alternate within every round (their order flips each round), so
   load from other processes hits both alike; the ratio is the median of per-round ratios.
2. codec: images/s of encoding (posterior mean) and decoding one batch, float32, eval mode: what
   latent diffusion pays per training image once (latents are cached) and per sampled image.

The images are toy radiographs (tests.diffusion_data.toy_image); speed does not depend on content.

Run from the repository root:  python benchmarks/bench_autoencoder.py [--profile params.yaml] [--quick]
``--quick`` runs the tiny test profile, 1 round of 2 steps (a sanity check, not a measurement).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

TORCH_THREADS = torch.get_num_threads()  # before tests.diffusion_data sets one thread for the test suite
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrsynth.tasks.autoencoder.training import _new_run, train_step  # noqa: E402
from cxrsynth.tasks.device import choose_precision, describe_cpu  # noqa: E402
from cxrsynth.tasks.params import AutoencoderParams, load_params  # noqa: E402
from tests.diffusion_data import toy_image  # noqa: E402


def toy_batch(batch_size: int, size: int) -> torch.Tensor:
    """(batch, 1, size, size) toy radiographs in [-1, 1]."""
    rng = np.random.default_rng(0)
    images = [toy_image(size, rng, {"nodule": "left"}, False)[0] for _ in range(batch_size)]
    return torch.from_numpy(np.stack(images))[:, None] * 2 - 1


class TrainStep:
    """The project's autoencoder step on one fixed batch, fresh weights, in one precision."""

    def __init__(self, settings: AutoencoderParams, mixed_precision: str, images: torch.Tensor) -> None:
        self.settings = settings.model_copy(update={"mixed_precision": mixed_precision})
        self.run = _new_run(self.settings, seed=0, device=torch.device("cpu"))
        self.images = images

    def __call__(self) -> float:
        started = time.perf_counter()
        train_step(self.run, self.images, self.settings.loss)
        return time.perf_counter() - started


def bench_train(settings: AutoencoderParams, images: torch.Tensor, rounds: int, steps: int) -> dict:
    picked = choose_precision(settings.mixed_precision, torch.device("cpu"), "autoencoder.mixed_precision")
    variants = {f"{settings.mixed_precision} ({picked.name})": TrainStep(settings, settings.mixed_precision, images),
                "fp32 (baseline)": TrainStep(settings, "no", images)}
    for step in variants.values():
        step()  # warm-up: first-call allocations and kernel selection
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(rounds):
        order = list(variants) if round_index % 2 == 0 else list(variants)[::-1]
        for name in order:
            times[name].append(statistics.median(variants[name]() for _ in range(steps)))
        print(f"  round {round_index}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()), file=sys.stderr)
    chosen, baseline = list(variants)
    ratios = [a / b for a, b in zip(times[chosen], times[baseline], strict=True)]
    return {"times": times, "ratio": statistics.median(ratios), "round_ratios": ratios, "reason": picked.reason}


@torch.no_grad()
def bench_codec(settings: AutoencoderParams, images: torch.Tensor, rounds: int) -> dict[str, float]:
    autoencoder = TrainStep(settings, "no", images).run.ema.module.eval()
    encode, decode = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        latent = autoencoder.encode(images)[0]
        encoded = time.perf_counter()
        autoencoder.decode(latent)
        encode.append(encoded - started)
        decode.append(time.perf_counter() - encoded)
    return {"encode_images_per_s": len(images) / statistics.median(encode),
            "decode_images_per_s": len(images) / statistics.median(decode), "latent_shape": list(latent.shape[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default=str(ROOT / "params.yaml"), help="params file whose autoencoder is measured")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="steps per variant per round (their median counts)")
    parser.add_argument("--quick", action="store_true", help="tiny profile, 1 round of 2 steps: a sanity run")
    args = parser.parse_args()
    if args.quick:
        args.profile, args.rounds, args.steps = str(ROOT / "tests/params.tiny.yaml"), 1, 2
    torch.set_num_threads(TORCH_THREADS)
    params = load_params(args.profile)
    settings, size = params.autoencoder, params.ingest.image_size
    images = toy_batch(settings.batch_size, size)
    train = bench_train(settings, images, args.rounds, args.steps)
    codec = bench_codec(settings, images, max(args.rounds, 2))

    print(f"\nCPU: {describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"autoencoder of {Path(args.profile).name}: {size} px, batch {settings.batch_size}, downsampling "
          f"{settings.downsampling}, latent {codec['latent_shape']}, base channels {settings.base_channels}")
    print(f"precision picked: {train['reason']}")
    print(f"\ntraining step (median of {args.rounds} rounds x {args.steps} steps, alternating)")
    print(f"{'variant':22s} {'s/step':>8s} {'images/s':>9s}")
    for name, times in train["times"].items():
        median = statistics.median(times)
        print(f"{name:22s} {median:8.3f} {settings.batch_size / median:9.1f}")
    print(f"ratio to fp32: {train['ratio']:.3f} (per round: {' '.join(f'{r:.3f}' for r in train['round_ratios'])})")
    chosen_step_s = statistics.median(next(iter(train["times"].values())))
    print(f"{settings.steps} steps of the profile: about {settings.steps * chosen_step_s / 60:.1f} min")
    print(f"\ncodec (fp32, eval): encode {codec['encode_images_per_s']:.0f} images/s, decode "
          f"{codec['decode_images_per_s']:.0f} images/s")


if __name__ == "__main__":
    main()
