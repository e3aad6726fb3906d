"""One finding's state and attributes, how mentions combine into it, and the findings table.

A report mentions a finding zero or more times; each mention is a FindingState. The report's
state of a finding is the CheXpert-style combination: present if any mention is present, else
uncertain if any is uncertain, else absent. Attributes come from the mentions that carry the
winning state (laterality merged: left + right = bilateral; the most severe severity; the first
location and evidence sentence in reading order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from cxrsynth.tasks.findings import ABSENT, FINDINGS, LATERALITIES, LOCATIONS, PRESENT, SEVERITIES, UNCERTAIN, check_finding
from cxrsynth.tasks.io import write_parquet

FINDINGS_TABLE_SCHEMA = pa.schema([
    ("image_id", pa.string()), ("finding", pa.string()), ("state", pa.int8()), ("laterality", pa.string()),
    ("location", pa.string()), ("severity", pa.string()), ("sentence", pa.string()),
])
FINDINGS_TABLE_COLUMNS = tuple(FINDINGS_TABLE_SCHEMA.names)
_STATE_RANK = {PRESENT: 3, UNCERTAIN: 2, ABSENT: 1}


@dataclass(frozen=True)
class FindingState:
    """A finding's state (1 present, 0 absent, -1 uncertain, None not mentioned) and attributes."""

    state: int | None = None
    laterality: str | None = None
    location: str | None = None
    severity: str | None = None
    sentence: str | None = None

    def __post_init__(self) -> None:
        if self.state not in (PRESENT, ABSENT, UNCERTAIN, None):
            raise ValueError(f"finding state must be 1, 0, -1 or None, got {self.state!r}")
        for value, allowed, name in (
            (self.laterality, LATERALITIES, "laterality"),
            (self.location, LOCATIONS, "location"),
            (self.severity, SEVERITIES, "severity"),
        ):
            if value is not None and value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)} or None, got {value!r}")


def merge_lateralities(values: Iterable[str | None]) -> str | None:
    sides = {value for value in values if value}
    if not sides:
        return None
    if "bilateral" in sides or {"left", "right"} <= sides:
        return "bilateral"
    return sides.pop()


def most_severe(values: Iterable[str | None]) -> str | None:
    present = [value for value in values if value]
    return max(present, key=SEVERITIES.index) if present else None


def combine(mentions: Iterable[tuple[str, FindingState]]) -> dict[str, FindingState]:
    """Combine (finding, mention) pairs, in reading order, into one FindingState per mentioned finding."""
    by_finding: dict[str, list[FindingState]] = {}
    for finding, mention in mentions:
        if mention.state is not None:
            by_finding.setdefault(check_finding(finding), []).append(mention)
    combined = {}
    for finding, states in by_finding.items():
        best = max(_STATE_RANK[m.state] for m in states)
        winners = [m for m in states if _STATE_RANK[m.state] == best]
        combined[finding] = FindingState(
            state=winners[0].state,
            laterality=merge_lateralities(m.laterality for m in winners),
            location=next((m.location for m in winners if m.location), None),
            severity=most_severe(m.severity for m in winners),
            sentence=winners[0].sentence,
        )
    return combined


def findings_table(image_ids: Iterable[str], parsed: Iterable[Mapping[str, FindingState]]) -> pd.DataFrame:
    """Long table, one row per image and mentioned finding, in FINDINGS order."""
    rows = [
        (image_id, finding, found[finding].state, found[finding].laterality, found[finding].location,
         found[finding].severity, found[finding].sentence)
        for image_id, found in zip(image_ids, parsed, strict=True)
        for finding in FINDINGS
        if finding in found
    ]
    table = pd.DataFrame(rows, columns=list(FINDINGS_TABLE_COLUMNS))
    table["state"] = table["state"].astype("Int8")
    for column in ("image_id", "finding", "laterality", "location", "severity", "sentence"):
        table[column] = table[column].astype("string")
    return table


def write_findings(table: pd.DataFrame, path) -> None:
    """Atomically write a findings table as Parquet with its fixed schema."""
    write_parquet(path, table[list(FINDINGS_TABLE_COLUMNS)], FINDINGS_TABLE_SCHEMA)


def states_from_row(row: Mapping[str, object], prefix: str = "") -> dict[str, FindingState]:
    """FindingStates of one manifest row (``{prefix}{finding}`` plus the attribute columns)."""
    found = {}
    for finding in FINDINGS:
        state = row.get(f"{prefix}{finding}")
        if state is None or pd.isna(state):
            continue
        found[finding] = FindingState(
            state=int(state),
            laterality=_text_or_none(row.get(f"{finding}_laterality")),
            location=_text_or_none(row.get(f"{finding}_location")),
            severity=_text_or_none(row.get(f"{finding}_severity")),
        )
    return found


def _text_or_none(value: object) -> str | None:
    return None if value is None or pd.isna(value) else str(value)
