"""The phantom collection's report ground truth as a parser benchmark.

``data/phantom/truth.csv`` (``Path,finding,state,laterality,location,severity,in_labels,in_report``)
has one row per image and finding: ``state`` and the attributes say what the image shows,
``in_report`` what its report says (1 present, -1 uncertain, 0 absent, blank not mentioned). The
report's statement is the parser's reference: a finding is "present" where ``in_report`` is 1, and
its attributes are the lesion's, which the report's words describe. The reports are
``reports/patientNNNNN/studyM.txt`` beside truth.csv, one per image ``files/patientNNNNN/studyM/...``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from cxrsynth.tasks.findings import FINDINGS, PRESENT

TRUTH_COLUMNS = ("Path", "finding", "state", "laterality", "location", "severity", "in_labels", "in_report")
ATTRIBUTES = ("laterality", "location", "severity")


def report_path(root: Path, image_path: str) -> Path:
    """``files/patientN/studyM/view1_frontal.dcm`` -> ``<root>/reports/patientN/studyM.txt``."""
    parts = PurePosixPath(image_path).parts
    if len(parts) < 4 or parts[0] != "files":
        raise ValueError(f"{image_path!r}: not a phantom image path (files/patientNNNNN/studyM/<view>.dcm)")
    return root / "reports" / parts[1] / f"{parts[2]}.txt"


def _state(value: str) -> int | None:
    value = value.strip()
    return int(float(value)) if value else None


def load_phantom_truth(truth_csv: str | Path) -> pd.DataFrame:
    """One row per image: ``report_id`` (its Path), ``text``; per finding a bool (the report states it present),
    ``<finding>_state`` (what the report says, nullable) and the lesion's attributes."""
    truth_csv = Path(truth_csv)
    if not truth_csv.exists():
        raise ValueError(f"{truth_csv}: phantom truth file not found (run the phantom stage first)")
    truth = pd.read_csv(truth_csv, dtype=str, keep_default_na=False)
    missing = [c for c in TRUTH_COLUMNS if c not in truth.columns]
    if missing:
        raise ValueError(f"{truth_csv}: missing columns {', '.join(missing)}")
    rows: dict[str, dict] = {}
    for number, record in enumerate(truth.itertuples(index=False), start=2):
        if record.finding not in FINDINGS:
            raise ValueError(f"{truth_csv}, line {number}: unknown finding {record.finding!r}")
        row = rows.setdefault(record.Path, {"report_id": record.Path, **{f: False for f in FINDINGS}})
        said = _state(record.in_report)
        row[f"{record.finding}_state"] = said
        row[record.finding] = said == PRESENT
        for attribute in ATTRIBUTES:
            row[f"{record.finding}_{attribute}"] = getattr(record, attribute) or None
    root = truth_csv.parent
    for path, row in rows.items():
        file = report_path(root, path)
        if not file.exists():
            raise ValueError(f"{file}: report of {path} not found")
        row["text"] = file.read_text()
    frame = pd.DataFrame(list(rows.values()))
    for finding in FINDINGS:
        column = f"{finding}_state"
        frame[column] = frame[column].astype("Int8") if column in frame else pd.array([pd.NA] * len(frame), "Int8")
    return frame
