"""The prepare_masks work per image: localisations to lesion masks, a label map, attributes, rejections.

A localisation that cannot become a mask (bad geometry or file, unknown finding, a finding whose
parsed state is absent, a mask under ``min_area_px`` at working size) is rejected with a reason
``"<code>: <detail>"`` and skipped; the rest of the image goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrsynth.tasks.findings import ABSENT, FINDINGS
from cxrsynth.tasks.io import write_mask
from cxrsynth.tasks.masks import labelmap
from cxrsynth.tasks.masks.attributes import lesion_attributes
from cxrsynth.tasks.masks.geometry import KINDS, Geometry, canvas_shape, localisation_mask

LOCALISATION_COLUMNS = ("image_id", "lesion", "finding", "kind", "value")
LESION_COLUMNS = ("image_id", "lesion", "finding", "kind", "mask_path", "area_px", "area_mm2",
                  "centroid_y", "centroid_x", "bbox", "laterality", "zone")
REJECTED_COLUMNS = ("image_id", "lesion", "reason")
LESION_VALUE = 255  # lesion pixels in a per-lesion PNG (non-zero = lesion; 255 so it can be viewed)


class Rejected(ValueError):
    """A localisation that cannot become a lesion mask: ``code`` to count it by, ``detail`` to read."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code, self.detail = code, detail


@dataclass
class ImageMasks:
    """What one image gave: its accepted lesions, its rejected localisations and its label map path."""

    image_id: str
    lesions: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    mask_path: str | None = None


def read_localisations(path: str | Path) -> pd.DataFrame:
    """Ingest's localisations table, checked for the contract's columns."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: localisations not found (ingest writes it, empty when the source has none)")
    frame = pd.read_parquet(path)
    missing = [column for column in LOCALISATION_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    return frame[list(LOCALISATION_COLUMNS)].astype({"image_id": str, "finding": str, "kind": str})


def rejection(image_id: str, lesion: object, reason: Rejected) -> dict:
    """One rejected.csv row."""
    return {"image_id": image_id, "lesion": None if lesion is None else str(lesion), "reason": str(reason)}


def check_localisation(localisation: Mapping, row: Mapping, seen: set[str]) -> None:
    """Raise Rejected when a localisation is unusable before any geometry: unknown finding or kind,
    a lesion id given twice, or a finding the image's parsed labels deny."""
    finding, kind = localisation["finding"], localisation["kind"]
    if finding not in FINDINGS:
        raise Rejected("unknown_finding", f"{finding!r} is not one of {', '.join(FINDINGS)}")
    if kind not in KINDS:
        raise Rejected("unknown_kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    if str(localisation["lesion"]) in seen:
        raise Rejected("duplicate_lesion", f"lesion {localisation['lesion']} appears twice")
    state = row.get(finding)
    if state is not None and not pd.isna(state) and int(state) == ABSENT:
        raise Rejected("denied_by_labels", f"a {finding} mask on an image whose parsed {finding} state is absent")


def image_geometry(row: Mapping, root: Path) -> Geometry:
    """The row's geometry on its working image; Rejected (without the file's path) when either is unusable."""
    try:
        return Geometry.of_row(row, canvas_shape(root / row["path"]))
    except OSError as exc:
        raise Rejected("bad_image", f"working image unreadable ({type(exc).__name__})") from None
    except ValueError as exc:
        raise Rejected("bad_image", f"manifest geometry unusable: {exc}") from None


def lesion_mask(localisation: Mapping, geometry: Geometry, root: Path, min_area_px: int) -> np.ndarray:
    """The localisation's working mask; Rejected when it is bad or smaller than ``min_area_px``."""
    try:
        mask = localisation_mask(localisation["kind"], localisation["value"], geometry, root)
    except ValueError as exc:
        raise Rejected(f"bad_{localisation['kind']}", str(exc)) from None
    if mask.sum() < max(1, min_area_px):
        raise Rejected("too_small", f"{int(mask.sum())} px at working size, under min_area_px={min_area_px}")
    return mask


def prepare_image(
    row: Mapping,
    localisations: pd.DataFrame,
    root: Path,
    out_dir: Path,
    min_area_px: int,
) -> ImageMasks:
    """All of one image's localisations to lesion PNGs and one label map under ``out_dir``."""
    image_id = str(row["image_id"])
    result = ImageMasks(image_id)
    try:
        geometry = image_geometry(row, root)
    except Rejected as reason:
        result.rejected = [rejection(image_id, lesion, reason) for lesion in localisations["lesion"]]
        return result
    per_finding: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    for localisation in localisations.to_dict("records"):
        lesion, finding = localisation["lesion"], localisation["finding"]
        try:
            check_localisation(localisation, row, seen)
            mask = lesion_mask(localisation, geometry, root, min_area_px)
        except Rejected as reason:
            result.rejected.append(rejection(image_id, lesion, reason))
            continue
        finally:
            seen.add(str(lesion))
        relative = out_dir / "lesions" / f"{image_id}_{lesion}.png"
        write_mask(root / relative, mask.astype(np.uint8) * LESION_VALUE)
        per_finding[finding] = per_finding.get(finding, np.zeros(geometry.shape, bool)) | mask
        result.lesions.append({
            "image_id": image_id, "lesion": lesion, "finding": finding, "kind": localisation["kind"],
            "mask_path": relative.as_posix(), **lesion_attributes(mask, geometry, row.get("pixel_spacing_mm")),
        })
    if per_finding:
        relative = out_dir / "masks" / f"{image_id}.png"
        write_mask(root / relative, labelmap.encode(per_finding, geometry.shape))
        result.mask_path = relative.as_posix()
    return result


def prepare_images(
    rows: list[dict],
    localisations: pd.DataFrame,
    root: str | Path,
    out_dir: str | Path,
    min_area_px: int,
) -> list[ImageMasks]:
    """``prepare_image`` over several manifest rows (one unit of parallel work)."""
    by_image = dict(tuple(localisations.groupby("image_id", sort=False)))
    return [
        prepare_image(row, by_image[str(row["image_id"])], Path(root), Path(out_dir), min_area_px)
        for row in rows
    ]


def unknown_images(localisations: pd.DataFrame, image_ids: pd.Series) -> list[dict]:
    """Rejections for localisations of images the manifest does not hold."""
    stray = localisations[~localisations["image_id"].isin(set(image_ids))]
    return [rejection(image_id, lesion, Rejected("unknown_image", "no manifest row has this image_id"))
            for image_id, lesion in zip(stray["image_id"], stray["lesion"])]


def lesions_table(results: list[ImageMasks]) -> pd.DataFrame:
    records = [lesion for result in results for lesion in result.lesions]
    frame = pd.DataFrame(records, columns=list(LESION_COLUMNS))
    return frame.astype({"area_px": "int64", "area_mm2": "float64", "centroid_y": "float64", "centroid_x": "float64"})


def rejected_table(results: list[ImageMasks], extra: list[dict] = ()) -> pd.DataFrame:
    records = [*extra, *(rejected for result in results for rejected in result.rejected)]
    return pd.DataFrame(records, columns=list(REJECTED_COLUMNS))


def manifest_additions(image_ids: pd.Series, results: list[ImageMasks]) -> pd.DataFrame:
    """The prepare_masks columns for every manifest row: label map path (null without lesions), lesion count."""
    by_id = {result.image_id: result for result in results}
    return pd.DataFrame({
        "image_id": image_ids.to_numpy(),
        "mask_path": [by_id[i].mask_path if i in by_id else None for i in image_ids],
        "n_lesions": [len(by_id[i].lesions) if i in by_id else 0 for i in image_ids],
    })
