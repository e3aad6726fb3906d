"""Ingest's decode + resize throughput against a bare pydicom-plus-resize loop on the same files.

    python benchmarks/bench_ingest.py                      # 300 generated 12-bit DICOMs of 256 px
    python benchmarks/bench_ingest.py --count 600 --size 512
    python benchmarks/bench_ingest.py --folder /path/to/dicoms --workers 4

Four timings on the same files, side by side in one run:
- bare: pydicom.dcmread + pixel_array + min-max scaling + PIL resize, one file after another,
  nothing written (the least a decoder can do);
- ingest decode + resize: ``decode_image`` + ``fit_square``, one thread, nothing written: the
  like-for-like comparison with bare;
- ingest, one thread: ``tasks.ingest.images.process_chunk``, i.e. what every ingest task runs: read,
  md5, pydicom's modality/VOI pipeline, anti-aliased resize into the padded square, 16-bit PNG write;
- ingest, flow: the same through the Prefect task runner with ``--workers`` threads, as the
  ``ingest`` flow fans it out (server start-up excluded: only the fan-out is timed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid  # noqa: E402

from cxrsynth.tasks.ingest import images  # noqa: E402
from cxrsynth.tasks.params import parse_params  # noqa: E402
from cxrsynth.tasks.sources.decode import decode_image  # noqa: E402
from cxrsynth.tasks.sources.geometry import fit_square  # noqa: E402

SUFFIXES = {".dcm", ".png", ".jpg", ".jpeg"}


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


def bare_loop(paths: list[Path], size: int) -> None:
    for path in paths:
        pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
        pixels = (pixels - pixels.min()) / max(float(pixels.max() - pixels.min()), 1.0)
        scale = size / max(pixels.shape)
        shape = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
        np.asarray(Image.fromarray(pixels).resize(shape, Image.Resampling.BILINEAR))


def ingest_decode_resize(paths: list[Path], size: int) -> None:
    for path in paths:
        fit_square(decode_image(path).pixels, size)


def ingest_one_thread(items: list[images.WorkItem], size: int, out: Path) -> None:
    results = images.process_chunk(items, size, out)
    _check(results)


def ingest_flow(items: list[images.WorkItem], size: int, workers: int) -> float:
    """Seconds the ingest fan-out takes inside a Prefect flow (the flow's own start-up not counted)."""
    from prefect import flow

    import cxrsynth.flows.ingest as stage

    params = parse_params({"ingest": {"image_size": size, "workers": workers}})

    @flow(name="bench_ingest")
    def timed() -> float:
        start = time.perf_counter()
        _check(list(stage.decode_all(items, params).values()))
        return time.perf_counter() - start

    return timed()


def _check(results: list[images.ImageResult]) -> None:
    failed = [r.reason for r in results if r.reason]
    if failed:
        raise SystemExit(f"{len(failed)} files failed to decode, e.g. {failed[0]}")


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, help="decode these files (DICOM, PNG, JPG, recursively) instead of generated ones")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=256, help="generated DICOM size")
    parser.add_argument("--image-size", type=int, default=64, help="working resolution")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if args.folder:
            paths = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in SUFFIXES)[: args.count]
        else:
            (scratch / "source").mkdir()
            paths = write_dicoms(scratch / "source", args.count, args.size)
        dicoms = [p for p in paths if p.suffix.lower() == ".dcm"]
        items = [images.WorkItem(f"img-{n:06d}", path) for n, path in enumerate(paths, start=1)]
        os.chdir(scratch)  # the flow writes data/ingest under the working directory
        bare_loop(dicoms[:5], args.image_size)  # warm imports and caches for both sides
        ingest_one_thread(items[:5], args.image_size, scratch / "warm")

        bare = _timed(bare_loop, dicoms, args.image_size) if dicoms else float("nan")
        decode_only = _timed(ingest_decode_resize, paths, args.image_size)
        single = _timed(ingest_one_thread, items, args.image_size, scratch / "single")
        fanned = ingest_flow(items, args.image_size, args.workers)

    print(f"{len(paths)} files ({len(dicoms)} DICOM), working size {args.image_size}, {os.cpu_count()} CPUs")
    print(f"{'bare pydicom + resize (DICOM only, 1 thread)':<52}{len(dicoms) / bare:9.1f} images/s")
    timings = (
        ("ingest decode + resize only (1 thread)", decode_only),
        ("ingest process_chunk, with PNG writes (1 thread)", single),
        (f"ingest flow fan-out ({args.workers} workers)", fanned),
    )
    for name, seconds in timings:
        print(f"{name:<52}{len(items) / seconds:9.1f} images/s   ratio to bare {bare / seconds * len(items) / max(len(dicoms), 1):5.2f}")


if __name__ == "__main__":
    main()
