"""Rare-finding AUROC against the synthetic ratio, the comparison the project exists for, as a table
(``dvc plots`` data) and a figure (MLflow artifact, report): each ratio's AUROC with its DeLong
interval, and every baseline as a horizontal line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cxrsynth.tasks.io import atomic_path  # noqa: E402

COLUMNS = ["finding", "variant", "kind", "ratio", "auroc", "auroc_ci_low", "auroc_ci_high", "status"]


def auroc_by_ratio(downstream_by_variant: dict, variants: Sequence[tuple[str, float]], rare: Sequence[str]) -> pd.DataFrame:
    """One row per rare finding and variant: ``kind`` "baseline" (ratio 0) or "ratio", the AUROC and
    its DeLong interval, empty where ``status`` says the test split has too few positives or negatives."""
    rows = []
    for finding in rare:
        for variant, ratio in variants:
            try:
                metrics = downstream_by_variant[variant]["per_finding"][finding]
            except KeyError as error:
                raise ValueError(f"evaluate: no downstream metrics for variant {variant!r}, finding {finding!r}") from error
            rows.append({"finding": finding, "variant": variant, "kind": "ratio" if ratio > 0 else "baseline",
                         "ratio": float(ratio), **{k: metrics.get(k) for k in COLUMNS[4:]}})
    return pd.DataFrame(rows, columns=COLUMNS)


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    with atomic_path(path) as temp:
        table.to_csv(temp, index=False)
    return Path(path)


def _draw_finding(axes: plt.Axes, rows: pd.DataFrame) -> None:
    ratios = rows[rows["kind"] == "ratio"].sort_values("ratio")
    auroc = ratios["auroc"].astype(float)
    error = np.vstack([auroc - ratios["auroc_ci_low"].astype(float), ratios["auroc_ci_high"].astype(float) - auroc])
    axes.errorbar(ratios["ratio"], auroc, yerr=error, marker="o", color="black", capsize=3,
                  label="real + synthetic (95% CI)")
    baselines = rows[rows["kind"] == "baseline"]
    for (_, baseline), colour in zip(baselines.iterrows(), plt.get_cmap("tab10").colors):
        if pd.isna(baseline["auroc"]):
            continue
        axes.axhline(baseline["auroc"], color=colour, linestyle="--", linewidth=1.2,
                     label=f"{baseline['variant']} ({baseline['auroc']:.3f})")
        if baseline["variant"] == "real_only" and not pd.isna(baseline["auroc_ci_low"]):
            axes.axhspan(baseline["auroc_ci_low"], baseline["auroc_ci_high"], color=colour, alpha=0.08)
    axes.set_xscale("log", base=2)
    axes.set_xticks(ratios["ratio"], [f"{r:g}" for r in ratios["ratio"]])
    axes.minorticks_off()
    axes.set(title=rows["finding"].iloc[0].replace("_", " "), xlabel="synthetic images per real image")
    axes.legend(fontsize=7, loc="best")


def _why_no_auroc(rows: pd.DataFrame) -> str:
    """The finding's status (e.g. "too few positives (1 < 10)"), the same for every variant."""
    reasons = [status for status in rows["status"].dropna() if status != "ok"]
    return reasons[0] if reasons else "no AUROC"


def ratio_figure(table: pd.DataFrame) -> plt.Figure:
    """One panel per rare finding: AUROC (DeLong 95% CI) against the ratio, baselines as dashed lines
    (real_only's interval shaded)."""
    findings = list(dict.fromkeys(table["finding"])) or ["(none)"]
    figure, axes = plt.subplots(1, len(findings), figsize=(4.2 * len(findings), 3.8), squeeze=False, sharey=True)
    for axis, finding in zip(axes[0], findings):
        rows = table[table["finding"] == finding]
        if rows.empty or rows["auroc"].isna().all():
            axis.set(title=f"{finding.replace('_', ' ')}: {_why_no_auroc(rows)}")
            continue
        _draw_finding(axis, rows)
    axes[0, 0].set_ylabel("test AUROC")
    figure.suptitle("Rare-finding AUROC against the synthetic ratio")
    figure.tight_layout()
    return figure
