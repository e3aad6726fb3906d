"""Scoring a reader study: the visual Turing test and the Likert ratings, per reader and pooled,
per finding and per condition type, with agreement between readers.

- Turing test: the share of correct real/synthetic calls with an exact (Clopper-Pearson) 95%
  binomial interval and a two-sided exact binomial test against chance (0.5); readers who cannot
  beat chance cannot tell the synthetic images apart. Sensitivity is the share of synthetic images
  called synthetic, specificity the share of real images called real. Pooled figures treat every
  call as independent, which overstates their precision when readers share images; the per-reader
  figures do not.
- Likert: the 1-5 acceptability ratings of real and of synthetic images (counts, mean, median) and a
  two-sided Mann-Whitney U test between them.
- Agreement: Fleiss' kappa (statsmodels) over the images every reader answered, for the calls and
  for the ratings (as categories).

A condition type's group holds every real image and the synthetic images of that type, so its
accuracy asks whether readers tell that kind of synthetic image from real ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest, mannwhitneyu
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from cxrsynth.tasks.reader_study.page import LIKERT, SOURCES

CONFIDENCE = 0.95
COLUMNS = ["reader", "item", "truth", "finding", "condition_type", "call", "likert"]


def _checked(value, allowed: Sequence, what: str, where: str):
    if value is None or (value in allowed and not isinstance(value, bool)):  # JSON true would pass as 1
        return value
    raise ValueError(f"{where}: {what} is {value!r}, expected one of {list(allowed)}")


def answer_table(answer_sets: Sequence[tuple[str, dict]], key: dict) -> pd.DataFrame:
    """One row per reader and answered item; ``answer_sets`` are (label, exported answers) pairs,
    the label (a file name) naming the set in errors. A reader is named by the answers' ``reader``
    field, or by the label when that is empty."""
    rows, readers = [], set()
    for label, answers in answer_sets:
        if answers.get("study") != key["study"]:
            raise ValueError(f"{label}: answers are for study {answers.get('study')!r}, the key is for {key['study']!r}")
        reader = str(answers.get("reader") or "").strip() or label
        if reader in readers:
            raise ValueError(f"{label}: reader {reader!r} answers twice")
        readers.add(reader)
        given = answers.get("answers", {})
        if not isinstance(given, dict) or not all(isinstance(answer, dict) for answer in given.values()):
            raise ValueError(f"{label}: 'answers' must map each item to an object "
                             '(such as {"source": "real", "likert": 4})')
        for item, answer in given.items():
            if item not in key["items"]:
                raise ValueError(f"{label}: answers name {item!r}, which is not in study {key['study']}")
            truth, where = key["items"][item], f"{label}, {item}"
            rows.append({"reader": reader, "item": item, "truth": truth["truth"], "finding": truth["finding"],
                         "condition_type": truth.get("condition_type"),
                         "call": _checked(answer.get("source"), SOURCES, "source", where),
                         "likert": _checked(answer.get("likert"), LIKERT, "likert", where)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _proportion(successes: int, n: int) -> dict:
    if not n:
        return {"n": 0, "value": None, "ci_low": None, "ci_high": None}
    interval = binomtest(successes, n).proportion_ci(confidence_level=CONFIDENCE, method="exact")
    return {"n": n, "value": successes / n, "ci_low": float(interval.low), "ci_high": float(interval.high)}


def turing_test(rows: pd.DataFrame) -> dict:
    """Accuracy of the real/synthetic calls against chance, and sensitivity / specificity."""
    called = rows[rows["call"].notna()]
    correct = called["call"] == called["truth"]
    synthetic, real = called["truth"] == "synthetic", called["truth"] == "real"
    n, n_correct = len(called), int(correct.sum())
    return {
        "n_calls": n, "n_correct": n_correct,
        "accuracy": _proportion(n_correct, n),
        "p_value_vs_chance": float(binomtest(n_correct, n, 0.5).pvalue) if n else None,
        "sensitivity": _proportion(int(correct[synthetic].sum()), int(synthetic.sum())),
        "specificity": _proportion(int(correct[real].sum()), int(real.sum())),
    }


def _distribution(values: pd.Series) -> dict:
    counts = {str(v): int((values == v).sum()) for v in LIKERT}
    if values.empty:
        return {"n": 0, "mean": None, "median": None, "counts": counts}
    return {"n": len(values), "mean": float(values.mean()), "median": float(values.median()), "counts": counts}


def likert_test(rows: pd.DataFrame) -> dict:
    """Likert ratings of real and synthetic images and a two-sided Mann-Whitney U test between them."""
    rated = rows[rows["likert"].notna()]
    by_source = {source: rated.loc[rated["truth"] == source, "likert"].astype(float) for source in SOURCES}
    result = {source: _distribution(values) for source, values in by_source.items()}
    real, synthetic = by_source["real"], by_source["synthetic"]
    if len(real) and len(synthetic) and len(set(real) | set(synthetic)) > 1:
        test = mannwhitneyu(real, synthetic, alternative="two-sided")
        result["mann_whitney"] = {"u": float(test.statistic), "p_value": float(test.pvalue)}
    else:  # no test without both sources, or when every rating is the same
        result["mann_whitney"] = {"u": None, "p_value": None}
    return result


def _kappa(rows: pd.DataFrame, column: str) -> dict:
    answered = rows[rows[column].notna()].pivot_table(index="item", columns="reader", values=column, aggfunc="first")
    complete = answered.dropna()
    n_readers = answered.shape[1]
    if n_readers < 2 or complete.empty:
        return {"n_items": len(complete), "kappa": None}
    counts, _ = aggregate_raters(complete.astype(str).to_numpy())
    with np.errstate(divide="ignore", invalid="ignore"):  # every answer alike: kappa is undefined
        kappa = float(fleiss_kappa(counts, method="fleiss"))
    return {"n_items": len(complete), "kappa": kappa if np.isfinite(kappa) else None}


def agreement(rows: pd.DataFrame) -> dict:
    """Fleiss' kappa between readers over the images all of them answered, for calls and ratings."""
    return {"n_readers": int(rows["reader"].nunique()), "call": _kappa(rows, "call"), "likert": _kappa(rows, "likert")}


def group_statistics(rows: pd.DataFrame) -> dict:
    return {"n_items": int(rows["item"].nunique()), "turing": turing_test(rows), "likert": likert_test(rows),
            "agreement": agreement(rows)}


def score_table(table: pd.DataFrame, key: dict) -> dict:
    """Every statistic of the study, pooled and per reader, finding and condition type."""
    synthetic = table["truth"] == "synthetic"
    conditions = sorted(table.loc[synthetic, "condition_type"].fillna("unknown").unique())
    return {
        "study": key["study"],
        "n_items": len(key["items"]),
        "readers": sorted(table["reader"].unique()),
        "pooled": group_statistics(table),
        "per_reader": {reader: group_statistics(rows) for reader, rows in table.groupby("reader")},
        "per_finding": {finding: group_statistics(rows) for finding, rows in table.groupby("finding")},
        "per_condition_type": {
            condition: group_statistics(table[~synthetic | (table["condition_type"].fillna("unknown") == condition)])
            for condition in conditions},
    }


def score(answer_sets: Sequence[dict], key: dict) -> dict:
    """Score exported answer files (already parsed) against the key."""
    return score_table(answer_table([(f"answers #{i + 1}", a) for i, a in enumerate(answer_sets)], key), key)
