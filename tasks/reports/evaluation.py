"""Accuracy of a report parser: per-finding precision and recall of "present", and agreement.

``presence_scores`` compares parsed states with a reference that says which findings each report
states present (MeSH majors, the phantom generator's truth); ``state_accuracy`` compares all four
states where the reference has them (phantom); ``attribute_accuracy`` side, zone and size on true
positives. ``agreement`` compares two label sources on the rows where both give a state (parsed
report vs structured label file); ``stage_metrics`` is what the parse_reports stage records.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score, precision_score, recall_score

from cxrsynth.tasks.findings import FINDINGS, PRESENT, STATE_NAMES, UNCERTAIN
from cxrsynth.tasks.reports.records import FindingState


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
