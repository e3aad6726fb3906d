"""One image, one row, one split: the same decoded image listed twice is ingested once.

Images are compared by the md5 of their decoded pixels, so the same radiograph copied under
another name, or listed twice in the index, is caught. Under one patient the first listing is
kept and the others are quarantined as its duplicates. Under two patients the split could put
one copy in train and the other in test, a leak that inflates every AUROC: ingest stops and names
the rows, or (``ingest.patient_conflict: merge``) treats those patients as one.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

from cxrsynth.tasks.ingest.images import IMAGES, SOURCE_MASKS, ImageResult, mask_file_name
from cxrsynth.tasks.ingest.select import Pseudonym
from cxrsynth.tasks.sources.base import SourceError, SourceRecord


class PatientConflict(SourceError):
    """One decoded image listed under two or more patients."""


@dataclasses.dataclass(frozen=True)
class Resolved:
    pseudonyms: list[Pseudonym]  # patients merged where the policy says so
    results: dict[str, ImageResult]  # duplicates quarantined
    duplicates: list[str]  # image ids dropped as duplicates of an earlier listing
    merged_patients: int  # patients folded into another one


def duplicate_groups(pseudonyms: list[Pseudonym], results: dict[str, ImageResult]) -> list[list[int]]:
    """Positions (in listing order) of the decoded images that share their pixels with another."""
    by_pixels: dict[str, list[int]] = defaultdict(list)
    for position, pseudonym in enumerate(pseudonyms):
        result = results[pseudonym.image_id]
        if result.reason is None:
            by_pixels[result.pixel_digest].append(position)
    return [group for group in by_pixels.values() if len(group) > 1]


def conflict_message(records: list[SourceRecord], pseudonyms: list[Pseudonym], conflicts: list[list[int]]) -> str:
    described = "; ".join(
        " and ".join(f"source row {records[i].row} ({pseudonyms[i].patient_id})" for i in group) for group in conflicts
    )
    return (
        f"{len(conflicts)} image(s) listed under more than one patient, so one image could land in two splits: "
        f"{described}. Correct the index, or set ingest.patient_conflict: merge to treat those patients as one."
    )


def merge_patients(pseudonyms: list[Pseudonym], conflicts: list[list[int]]) -> list[Pseudonym]:
    """Every patient that shares an image with another takes the pseudonym of the first listed of them."""
    parent: dict[str, str] = {}

    def root(patient: str) -> str:
        while parent.get(patient, patient) != patient:
            patient = parent[patient]
        return patient

    for group in conflicts:
        roots = sorted({root(pseudonyms[i].patient_id) for i in group})  # pat-NNNNN sorts in listing order
        for other in roots[1:]:
            parent[other] = roots[0]
    return [dataclasses.replace(p, patient_id=root(p.patient_id)) for p in pseudonyms]


def resolve(
    records: list[SourceRecord], pseudonyms: list[Pseudonym], results: dict[str, ImageResult], policy: str
) -> Resolved:
    """Stop on (or merge) patients sharing an image, then quarantine every listing but the first of each image."""
    groups = duplicate_groups(pseudonyms, results)
    conflicts = [group for group in groups if len({pseudonyms[i].patient_id for i in group}) > 1]
    if conflicts and policy != "merge":
        raise PatientConflict(conflict_message(records, pseudonyms, conflicts))
    merged = merge_patients(pseudonyms, conflicts)
    patients_before, patients_after = {p.patient_id for p in pseudonyms}, {p.patient_id for p in merged}
    results = dict(results)
    duplicates = []
    for first, *others in groups:
        kept = pseudonyms[first].image_id
        for position in others:
            image_id = pseudonyms[position].image_id
            reason = f"exact duplicate of {kept} (source row {records[first].row}): identical decoded pixels"
            results[image_id] = dataclasses.replace(results[image_id], reason=reason)
            duplicates.append(image_id)
    return Resolved(merged, results, duplicates, len(patients_before) - len(patients_after))


def remove_outputs(out_root: str | Path, result: ImageResult) -> None:
    """Delete the working image and mask copies an image wrote before it was found to be a duplicate."""
    out_root = Path(out_root)
    (out_root / IMAGES / f"{result.image_id}.png").unlink(missing_ok=True)
    for lesion, _finding, kind, _value in result.localisations:
        if kind == "mask":
            (out_root / SOURCE_MASKS / mask_file_name(result.image_id, lesion)).unlink(missing_ok=True)
