"""What every data source adapter returns: one SourceRecord per image, before decoding.

Adapters read a collection in its public format and never decode pixels; ingest decodes,
pseudonymises and writes. Identifiers in a record (patient_key, study_key, image_path) are the
source's own and must never be written anywhere: ingest replaces them with pseudonyms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

LocalisationKind = Literal["box", "rle", "polygon", "mask"]


class SourceError(ValueError):
    """A source collection that cannot be read: the message names the file, row or column."""


@dataclass(frozen=True)
class Localisation:
    """Where one lesion is, in the source image's own pixel coordinates.

    value by kind: box "x,y,width,height"; rle the run-length string as the source gives it
    (column-major, SIIM-ACR convention); polygon "x1,y1;x2,y2;..."; mask the path of a mask
    image file (non-zero = lesion) at the source image's size.
    """

    finding: str
    kind: LocalisationKind
    value: str


@dataclass
class SourceRecord:
    row: int  # row of the source's index file (1-based, header excluded): how errors point at it
    patient_key: str
    study_key: str
    image_path: Path
    view: str | None = None
    labels: dict[str, int | None] = field(default_factory=dict)  # per finding: 1 / 0 / -1 / None
    report: str | None = None
    localisations: list[Localisation] = field(default_factory=list)
    pixel_spacing_mm: float | None = None  # at the source image's resolution (or at pixel_spacing_shape)
    # (rows, columns) the spacing was measured at when that is not the file's own size, as NIH
    # gives it for the original scan before its PNGs were resized to 1024 x 1024
    pixel_spacing_shape: tuple[int, int] | None = None
    site: str | None = None
    # A collection the source holds apart from its main one, whose name ingest makes the image's split
    # ("test", or the phantom's "reserve"); None: ingest's patient-level split decides
    collection: str | None = None
