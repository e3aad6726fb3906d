"""``ingest.source`` name -> the adapter that reads that collection format into SourceRecords."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cxrsynth.tasks.sources.base import SourceError, SourceRecord
from cxrsynth.tasks.sources.chexpert import read_chexpert
from cxrsynth.tasks.sources.folder import read_folder
from cxrsynth.tasks.sources.mimic import read_mimic
from cxrsynth.tasks.sources.nih import read_nih
from cxrsynth.tasks.sources.phantom.collection import read_phantom
from cxrsynth.tasks.sources.siim import read_siim

Reader = Callable[[Path], list[SourceRecord]]

READERS: dict[str, Reader] = {
    "phantom": read_phantom,
    "chexpert": read_chexpert,
    "mimic": read_mimic,
    "nih": read_nih,
    "siim": read_siim,
    "folder": read_folder,
}


def read_source(name: str, path: str | Path) -> list[SourceRecord]:
    """Every image record of the collection at ``path``, in the order its index files list them."""
    if name not in READERS:
        raise SourceError(f"unknown data source {name!r}; expected one of {', '.join(READERS)}")
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: data source folder not found (ingest.path)")
    return READERS[name](path)
