"""From parsed reports and a source's structured labels to the parse_reports manifest columns.

Per finding, the final state takes the preferred source where it gives a state and the other
source where it does not (``parse_reports.prefer``); then ``parse_reports.uncertain_policy`` maps
uncertain to present, absent or null, so the final column holds 1 / 0 / null only. Attributes
(side, zone, size) come from the report and are kept only where the final state is present.
The prompt is canonical_prompt over the final findings; a row with neither a report nor any
structured label gets none (nothing is known of it, which is not the same as normal).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from cxrsynth.tasks.findings import FINDINGS, PRESENT, UNCERTAIN
from cxrsynth.tasks.manifest import KEY
from cxrsynth.tasks.reports.prompts import canonical_prompt
from cxrsynth.tasks.reports.records import FindingState, findings_table, states_from_row

POLICY_VALUES = {"positive": 1, "negative": 0, "ignore": pd.NA}
ATTRIBUTES = ("laterality", "location", "severity")


def prefer_source(structured: pd.Series, reported: pd.Series, prefer: str) -> pd.Series:
    """The preferred source's state where it has one, the other's elsewhere."""
    if prefer not in ("structured", "report"):
        raise ValueError(f"parse_reports.prefer must be 'structured' or 'report', got {prefer!r}")
    first, second = (structured, reported) if prefer == "structured" else (reported, structured)
    first, second = first.astype("Int8"), second.astype("Int8")
    return first.where(first.notna(), second)


def apply_uncertain_policy(states: pd.Series, policy: str) -> pd.Series:
    """Uncertain (-1) becomes 1, 0 or null as ``parse_reports.uncertain_policy`` says."""
    if policy not in POLICY_VALUES:
        raise ValueError(f"parse_reports.uncertain_policy must be one of {', '.join(POLICY_VALUES)}, got {policy!r}")
    states = states.astype("Int8").copy()
    states[states.eq(UNCERTAIN).fillna(False)] = POLICY_VALUES[policy]
    return states


def report_columns(image_ids: Sequence[str], parsed: Sequence[dict[str, FindingState]]) -> pd.DataFrame:
    """Wide per-image columns of the parsed reports: ``report_<finding>`` and the attribute columns."""
    table = findings_table(image_ids, parsed)
    wide = pd.DataFrame({KEY: pd.array(list(image_ids), dtype="string")})
    for finding in FINDINGS:
        rows = table[table["finding"] == finding].set_index("image_id")
        wide[f"report_{finding}"] = wide[KEY].map(rows["state"]).astype("Int8")
        for attribute in ATTRIBUTES:
            wide[f"{finding}_{attribute}"] = wide[KEY].map(rows[attribute]).astype("string")
    return wide


def manifest_additions(
    frame: pd.DataFrame, parsed: Sequence[dict[str, FindingState]], prefer: str, policy: str
) -> pd.DataFrame:
    """The parse_reports columns for every row of ``frame`` (an ingest manifest), keyed by image_id."""
    if len(parsed) != len(frame):
        raise ValueError(f"{len(parsed)} parsed reports for {len(frame)} manifest rows")
    additions = report_columns(frame[KEY].tolist(), parsed)
    for finding in FINDINGS:
        structured = frame[f"structured_{finding}"].reset_index(drop=True)
        merged = prefer_source(structured, additions[f"report_{finding}"], prefer)
        final = apply_uncertain_policy(merged, policy)
        additions[finding] = final
        not_present = ~final.eq(PRESENT).fillna(False)
        for attribute in ATTRIBUTES:
            additions.loc[not_present, f"{finding}_{attribute}"] = pd.NA
    additions["prompt"] = pd.array(
        [canonical_prompt(states_from_row(row)) for row in additions.to_dict("records")], dtype="string"
    )
    additions.loc[~described(frame).to_numpy(), "prompt"] = pd.NA
    return additions


def described(frame: pd.DataFrame) -> pd.Series:
    """Rows with a report or any structured label: the others say nothing, so they get no prompt."""
    has_report = frame["report"].fillna("").str.strip().ne("")
    has_labels = frame[[f"structured_{finding}" for finding in FINDINGS]].notna().any(axis=1)
    return (has_report | has_labels).reset_index(drop=True)
