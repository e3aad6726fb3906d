"""tasks/metrics/ratios.py: the AUROC-against-ratio table (dvc plots data) and its figure."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cxrsynth.tasks.metrics.ratios import COLUMNS, auroc_by_ratio, ratio_figure, write_table

VARIANTS = [("real_only", 0.0), ("classical_aug", 0.0), ("ratio_0.5", 0.5), ("ratio_1", 1.0), ("ratio_2", 2.0)]
AUROC = {"real_only": 0.70, "classical_aug": 0.72, "ratio_0.5": 0.74, "ratio_1": 0.78, "ratio_2": 0.76}


def downstream(nodule_missing_ci: bool = False) -> dict:
    result = {}
    for variant, auroc in AUROC.items():
        per_finding = {"nodule": {"auroc": auroc, "auroc_ci_low": auroc - 0.05, "auroc_ci_high": auroc + 0.04,
                                  "n_positive": 19, "status": "ok"},
                       "pneumothorax": {"auroc": auroc - 0.1, "auroc_ci_low": auroc - 0.2, "auroc_ci_high": auroc,
                                        "n_positive": 12, "status": "ok"}}
        if nodule_missing_ci:
            per_finding["nodule"] = {"auroc": None, "auroc_ci_low": None, "auroc_ci_high": None, "n_positive": 1,
                                     "status": "too few positives (1 < 10)"}
        result[variant] = {"per_finding": per_finding}
    return result


def test_table_has_a_row_per_finding_and_variant():
    table = auroc_by_ratio(downstream(), VARIANTS, ["nodule", "pneumothorax"])
    assert list(table.columns) == COLUMNS and len(table) == 10
    nodule = table[table["finding"] == "nodule"].set_index("variant")
    assert nodule.loc["ratio_1", "auroc"] == 0.78 and nodule.loc["ratio_1", "ratio"] == 1.0
    assert nodule.loc["ratio_1", "auroc_ci_low"] == pytest.approx(0.73)
    assert nodule.loc["real_only", "kind"] == "baseline" and nodule.loc["ratio_0.5", "kind"] == "ratio"
    assert list(table.loc[table["kind"] == "baseline", "ratio"]) == [0.0] * 4


def test_missing_variant_is_named():
    metrics = downstream()
    del metrics["ratio_2"]
    with pytest.raises(ValueError, match="variant 'ratio_2', finding 'nodule'"):
        auroc_by_ratio(metrics, VARIANTS, ["nodule"])


def test_table_round_trips_through_csv(tmp_path):
    table = auroc_by_ratio(downstream(), VARIANTS, ["nodule"])
    path = write_table(table, tmp_path / "plots" / "auroc_by_ratio.csv")
    pd.testing.assert_frame_equal(pd.read_csv(path), table)


def test_figure_draws_ratios_with_intervals_and_baselines_as_lines():
    figure = ratio_figure(auroc_by_ratio(downstream(), VARIANTS, ["nodule", "pneumothorax"]))
    nodule, pneumothorax = figure.axes
    assert nodule.get_title() == "nodule" and pneumothorax.get_title() == "pneumothorax"
    (container,) = nodule.containers
    assert container.get_label() == "real + synthetic (95% CI)"
    curve, _, (bars,) = container.lines
    assert list(curve.get_xdata()) == [0.5, 1.0, 2.0] and np.allclose(curve.get_ydata(), [0.74, 0.78, 0.76])
    assert [tuple(np.round(s[:, 1], 3)) for s in bars.get_segments()] == [(0.69, 0.78), (0.73, 0.82), (0.71, 0.80)]
    lines = {line.get_label(): line for line in nodule.get_lines()}
    for name in ("real_only", "classical_aug"):  # horizontal, across the panel, at the baseline's AUROC
        line = lines[f"{name} ({AUROC[name]:.3f})"]
        assert np.allclose(line.get_ydata(), AUROC[name]) and list(line.get_xdata()) == [0, 1]
    assert nodule.get_xscale() == "log"
    plt.close(figure)


def test_finding_with_too_few_cases_has_no_statistic_in_the_table(tmp_path):
    table = auroc_by_ratio(downstream(nodule_missing_ci=True), VARIANTS, ["nodule", "pneumothorax"])
    nodule = table[table["finding"] == "nodule"]
    assert nodule[["auroc", "auroc_ci_low", "auroc_ci_high"]].isna().all().all()
    assert set(nodule["status"]) == {"too few positives (1 < 10)"}
    written = pd.read_csv(write_table(table, tmp_path / "auroc_by_ratio.csv"))
    assert written.loc[written["finding"] == "nodule", "auroc"].isna().all()  # empty cells, which DVC plots skip


def test_figure_copes_with_a_finding_without_auroc():
    figure = ratio_figure(auroc_by_ratio(downstream(nodule_missing_ci=True), VARIANTS, ["nodule", "pneumothorax"]))
    assert figure.axes[0].get_title() == "nodule: too few positives (1 < 10)" and not figure.axes[0].get_lines()
    assert figure.axes[1].get_lines()
    plt.close(figure)


def test_dvc_plots_show_draws_the_table_with_the_project_template(tmp_path):
    """The plot definition in dvc.yaml and .dvc/plots/auroc_by_ratio.json, rendered by DVC itself."""
    import json
    import shutil
    import subprocess
    import sys

    from tests.conftest import ROOT

    for name in ("dvc.yaml", "params.yaml"):  # dvc.yaml's foreach reads params.yaml
        shutil.copy(ROOT / name, tmp_path / name)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    shutil.copytree(ROOT / ".dvc" / "plots", tmp_path / ".dvc" / "plots", dirs_exist_ok=True)
    table = auroc_by_ratio(downstream(), VARIANTS, ["nodule", "pneumothorax"])
    write_table(table, tmp_path / "plots/evaluate/auroc_by_ratio.csv")
    shown = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json", "plots/evaluate/auroc_by_ratio.csv"],
                           cwd=tmp_path, check=True, capture_output=True, text=True)
    (plot,) = json.loads(shown.stdout)["data"]["plots/evaluate/auroc_by_ratio.csv"]
    spec = plot["content"]
    assert len(spec["data"]["values"]) == len(table) and spec["facet"]["field"] == "finding"
    layers = spec["spec"]["layer"]
    assert [layer["transform"][0]["filter"].split("&&")[0].strip() for layer in layers] == [
        "datum.kind === 'ratio'", "datum.kind === 'ratio'", "datum.kind === 'baseline'"]
    assert layers[0]["encoding"]["x"]["field"] == "ratio_value" and layers[1]["encoding"]["y2"]["field"] == "ci_high"
    assert "x" not in layers[2]["encoding"]  # a baseline is a rule across the whole panel
    fields = {t["as"]: t["calculate"] for t in spec["transform"]}
    assert fields["auroc_value"] == "toNumber(datum.auroc)"  # DVC hands CSV values over as strings
    row = next(v for v in spec["data"]["values"] if v["variant"] == "ratio_1" and v["finding"] == "nodule")
    assert float(row["auroc"]) == 0.78 and row["kind"] == "ratio"
