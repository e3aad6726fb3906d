"""Accuracy of a report parser: per-finding precision and recall of "present", and agreement.

``presence_scores`` compares parsed states with a reference that says which findings each report
states present (MeSH majors, the phantom generator's truth); ``state_accuracy`` compares all four
states where the reference has them (phantom); ``attribute_accuracy`` side, zone and size on true
positives; ``disagreements`` lists every report and finding where the parser and the reference differ, with the
sentence that decided the parsed state, and ``write_disagreements`` saves them as CSV or markdown;
``load_labelled_reports`` reads a user's own labelled reports as a reference. ``agreement`` compares two label
sources on the rows where both give a state (parsed report vs structured label file); ``stage_metrics`` is what
the parse_reports stage records.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score, precision_score, recall_score

from cxrsynth.tasks.findings import FINDINGS, PRESENT, STATE_NAMES, UNCERTAIN
from cxrsynth.tasks.io import atomic_path
from cxrsynth.tasks.reports.records import FindingState

DISAGREEMENT_COLUMNS = ("report_id", "finding", "error", "parsed", "sentence", "report")


def predicted_presence(parsed: list[dict[str, FindingState]], count_uncertain: bool = False) -> pd.DataFrame:
    """Bool frame (reports x FINDINGS): parsed state is present (or uncertain, if counted)."""
    positive = {PRESENT, UNCERTAIN} if count_uncertain else {PRESENT}
    return pd.DataFrame(
        [{finding: found.get(finding, FindingState()).state in positive for finding in FINDINGS} for found in parsed]
    )


def presence_scores(predicted: pd.DataFrame, reference: pd.DataFrame) -> dict[str, dict[str, float | int]]:
    """Per finding: precision, recall, true/false positives and negatives of "present"."""
    scores = {}
    for finding in FINDINGS:
        truth = reference[finding].to_numpy(dtype=bool)
        guess = predicted[finding].to_numpy(dtype=bool)
        tp, fp, fn = int((truth & guess).sum()), int((~truth & guess).sum()), int((truth & ~guess).sum())
        scores[finding] = {
            "precision": float(precision_score(truth, guess, zero_division=np.nan)),
            "recall": float(recall_score(truth, guess, zero_division=np.nan)),
            "tp": tp, "fp": fp, "fn": fn, "n_reference": int(truth.sum()),
        }
    return scores


def agreement(first: pd.Series, second: pd.Series) -> dict[str, float | int | None]:
    """Cohen's kappa and agreement rate of two nullable state columns, on rows where both give a state."""
    both = first.notna() & second.notna()
    a = first[both].astype(int).to_numpy()
    b = second[both].astype(int).to_numpy()
    if len(a) == 0:
        return {"n": 0, "rate": None, "kappa": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # one shared class only: kappa is undefined, None
        kappa = float(cohen_kappa_score(a, b, labels=[-1, 0, 1], replace_undefined_by=np.nan))
    return {"n": int(len(a)), "rate": float((a == b).mean()), "kappa": None if np.isnan(kappa) else kappa}


def state_counts(states: pd.Series) -> dict[str, int]:
    """How many rows hold each state of a nullable finding column, by state name."""
    return {name: int(states.isna().sum()) if code is None else int(states.eq(code).fillna(False).sum())
            for code, name in STATE_NAMES.items()}


def stage_metrics(frame: pd.DataFrame, additions: pd.DataFrame) -> dict:
    """parse_reports metrics: state counts per finding (report and final) and report/structured agreement."""
    if additions["image_id"].tolist() != frame["image_id"].tolist():
        raise ValueError("parse_reports additions are not in the manifest's row order")
    metrics: dict = {
        "n_images": int(len(frame)),
        "n_reports": int(frame["report"].fillna("").str.strip().ne("").sum()),
        "n_without_prompt": int(additions["prompt"].isna().sum()),
    }
    for finding in FINDINGS:
        metrics[finding] = {
            "report": state_counts(additions[f"report_{finding}"]),
            "final": state_counts(additions[finding]),
            "agreement": agreement(
                additions[f"report_{finding}"], frame[f"structured_{finding}"].reset_index(drop=True)
            ),
        }
    return metrics


def attribute_accuracy(
    parsed: list[dict[str, FindingState]], reference: pd.DataFrame, attribute: str
) -> dict[str, dict]:
    """Per finding: how often the parsed attribute equals the reference's, on true positives the reference describes."""
    result = {}
    column_of = {finding: f"{finding}_{attribute}" for finding in FINDINGS}
    for finding, column in column_of.items():
        if column not in reference:
            continue
        rows = zip(parsed, reference[finding], reference[column], strict=True)
        described = [(found, expected) for found, present, expected in rows if present and isinstance(expected, str)]
        pairs = [(getattr(found[finding], attribute), expected) for found, expected in described
                 if found.get(finding, FindingState()).state == PRESENT]
        if pairs:
            result[finding] = {"n": len(pairs), "accuracy": sum(a == b for a, b in pairs) / len(pairs)}
    return result


def state_accuracy(parsed: list[dict[str, FindingState]], reference: pd.DataFrame) -> dict[str, dict]:
    """Per finding: how often the parsed state (1 / 0 / -1 / not mentioned) is the reference's ``<finding>_state``."""
    result = {}
    for finding in FINDINGS:
        column = f"{finding}_state"
        if column not in reference:
            continue
        expected = [None if pd.isna(value) else int(value) for value in reference[column]]
        got = [found.get(finding, FindingState()).state for found in parsed]
        matches = sum(a == b for a, b in zip(got, expected, strict=True))
        result[finding] = {"n": len(got), "accuracy": matches / len(got) if got else None}
    return result


def load_labelled_reports(path: str | Path) -> pd.DataFrame:
    """A user's own labelled reports as a reference frame: a CSV with ``report_id``, ``text`` and a column per
    finding that the user labelled (1 present; 0, -1 or blank not present). Unlabelled findings count as absent."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the labelled reports CSV: {exc}") from None
    missing = [column for column in ("report_id", "text") if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    labelled = [column for column in table.columns if column in FINDINGS]
    if not labelled:
        raise ValueError(f"{path}: no finding column; expected one or more of {', '.join(FINDINGS)}")
    frame = table[["report_id", "text"]].copy()
    for finding in FINDINGS:
        values = table[finding].str.strip() if finding in labelled else pd.Series("", index=table.index)
        bad = values[~values.isin(["1", "1.0", "0", "0.0", "-1", "-1.0", ""])]
        if len(bad):
            row = int(bad.index[0]) + 2  # the header is line 1
            raise ValueError(f"{path}, line {row}, column {finding}: expected 1, 0, -1 or blank, got {bad.iloc[0]!r}")
        frame[finding] = values.isin(["1", "1.0"])
    return frame


def disagreements(
    parsed: list[dict[str, FindingState]], reference: pd.DataFrame, count_uncertain: bool = False
) -> pd.DataFrame:
    """One row per report and finding where parsed "present" and the reference differ (DISAGREEMENT_COLUMNS).

    ``error`` is "false positive" or "false negative", ``parsed`` the parsed state's name, ``sentence`` the
    sentence that decided it (empty when the report does not mention the finding), ``report`` the whole text."""
    positive = {PRESENT, UNCERTAIN} if count_uncertain else {PRESENT}
    rows = []
    for found, (_, row) in zip(parsed, reference.iterrows(), strict=True):
        for finding in FINDINGS:
            state = found.get(finding, FindingState())
            said, truth = state.state in positive, bool(row[finding])
            if said != truth:
                rows.append((row["report_id"], finding, "false positive" if said else "false negative",
                             STATE_NAMES[state.state], state.sentence or "", row["text"]))
    return pd.DataFrame(rows, columns=list(DISAGREEMENT_COLUMNS))


def write_disagreements(table: pd.DataFrame, path: str | Path) -> None:
    """Atomically write a disagreements table: CSV for ``.csv``, a markdown table for ``.md``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".md"):
        raise ValueError(f"{path}: the disagreement report must end in .csv or .md, not {path.suffix or 'nothing'!r}")
    with atomic_path(path) as temp:
        if suffix == ".csv":
            table.to_csv(temp, index=False)
        else:
            # one table row per disagreement: line breaks and pipes inside a cell would break the table
            cells = table.astype(str).apply(lambda column: column.str.replace(r"\s+", " ", regex=True)
                                            .str.replace("|", "\\|", regex=False))
            temp.write_text(cells.to_markdown(index=False) + "\n")
