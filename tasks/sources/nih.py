"""NIH ChestX-ray14 as distributed: ``Data_Entry_2017*.csv``, ``BBox_List_2017.csv`` and PNGs.

Images are found anywhere under the root (the release spreads them over ``images_001/images``
... ``images_012/images``). Labels are mined from reports and list only what is present, so a
modelled finding not listed is absent. Boxes are ``x, y, w, h`` in the 1024-pixel PNG's
coordinates. Pixel spacing is given for the original scan, whose size the CSV also gives.
"""

from __future__ import annotations

import csv
from pathlib import Path

from cxrsynth.tasks.findings import ABSENT, FINDINGS, PRESENT
from cxrsynth.tasks.sources.base import Localisation, SourceError, SourceRecord
from cxrsynth.tasks.sources.tables import index_rows, parse_spacing, read_table

# Every label name NIH uses (Data_Entry and BBox_List spellings) -> cxrsynth finding, or None
# for the findings cxrsynth does not model. A name outside this table is an error.
NIH_FINDINGS: dict[str, str | None] = {
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Effusion": "pleural_effusion",
    "Nodule": "nodule",
    "Pneumothorax": "pneumothorax",
    "Mass": None,  # > 3 cm; cxrsynth's nodule is the solitary nodule
    "Infiltration": None,
    "Infiltrate": None,  # BBox_List's spelling of Infiltration
    "Pneumonia": None,
    "Edema": None,
    "Emphysema": None,
    "Fibrosis": None,
    "Pleural_Thickening": None,
    "Hernia": None,
    "No Finding": None,
}
ENTRY_PATTERN = "Data_Entry_2017*.csv"
BOXES = "BBox_List_2017.csv"
IMAGE = "Image Index"
ENTRY_COLUMNS = (IMAGE, "Finding Labels", "Follow-up #", "Patient ID", "View Position",
                 "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]")


def nih_finding(name: str, where: str) -> str | None:
    """The cxrsynth finding an NIH label name means (None: known but not modelled)."""
    name = name.strip()
    if name not in NIH_FINDINGS:
        raise SourceError(f"{where}: unknown NIH label {name!r}; known: {', '.join(NIH_FINDINGS)}")
    return NIH_FINDINGS[name]


def nih_labels(finding_labels: str, where: str) -> dict[str, int]:
    """``Finding Labels`` (names joined by ``|``) as a state per finding: listed present, else absent."""
    names = [name.strip() for name in finding_labels.split("|") if name.strip()]
    if not names:
        raise SourceError(f"{where}: empty 'Finding Labels' (NIH writes 'No Finding')")
    present = {nih_finding(name, where) for name in names}
    return {finding: PRESENT if finding in present else ABSENT for finding in FINDINGS}


def _entry_file(root: Path) -> Path:
    """The newest Data_Entry file (``Data_Entry_2017_v2020.csv`` sorts after ``Data_Entry_2017.csv``)."""
    candidates = sorted(root.glob(ENTRY_PATTERN))
    if not candidates:
        raise SourceError(f"{root}: no NIH label file matching {ENTRY_PATTERN}")
    return candidates[-1]


def _image_index(root: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in sorted(root.rglob("*.png")):
        if path.name in index:
            # folders only: NIH file names carry the patient number
            raise SourceError(f"{root}: two images share a file name, in {index[path.name].parent} and {path.parent}")
        index[path.name] = path
    return index


def read_boxes(path: Path) -> dict[str, list[Localisation]]:
    """BBox_List_2017.csv by image name; boxes of unmodelled findings are left out.

    Read positionally: its header spreads ``Bbox [x,y,w,h]`` over four columns and adds empty ones.
    """
    boxes: dict[str, list[Localisation]] = {}
    with path.open(newline="") as handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if not header or [h.strip() for h in header[:2]] != [IMAGE, "Finding Label"]:
            raise SourceError(f"{path}: expected columns 'Image Index', 'Finding Label', 'Bbox [x,y,w,h]'")
        for number, row in enumerate(rows, start=1):
            where = f"{path} row {number}"
            if len(row) < 6:
                raise SourceError(f"{where}: expected an image, a label and 4 box numbers, got {len(row)} fields")
            finding = nih_finding(row[1], where)
            try:
                x, y, w, h = (float(v) for v in row[2:6])
            except ValueError:
                raise SourceError(f"{where}: box values {row[2:6]} are not numbers") from None
            if w <= 0 or h <= 0:
                raise SourceError(f"{where}: box width and height must be > 0")
            if finding is not None:
                boxes.setdefault(row[0].strip(), []).append(Localisation(finding, "box", f"{x:g},{y:g},{w:g},{h:g}"))
    return boxes


def _original_shape(row: dict[str, str]) -> tuple[int, int] | None:
    width, height = row["OriginalImage[Width"].strip(), row["Height]"].strip()
    if not (width.isdigit() and height.isdigit()):
        return None
    return int(height), int(width)


def _spacing(row: dict[str, str], where: str) -> float | None:
    values = [parse_spacing(row[c], where) for c in ("OriginalImagePixelSpacing[x", "y]")]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def read_nih(root: str | Path) -> list[SourceRecord]:
    root = Path(root)
    entry_path = _entry_file(root)
    table = read_table(entry_path, ENTRY_COLUMNS)
    boxes = read_boxes(root / BOXES) if (root / BOXES).is_file() else {}
    images = _image_index(root)
    records = []
    for row in index_rows(table, entry_path):
        name, patient = row.required(IMAGE, "Patient ID")
        records.append(row.record(
            patient, f"{patient}/{row.text('Follow-up #')}",
            images.get(name, root / name),  # a missing image is quarantined by ingest
            view=row.text("View Position"),
            labels=nih_labels(row.cells["Finding Labels"], row.where),
            localisations=list(boxes.get(name, [])),
            pixel_spacing_mm=_spacing(row.cells, row.where),
            pixel_spacing_shape=_original_shape(row.cells),
        ))
    return records
