"""The verdict: the one table the report, ``metrics/evaluate.json`` and the pipeline's MLflow run open with.

Per rare finding: the best synthetic variant (highest seed-averaged test AUROC among the ratios), its
gain over real-only and over the best non-generative baseline with intervals and p (test patients and
seeds), the minimum detectable difference of that second comparison, the ceiling share, and a verdict
word. The verdict is the reading against the best non-generative baseline (real-only among them):
synthetic images "help" only if they beat what real data with a cheap trick already gives. The best
of k synthetic variants is picked after looking at the test split, so the verdict reads its p-value
Bonferroni-adjusted (k x p): a best-of-three pick would otherwise call "helps" up to three times as
often as alpha promises when no ratio helps.

Every finding's row has the same keys (None where a value does not exist), so the json stays stable
and ``dvc metrics diff`` lines the numbers up run against run.
"""

from __future__ import annotations

from collections.abc import Sequence

from cxrsynth.tasks.metrics.classifiers import REFERENCE
from cxrsynth.tasks.metrics.downstream import BEST_BASELINE, OK, synthetic_variants
from cxrsynth.tasks.metrics.power import effect_reading

NO_SYNTHETIC = "no synthetic variant"

# (verdict key, key of the best synthetic variant's per-finding cell it copies)
COPIED = (
    ("auroc", "auroc"), ("auroc_sd", "auroc_sd"),
    ("gain_vs_real_only", "delta_auroc_vs_real_only"), ("gain_vs_real_only_ci_low", "delta_ci_low_vs_real_only"),
    ("gain_vs_real_only_ci_high", "delta_ci_high_vs_real_only"), ("p_vs_real_only", "p_vs_real_only"),
    ("best_baseline", BEST_BASELINE),
    ("gain_vs_best_baseline", "delta_auroc_vs_best_baseline"),
    ("gain_vs_best_baseline_ci_low", "delta_ci_low_vs_best_baseline"),
    ("gain_vs_best_baseline_ci_high", "delta_ci_high_vs_best_baseline"),
    ("p_vs_best_baseline", "p_vs_best_baseline"),
    ("min_detectable_difference", "min_detectable_difference_vs_best_baseline"),
    ("ceiling_share", "ceiling_share"), ("ceiling_share_ci_low", "ceiling_share_ci_low"),
    ("ceiling_share_ci_high", "ceiling_share_ci_high"), ("ceiling_share_status", "ceiling_share_status"),
)
FIELDS = ("status", "n_positive", "real_only_auroc", "best_synthetic", "best_synthetic_ratio",
          *(key for key, _ in COPIED), "best_baseline_auroc", "synthetic_variants_compared",
          "p_vs_best_baseline_adjusted", "verdict")


def _scored_synthetic(downstream: dict, variants: Sequence[tuple[str, float]], finding: str) -> dict[str, float]:
    scored = {v: downstream[v]["per_finding"][finding]["auroc"] for v in synthetic_variants(variants)}
    return {v: auroc for v, auroc in scored.items() if auroc is not None}


def verdict_row(downstream: dict, variants: Sequence[tuple[str, float]], finding: str, alpha: float = 0.05) -> dict:
    """One rare finding's row of the verdict table (every key of FIELDS)."""
    reference = downstream[REFERENCE]["per_finding"][finding]
    row = {**dict.fromkeys(FIELDS), "status": reference["status"], "n_positive": reference["n_positive"],
           "real_only_auroc": reference["auroc"]}
    if reference["status"] != OK:
        return {**row, "verdict": reference["status"]}
    scored = _scored_synthetic(downstream, variants, finding)
    if not scored:
        return {**row, "verdict": NO_SYNTHETIC}
    best = max(scored, key=scored.get)
    cell = downstream[best]["per_finding"][finding]
    row.update({key: cell.get(source) for key, source in COPIED})
    adjusted = min(1.0, len(scored) * cell["p_vs_best_baseline"])
    row.update(best_synthetic=best, best_synthetic_ratio=dict(variants)[best],
               best_baseline_auroc=downstream[cell[BEST_BASELINE]]["per_finding"][finding]["auroc"],
               synthetic_variants_compared=len(scored), p_vs_best_baseline_adjusted=adjusted,
               verdict=effect_reading(cell["delta_auroc_vs_best_baseline"], adjusted,
                                      cell["min_detectable_difference_vs_best_baseline"], alpha))
    return row


def verdict_table(downstream: dict, variants: Sequence[tuple[str, float]], rare_findings: Sequence[str],
                  alpha: float = 0.05) -> dict:
    """Finding -> its verdict row, rare findings in the params' order."""
    return {finding: verdict_row(downstream, variants, finding, alpha) for finding in rare_findings}


def _number(value, digits: int = 3, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _p(value) -> str:
    return "n/a" if value is None else ("<0.001" if value < 0.001 else f"{value:.3f}")


def _gain(row: dict, prefix: str) -> str:
    return (f"{_number(row[prefix], sign=True)} [{_number(row[prefix + '_ci_low'], sign=True)}, "
            f"{_number(row[prefix + '_ci_high'], sign=True)}], p {_p(row['p_vs' + prefix.removeprefix('gain_vs')])}")


def _share(row: dict) -> str:
    if row["ceiling_share_status"] is None:
        return "no ceiling variant"
    if row["ceiling_share"] is None:
        return row["ceiling_share_status"].split(":")[0]  # "undefined" (the json keeps the why)
    return f"{_number(row['ceiling_share'], 2)} [{_number(row['ceiling_share_ci_low'], 2)}, " \
           f"{_number(row['ceiling_share_ci_high'], 2)}]"


HEADER = ("finding", "test positives", "best synthetic variant", "mean AUROC ± sd over seeds",
          "gain vs real_only [95% CI], p", "best non-generative baseline (AUROC)",
          "gain vs that baseline [95% CI], p (Bonferroni-adjusted over the ratios)", "min. detectable difference", "ceiling share [95% CI]", "verdict")


def _cells(finding: str, row: dict) -> list[str]:
    name = finding.replace("_", " ")
    if row["best_synthetic"] is None:
        return [name, str(row["n_positive"]), *["n/a"] * 7, f"**{row['verdict']}**"]
    return [name, str(row["n_positive"]), row["best_synthetic"],
            f"{_number(row['auroc'])} ± {_number(row['auroc_sd'])}", _gain(row, "gain_vs_real_only"),
            f"{row['best_baseline']} ({_number(row['best_baseline_auroc'])})",
            f"{_gain(row, 'gain_vs_best_baseline')} ({_p(row['p_vs_best_baseline_adjusted'])} adjusted "
            f"over {row['synthetic_variants_compared']})",
            _number(row["min_detectable_difference"]), _share(row), f"**{row['verdict']}**"]


def verdict_markdown(table: dict) -> str:
    """The verdict table as Markdown, one row per rare finding."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(finding, row)) + " |" for finding, row in table.items()]
    return "\n".join(lines)
