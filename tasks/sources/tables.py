"""Reading the index files of a collection: CSV tables with required columns, their rows as the
adapters walk them (number, where for errors, one SourceRecord each), and label states."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cxrsynth.tasks.findings import ABSENT, PRESENT, UNCERTAIN
from cxrsynth.tasks.sources.base import SourceError, SourceRecord

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


@dataclass(frozen=True)
class IndexRow:
    """One row of an index file: its cells as read, its number as people count rows, and where it is."""

    cells: dict[str, str]
    number: int
    where: str  # "<file> row <number>", the start of every error about this row

    def text(self, column: str) -> str:
        """The cell without surrounding spaces; '' where the file has no such column."""
        return self.cells.get(column, "").strip()

    def required(self, *columns: str, hint: str = "") -> tuple[str, ...]:
        """The cells of ``columns`` (stripped); a SourceError naming the row and columns if one is blank."""
        values = tuple(self.text(column) for column in columns)
        if not all(values):
            names = ", ".join(columns[:-1]) + f" and {columns[-1]}" if len(columns) > 1 else columns[0]
            raise SourceError(f"{self.where}: {names} must be set{hint}")
        return values

    def record(self, patient_key: str, study_key: str, image_path: Path, view: str | None = None, **fields: Any) -> SourceRecord:
        """This row's SourceRecord; the view in capitals, None when blank."""
        view = (view or "").strip().upper() or None
        return SourceRecord(row=self.number, patient_key=patient_key, study_key=study_key, image_path=image_path, view=view, **fields)


def index_rows(table: pd.DataFrame, path: str | Path) -> Iterator[IndexRow]:
    """The rows of ``table`` (read from ``path`` by read_table), numbered and placed for errors."""
    for index, cells in enumerate(table.to_dict("records")):
        yield IndexRow(cells, row_number(index), f"{path} row {row_number(index)}")


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
