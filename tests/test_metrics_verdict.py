import json

import numpy as np

from cxrsynth.tasks.metrics import json_ready
from cxrsynth.tasks.metrics.downstream import Scoring, score_variants
from cxrsynth.tasks.metrics.power import HELPS, HURTS, NO_DETECTABLE_EFFECT
from cxrsynth.tasks.metrics.verdict import FIELDS, HEADER, NO_SYNTHETIC, verdict_markdown, verdict_table
from tests.test_metrics_downstream import SEEDED_VARIANTS, seeded_project

RARE = ["nodule", "pneumothorax"]


def scored(variants=SEEDED_VARIANTS):
    labels, probabilities, groups = seeded_project()
    probabilities["ratio_2"] = probabilities["ratio_1"] + 0.3 * np.nan_to_num(labels)  # better than ratio_1, below class weighting
    return score_variants(labels, probabilities, groups, variants, RARE, Scoring(0.9, 200, 0, min_cases=10))


def test_the_best_synthetic_variant_against_both_comparators():
    variants = [*SEEDED_VARIANTS, ("ratio_2", 2.0)]
    downstream = scored(variants)
    table = verdict_table(downstream, variants, RARE)
    assert list(table) == RARE and all(list(row) == list(FIELDS) for row in table.values())
    nodule, cell = table["nodule"], downstream["ratio_2"]["per_finding"]["nodule"]
    assert nodule["best_synthetic"] == "ratio_2" and nodule["best_synthetic_ratio"] == 2.0
    assert nodule["auroc"] == cell["auroc"] and nodule["gain_vs_real_only"] == cell["delta_auroc_vs_real_only"]
    assert nodule["gain_vs_best_baseline_ci_low"] == cell["delta_ci_low_vs_best_baseline"]
    assert nodule["best_baseline"] == "class_weighted"
    assert nodule["best_baseline_auroc"] == downstream["class_weighted"]["per_finding"]["nodule"]["auroc"]
    assert nodule["min_detectable_difference"] == cell["min_detectable_difference_vs_best_baseline"]
    assert nodule["verdict"] == cell["reading_vs_best_baseline"] == HURTS
    assert nodule["ceiling_share_status"] == "ok" and 0 < nodule["ceiling_share"] < 1
    pneumothorax = table["pneumothorax"]
    assert pneumothorax["verdict"] == "too few positives (3 < 10)" and pneumothorax["best_synthetic"] is None
    assert json.loads(json.dumps(json_ready(table))) == json_ready(table)  # plain json, stable keys


def test_markdown_has_one_row_per_rare_finding_with_the_verdict_word():
    variants = [*SEEDED_VARIANTS, ("ratio_2", 2.0)]
    table = verdict_table(scored(variants), variants, RARE)
    text = verdict_markdown(table)
    lines = text.splitlines()
    assert lines[0] == "| " + " | ".join(HEADER) + " |" and len(lines) == 2 + len(RARE)
    nodule = lines[2].split(" | ")
    assert nodule[0] == "| nodule" and nodule[2] == "ratio_2" and nodule[-1] == f"**{HURTS}** |"
    assert nodule[5].startswith("class_weighted (") and "[" in nodule[4] and ", p " in nodule[4]
    assert "**too few positives (3 < 10)**" in lines[3] and lines[3].count("n/a") == 7


def test_without_ratios_or_ceiling_the_table_says_so():
    variants = [("real_only", 0.0), ("class_weighted", 0.0)]
    table = verdict_table(scored(variants), variants, ["nodule"])
    assert table["nodule"]["verdict"] == NO_SYNTHETIC and table["nodule"]["real_only_auroc"] is not None
    no_ceiling = [("real_only", 0.0), ("ratio_1", 1.0)]
    row = verdict_table(scored(no_ceiling), no_ceiling, ["nodule"])["nodule"]
    assert row["ceiling_share_status"] is None and "no ceiling variant" in verdict_markdown({"nodule": row})
    assert row["best_baseline"] == "real_only" and row["gain_vs_best_baseline"] == row["gain_vs_real_only"]


def test_the_verdict_reads_the_best_of_k_ratios_p_value_bonferroni_adjusted():
    variants = [*SEEDED_VARIANTS, ("ratio_2", 2.0)]
    downstream = scored(variants)
    cell = downstream["ratio_2"]["per_finding"]["nodule"]
    row = verdict_table(downstream, variants, RARE)["nodule"]
    assert row["synthetic_variants_compared"] == 2
    assert row["p_vs_best_baseline_adjusted"] == min(1.0, 2 * cell["p_vs_best_baseline"])
    # a gain significant alone (p 0.03) but not once two ratios were tried (0.06): no "helps"
    cell.update(p_vs_best_baseline=0.03, delta_auroc_vs_best_baseline=0.02,
                min_detectable_difference_vs_best_baseline=0.05, reading_vs_best_baseline=HELPS)
    row = verdict_table(downstream, variants, RARE)["nodule"]
    assert row["p_vs_best_baseline"] == 0.03 and row["p_vs_best_baseline_adjusted"] == 0.06
    assert row["verdict"] == NO_DETECTABLE_EFFECT
    cell.update(p_vs_best_baseline=0.01)
    assert verdict_table(downstream, variants, RARE)["nodule"]["verdict"] == HELPS
