"""Reading the index files of a collection: CSV tables with required columns, and label states."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cxrsynth.tasks.findings import ABSENT, PRESENT, UNCERTAIN
from cxrsynth.tasks.sources.base import SourceError

STATES = {PRESENT, ABSENT, UNCERTAIN}


def read_table(path: str | Path, required: Iterable[str] = (), rows_required: bool = False) -> pd.DataFrame:
    """A CSV (optionally gzipped) as strings, blanks kept as ''; SourceError naming missing columns.

    ``rows_required``: an index file, for which a header with no rows is an error, not an empty collection.

    Column names are stripped of surrounding spaces (SIIM-ACR writes ``ImageId, EncodedPixels``).
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: index file not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: not a readable CSV ({exc})") from None
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise SourceError(f"{path}: missing column(s) {', '.join(map(repr, missing))}; has {', '.join(table.columns)}")
    if rows_required and table.empty:
        raise SourceError(f"{path}: the CSV has a header but no rows")
    return table


def row_number(index: int) -> int:
    """Position of a table row as people count it: 1-based, header excluded."""
    return int(index) + 1


def parse_state(value: str, where: str) -> int | None:
    """A label cell (CheXpert convention: 1.0 / 0.0 / -1.0 / blank) as 1 / 0 / -1 / None."""
    text = str(value).strip()
    if text == "" or text.lower() == "nan":
        return None
    try:
        number = float(text)
    except ValueError:
        raise SourceError(f"{where}: label value {text!r} is not one of 1, 0, -1 or blank") from None
    if number not in STATES:
        raise SourceError(f"{where}: label value {text!r} is not one of 1, 0, -1 or blank")
    return int(number)


def parse_spacing(value: str, where: str) -> float | None:
    text = str(value).strip()
    if text == "":
        return None
    try:
        spacing = float(text)
    except ValueError:
        raise SourceError(f"{where}: pixel spacing {text!r} is not a number") from None
    if not spacing > 0:
        raise SourceError(f"{where}: pixel spacing must be > 0, got {text!r}")
    return spacing
