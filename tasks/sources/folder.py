"""A plain folder of DICOM / PNG / JPG files with one CSV describing them.

The CSV (``ingest.path`` itself, or the one CSV at the folder's top level) needs ``path``
(relative to the CSV's folder) and ``patient_id``; it may have ``study_id``, ``view``, ``report``,
``pixel_spacing_mm`` and ``site``; every other column must be a cxrsynth finding name holding
1 / 0 / -1 / blank. A row without a study_id is a study of its own.
"""

from __future__ import annotations

from pathlib import Path

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.sources.base import SourceError, SourceRecord
from cxrsynth.tasks.sources.tables import index_rows, parse_spacing, parse_state, read_table

REQUIRED = ("path", "patient_id")
OPTIONAL = ("study_id", "view", "report", "pixel_spacing_mm", "site")


def index_file(root: Path) -> Path:
    if root.is_file():
        return root
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise SourceError(f"{root}: expected one index CSV at the top level (or ingest.path naming it); found {names}")
    return found[0]


def read_folder(root: str | Path) -> list[SourceRecord]:
    csv_path = index_file(Path(root))
    table = read_table(csv_path, REQUIRED, rows_required=True)
    unknown = [c for c in table.columns if c not in (*REQUIRED, *OPTIONAL, *FINDINGS)]
    if unknown:
        raise SourceError(
            f"{csv_path}: column(s) {', '.join(map(repr, unknown))} are neither {', '.join(REQUIRED + OPTIONAL)} "
            f"nor a finding ({', '.join(FINDINGS)})"
        )
    findings = [c for c in table.columns if c in FINDINGS]
    records = []
    for row in index_rows(table, csv_path):
        relative, patient = row.required(*REQUIRED)
        study = row.text("study_id") or f"row {row.number}"
        records.append(row.record(
            patient, f"{patient}/{study}", csv_path.parent / relative, view=row.text("view"),
            labels={f: parse_state(row.cells[f], f"{row.where}, column {f!r}") for f in findings},
            report=row.text("report") or None,
            pixel_spacing_mm=parse_spacing(row.text("pixel_spacing_mm"), f"{row.where}, column 'pixel_spacing_mm'"),
            site=row.text("site") or None,
        ))
    return records
