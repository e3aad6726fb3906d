"""Which source records ingest takes, and the pseudonyms that replace every source identifier.

Order of work: select (views, cap) -> pseudonymise (sequential ids in listing order, so nothing
derived from a source identifier survives).
"""

from __future__ import annotations

from dataclasses import dataclass

from cxrsynth.tasks.sources.base import SourceRecord


@dataclass(frozen=True)
class Selection:
    records: list[SourceRecord]
    listed: int  # records the source lists
    other_view: int  # dropped: a view not in ingest.views
    unknown_view: int  # kept: the source does not say the view
    capped: int  # dropped by ingest.max_images


def select_records(records: list[SourceRecord], views: list[str], max_images: int | None) -> Selection:
    """Keep the wanted views (and records whose view is unknown), then the first ``max_images``."""
    wanted = {view.upper() for view in views}
    kept = [r for r in records if r.view is None or r.view.upper() in wanted]
    capped = kept[:max_images] if max_images is not None else kept
    return Selection(
        records=capped,
        listed=len(records),
        other_view=len(records) - len(kept),
        unknown_view=sum(r.view is None for r in capped),
        capped=len(kept) - len(capped),
    )


@dataclass(frozen=True)
class Pseudonym:
    image_id: str
    patient_id: str
    study_id: str


def pseudonymise(records: list[SourceRecord]) -> list[Pseudonym]:
    """Sequential ids in listing order: img-000001, pat-00001, std-000001 (never a hash of a source id)."""
    patients: dict[str, str] = {}
    studies: dict[tuple[str, str], str] = {}
    pseudonyms = []
    for number, record in enumerate(records, start=1):
        patient = patients.setdefault(record.patient_key, f"pat-{len(patients) + 1:05d}")
        study = studies.setdefault((record.patient_key, record.study_key), f"std-{len(studies) + 1:06d}")
        pseudonyms.append(Pseudonym(f"img-{number:06d}", patient, study))
    return pseudonyms
