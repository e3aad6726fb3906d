"""Ingest's throughput against a bare decode + resize + write loop on the same files.

    python benchmarks/bench_ingest.py                      # 300 generated 12-bit DICOMs of 1024 px -> 64 px
    python benchmarks/bench_ingest.py --quick              # a sanity run: 60 files, 2 rounds
    python benchmarks/bench_ingest.py --size 256           # small files: fixed costs weigh more
    python benchmarks/bench_ingest.py --folder /path/to/dicoms --workers 4
    python benchmarks/bench_ingest.py --levels             # PNG writers: time and size per zlib level
    python benchmarks/bench_ingest.py --digests            # hash throughput: md5, sha1, sha256, blake2b
    python benchmarks/bench_ingest.py --profile 100        # cProfile of process_chunk on 100 files

Timed side by side in alternating rounds (the order rotates every round, each round writes into
fresh folders), on the same files:
- bare: ``pydicom.dcmread`` + ``pixel_array`` + min-max scaling + PIL bilinear resize + a plain
  ``Image.save`` of the 16-bit PNG (Pillow's defaults, no atomic rename), one file after another:
  the least a script that converts DICOMs to PNGs does;
- ingest, 1 worker: ``tasks.ingest.images.process_chunk`` on every file in one thread, i.e. what every
  ingest task runs: read, two SHA-256 digests, pydicom's modality/VOI pipeline with the header checks, anti-aliased
  Lanczos resize into the padded square, 16-bit PNG written atomically;
- ingest flow, 1 and N workers: the ``ingest`` flow's fan-out (``flows.ingest.decode_all``) inside a
  Prefect flow with 1 worker, and with ``--workers`` worker processes (``runtime.fanout: processes``,
  the default) and threads (``threads``); the flow's own start-up is not counted, the task runs' API
  calls and the worker processes' start are.

The default files are 1024 px, the size of the smallest public collections' images (NIH ChestX-ray14);
a hospital's radiographs are 2-3k px, so per-file work weighs more there, fixed costs less.

Each line gives the median images/s over the rounds and the median of the per-round ratios to bare.
The machine's CPU model and its bf16/AMX flags are printed beside the figures.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
os.environ.setdefault("DO_NOT_TRACK", "1")

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid  # noqa: E402

from cxrsynth.tasks.ingest import images  # noqa: E402
from cxrsynth.tasks.io import to_uint16  # noqa: E402
from cxrsynth.tasks.params import parse_params  # noqa: E402
from cxrsynth.tasks.sources.decode import decode_image  # noqa: E402
from cxrsynth.tasks.sources.geometry import fit_square  # noqa: E402

SUFFIXES = {".dcm", ".png", ".jpg", ".jpeg"}
LEVELS = (0, 1, 2, 3, 6, 9)
DIGESTS = ("md5", "sha1", "sha256", "blake2b")


def write_dicoms(folder: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """``count`` 12-bit MONOCHROME2 DICOMs of a noisy radiograph-like gradient, ``size`` px square."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:size, 0:size] / size
    base = 0.3 + 0.4 * np.exp(-((columns - 0.5) ** 2) / 0.02) + 0.2 * rows
    paths = []
    for number in range(count):
        stored = np.clip((base + rng.normal(0, 0.05, base.shape)) * 4095, 0, 4095).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset = Dataset()
        dataset.file_meta = meta
        dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        dataset.PixelSpacing = [0.7, 0.7]
        dataset.set_pixel_data(stored, "MONOCHROME2", 12, generate_instance_uid=False)
        path = folder / f"image{number:05d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------ the timed loops


def bare_loop(paths: list[Path], size: int, out: Path) -> None:
    """Decode, scale, resize and save each file with the plainest calls: no checks, digests or atomic write."""
    out.mkdir(parents=True, exist_ok=True)
    for number, path in enumerate(paths):
        pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
        pixels = (pixels - pixels.min()) / max(float(pixels.max() - pixels.min()), 1.0)
        scale = size / max(pixels.shape)
        shape = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        resized = np.asarray(Image.fromarray(pixels).resize(shape, Image.Resampling.BILINEAR))
        Image.fromarray(np.round(np.clip(resized, 0, 1) * 65535).astype(np.uint16)).save(out / f"{number}.png")


def ingest_one_worker(items: list[images.WorkItem], size: int, out: Path) -> None:
    _check(images.process_chunk(items, size, out))


def ingest_flow(items: list[images.WorkItem], size: int, out: Path, workers: int, fanout: str = "processes") -> float:
    """Seconds the ingest fan-out takes inside a Prefect flow (the flow's own start-up not counted)."""
    from prefect import flow

    import cxrsynth.flows.ingest as stage

    root = os.path.commonpath([item.image_path.parent for item in items])  # files must lie inside ingest.path
    params = parse_params({"ingest": {"image_size": size, "workers": workers, "path": root}, "runtime": {"fanout": fanout}})

    @flow(name="bench_ingest")
    def timed() -> float:
        start = time.perf_counter()
        _check(list(stage.decode_all(items, params, out).values()))
        return time.perf_counter() - start

    return timed()


def _check(results: list[images.ImageResult]) -> None:
    failed = [r.reason for r in results if r.reason]
    if failed:
        raise SystemExit(f"{len(failed)} files failed to decode, e.g. {failed[0]}")


def _timed(function: Callable[[Path], float | None], out: Path) -> float:
    """Seconds ``function(out)`` takes (or the seconds it reports itself); ``out`` is removed afterwards."""
    start = time.perf_counter()
    reported = function(out)
    seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return reported if reported is not None else seconds


def alternating_rounds(methods: dict[str, Callable[[Path], float | None]], rounds: int, scratch: Path) -> dict[str, list[float]]:
    """Seconds per method per round; the order rotates every round so drifting load hits all alike."""
    names = list(methods)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        order = names[round_number % len(names):] + names[: round_number % len(names)]
        for name in order:
            seconds[name].append(_timed(methods[name], scratch / f"round{round_number}-{names.index(name)}"))
    return seconds


def report(seconds: dict[str, list[float]], files: int, baseline: str) -> None:
    print(f"{'':<52}{'images/s':>10}{'ratio to bare':>16}   (medians of {len(seconds[baseline])} rounds)")
    for name, timings in seconds.items():
        ratios = [base / own for base, own in zip(seconds[baseline], timings)]
        print(f"{name:<52}{files / statistics.median(timings):10.1f}{statistics.median(ratios):16.2f}"
              f"   rounds: {' '.join(f'{r:.2f}' for r in ratios)}")


# ------------------------------------------------------------------------ PNG writers and profile


def _pil_png(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def png_writers() -> dict[str, Callable[[np.ndarray], bytes]]:
    """Pillow's encoder (adaptive filters) and encode_png16 (Up filter) at zlib levels and strategies."""
    from cxrsynth.tasks.io import encode_png16  # here, so that the rest of the benchmark also runs on older code

    writers: dict[str, Callable[[np.ndarray], bytes]] = {"Pillow, default (level 6)": lambda a: _pil_png(a)}
    writers.update({f"Pillow, level {level}": (lambda a, level=level: _pil_png(a, compress_level=level)) for level in (0, 1)})
    writers["Pillow, RLE strategy"] = lambda a: _pil_png(a, compress_type=zlib.Z_RLE)
    writers.update({f"Up filter, level {level}": (lambda a, level=level: encode_png16(a, level, zlib.Z_DEFAULT_STRATEGY))
                    for level in LEVELS})
    writers["Up filter, RLE (write_png16)"] = encode_png16
    return writers


def png_levels(paths: list[Path], size: int, rounds: int) -> None:
    """Encode time and size of the working images per writer, alternating writers within each round."""
    working = [to_uint16(fit_square(decode_image(path).pixels, size)[0]) for path in paths]
    writers = png_writers()
    seconds: dict[str, list[float]] = {name: [] for name in writers}
    for _ in range(rounds):
        for name, write in writers.items():
            start = time.perf_counter()
            for pixels in working:
                write(pixels)
            seconds[name].append(time.perf_counter() - start)
    raw = sum(p.nbytes for p in working)
    print(f"{len(working)} working images of {size} px, 16-bit; raw {raw / len(working) / 1024:.1f} KiB each; "
          f"medians of {rounds} rounds")
    print(f"{'writer':<32}{'ms/image':>10}{'speed vs Pillow default':>25}{'size / raw':>12}")
    for name, write in writers.items():
        ratios = [base / own for base, own in zip(seconds["Pillow, default (level 6)"], seconds[name])]
        written = sum(len(write(p)) for p in working)
        print(f"{name:<32}{statistics.median(seconds[name]) / len(working) * 1e3:10.3f}"
              f"{statistics.median(ratios):25.2f}{written / raw:12.3f}")


def digests(paths: list[Path], rounds: int) -> None:
    """Hash throughput on what ingest hashes: the files' bytes and the decoded float32 pixels."""
    buffers = {"file bytes": [path.read_bytes() for path in paths],
               "decoded pixels": [decode_image(path).pixels for path in paths]}
    for what, data in buffers.items():
        seconds: dict[str, list[float]] = {name: [] for name in DIGESTS}
        for _ in range(rounds):
            for name in DIGESTS:
                start = time.perf_counter()
                for buffer in data:
                    hashlib.new(name, buffer).digest()
                seconds[name].append(time.perf_counter() - start)
        size = sum(memoryview(b).nbytes for b in data)
        print(f"{what} ({size / len(data) / 1024:.0f} KiB each): " + ", ".join(
            f"{name} {size / statistics.median(seconds[name]) / 1e6:.0f} MB/s" for name in DIGESTS))


def profile_ingest(items: list[images.WorkItem], size: int, out: Path, top: int = 20) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    images.process_chunk(items, size, out)
    profiler.disable()
    for order in ("tottime", "cumulative"):
        pstats.Stats(profiler).strip_dirs().sort_stats(order).print_stats(top)


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, help="decode these DICOM files (recursively) instead of generated ones")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=1024, help="generated DICOM size")
    parser.add_argument("--image-size", type=int, default=64, help="working resolution")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a sanity run: 60 files, 2 rounds")
    parser.add_argument("--levels", action="store_true", help="time PNG writers and zlib levels instead")
    parser.add_argument("--digests", action="store_true", help="time hash algorithms on the files and pixels instead")
    parser.add_argument("--profile", type=int, metavar="N", help="cProfile process_chunk on N files instead")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.rounds = min(args.count, 60), 2

    # Here, not at the top: worker processes import this script again, and the fan-out's workers should
    # start as the `cxrsynth` command's do, without torch.
    from cxrsynth.tasks.device import describe_cpu

    print(describe_cpu())
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.folder:
            paths = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() == ".dcm")[: args.count]
        else:
            (scratch / "source").mkdir()
            paths = write_dicoms(scratch / "source", args.count, args.size)
        items = [images.WorkItem(f"img-{n:06d}", path) for n, path in enumerate(paths, start=1)]
        os.chdir(scratch)
        if args.levels:
            return png_levels(paths, args.image_size, args.rounds)
        if args.digests:
            return digests(paths, args.rounds)
        if args.profile:
            return profile_ingest(items[: args.profile], args.image_size, scratch / "profile")
        bare_loop(paths[:5], args.image_size, scratch / "warm")  # warm imports and caches for every side
        ingest_one_worker(items[:5], args.image_size, scratch / "warm")
        ingest_flow(items[:40], args.image_size, scratch / "warm", args.workers)  # and Prefect's server
        methods = {
            "bare decode + resize + write (1 thread)": lambda out: bare_loop(paths, args.image_size, out),
            "ingest process_chunk (1 worker, no Prefect)": lambda out: ingest_one_worker(items, args.image_size, out),
            "ingest flow fan-out (1 worker)": lambda out: ingest_flow(items, args.image_size, out, 1),
            f"ingest flow fan-out ({args.workers} worker processes)": lambda out: ingest_flow(items, args.image_size, out, args.workers),
            f"ingest flow fan-out ({args.workers} threads)": lambda out: ingest_flow(items, args.image_size, out, args.workers, "threads"),
        }
        print(f"{len(paths)} DICOMs of {args.size} px -> {args.image_size} px; {args.rounds} alternating rounds")
        report(alternating_rounds(methods, args.rounds, scratch), len(paths), next(iter(methods)))


if __name__ == "__main__":
    main()
