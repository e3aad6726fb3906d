"""The phantom collection's report ground truth as a parser benchmark.

``data/phantom/truth.csv`` (``Path,finding,state,laterality,location,severity,in_labels,in_report``)
says, per image and finding, what the generator put in the image and in the report. A finding is
a "present" reference when its state is 1 and the report names it (``in_report``). The reports
are ``reports/patientNNNNN/studyM.txt`` beside it, one per image ``files/patientNNNNN/studyM/...``;
the images read are those of ``labels.csv`` when it is there (so normal studies count too),
else those of truth.csv.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from tasks.findings import FINDINGS, PRESENT

TRUTH_COLUMNS = ("Path", "finding", "state", "laterality", "location", "severity", "in_labels", "in_report")
ATTRIBUTES = ("laterality", "location", "severity")


def report_path(root: Path, image_path: str) -> Path:
    """``files/patientN/studyM/view1_frontal.dcm`` -> ``<root>/reports/patientN/studyM.txt``."""
    parts = PurePosixPath(image_path).parts
    if len(parts) < 4 or parts[0] != "files":
        raise ValueError(f"{image_path!r}: not a phantom image path (files/patientNNNNN/studyM/<view>.dcm)")
    return root / "reports" / parts[1] / f"{parts[2]}.txt"


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "1.0", "true", "yes")


def load_phantom_truth(truth_csv: str | Path) -> pd.DataFrame:
    """One row per image: ``report_id`` (its Path), ``text``, per finding a bool (stated present) and attributes."""
    truth_csv = Path(truth_csv)
    if not truth_csv.exists():
        raise ValueError(f"{truth_csv}: phantom truth file not found (run the phantom stage first)")
    truth = pd.read_csv(truth_csv, dtype=str, keep_default_na=False)
    missing = [c for c in TRUTH_COLUMNS if c not in truth.columns]
    if missing:
        raise ValueError(f"{truth_csv}: missing columns {', '.join(missing)}")
    root = truth_csv.parent
    labels = root / "labels.csv"
    paths = pd.read_csv(labels, usecols=["Path"], dtype=str)["Path"] if labels.exists() else truth["Path"]
    rows = {path: {"report_id": path, **{f: False for f in FINDINGS}} for path in dict.fromkeys(paths)}
    for record in truth.itertuples(index=False):
        if record.Path not in rows or record.finding not in FINDINGS:
            continue
        stated = record.state.strip() and float(record.state) == PRESENT and _truthy(record.in_report)
        if stated:
            row = rows[record.Path]
            row[record.finding] = True
            for attribute in ATTRIBUTES:
                row[f"{record.finding}_{attribute}"] = getattr(record, attribute) or None
    for path, row in rows.items():
        file = report_path(root, path)
        if not file.exists():
            raise ValueError(f"{file}: report of {path} not found")
        row["text"] = file.read_text()
    return pd.DataFrame(list(rows.values()))
