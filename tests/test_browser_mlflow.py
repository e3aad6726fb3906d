"""The MLflow UI as a person comparing augmentation ratios sees it, against ``mlflow server``.

The evaluate stage's own logging code logs one ``evaluate:<variant>`` run per variant of the tiny
profile (with downstream metrics computed from seeded scores rather than trained classifiers, so
the test takes seconds) to a server started with its default host on an ephemeral port.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.browser import assert_loopback_only, free_port, screenshot, started_server
from tests.conftest import TINY_PARAMS

pytestmark = pytest.mark.browser
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # GenAI job workers: not used, slow to start
ROW_HEIGHT = 45  # px of a row of the compare view's metrics grid


def _downstream(params, variants: list[tuple[str, float]]) -> dict:
    """Seeded downstream metrics per variant, each ratio's scores a little better than the last."""
    from cxrsynth.tasks.findings import FINDINGS
    from cxrsynth.tasks.metrics import classifiers, downstream

    rng = np.random.default_rng(0)
    labels = (rng.random((80, len(FINDINGS))) < 0.3).astype(float)
    scores = {variant: np.clip(labels * 0.1 * (index + 1) + rng.random(labels.shape) * 0.7, 0, 1)
              for index, (variant, _) in enumerate(variants)}
    reference, scoring = scores[classifiers.REFERENCE], downstream.Scoring(0.9, 0, 0, params.evaluate.min_cases)
    return {variant: downstream.variant_metrics(labels, s, None if variant == classifiers.REFERENCE else reference,
                                                params.generate.rare_findings, scoring)
            for variant, s in scores.items()}


def _prepare_runs(root: Path, tracking_uri: str):
    """Params tracking to the server, what each variant's run points at, and its metrics."""
    from PIL import Image

    from cxrsynth.flows import evaluate
    from cxrsynth.tasks import stages
    from cxrsynth.tasks.metrics import classifiers
    from cxrsynth.tasks.params import load_params

    shutil.copy(TINY_PARAMS, root / "params.yaml")
    params = load_params(root / "params.yaml")
    params = params.model_copy(update={"tracking": params.tracking.model_copy(update={"mlflow_uri": tracking_uri})})
    variants, dag = classifiers.variants(params), stages.load(root)
    for variant, _ in variants:  # what the runs point at: a classifier folder and its ROC figure
        folder = root / dag.input(classifiers.READER, dag.stage_for("train_classifier", variant).name)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (root / evaluate.FIGURES).mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(root / evaluate.FIGURES / f"roc_variant_{variant}.png")
    return params, dag, variants, _downstream(params, variants)


def _show_ratio_column(page) -> dict[str, str]:
    """Add the ratio param as a column of the runs table; run name -> ratio as displayed."""
    page.get_by_role("button", name="Columns").click()
    page.get_by_placeholder("Search columns").fill("ratio")
    # the search highlights "ratio" inside other names too (mix.ratios): pick the entry named exactly ratio
    page.locator("xpath=//*[normalize-space(.)='ratio'][strong]").first.click()
    page.keyboard.press("Escape")
    page.locator('.ag-cell[col-id="params.`ratio`"]').first.wait_for()
    rows = page.evaluate("""() => { const rows = {};
        for (const cell of document.querySelectorAll('.ag-row [col-id]')) {
            const index = cell.closest('.ag-row').getAttribute('row-index');
            (rows[index] ||= {})[cell.getAttribute('col-id')] = cell.innerText.trim();
        }
        return Object.values(rows); }""")
    return {row["attributes.`Run Name`"].split("\n")[-1]: row["params.`ratio`"] for row in rows}


def _metric_row(page, metric: str) -> list[str]:
    """Scroll the compare view's metrics grid to ``metric`` as a reader would; its values, left to right."""
    label = page.get_by_role("link", name=metric, exact=True)
    page.get_by_text("Metrics", exact=True).scroll_into_view_if_needed()
    grids = page.locator(".ReactVirtualized__Grid[role=grid]")
    grids.last.evaluate("g => { g.scrollTop = 0; }")  # from the top, whichever row was looked at before
    grids.last.hover()
    for _ in range(80):
        if label.count():
            break
        page.mouse.wheel(0, ROW_HEIGHT * 2)
        page.wait_for_timeout(100)
    top = label.evaluate("l => parseFloat(l.closest('div[style*=\"position: absolute\"]').style.top)")
    # The label column follows the value grid one scroll event late (an MLflow UI quirk), so the
    # grid is scrolled twice to put the row near the top with both columns lined up for the screenshot.
    for offset in (0, 1):
        grids.last.evaluate(f"g => {{ g.scrollTop = {top - ROW_HEIGHT + offset}; }}")
        page.wait_for_timeout(300)
    return label.evaluate("""l => { const row = l.closest('div[style*="position: absolute"]');
        return [...document.querySelectorAll('.ReactVirtualized__Grid__innerScrollContainer > div')]
            .filter(cell => cell.style.top === row.style.top && !cell.contains(l))
            .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left)).map(cell => cell.innerText.trim()); }""")


def test_mlflow_ui_lists_variant_runs_and_compares_ratio_aurocs(tmp_path, monkeypatch, page):
    monkeypatch.chdir(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
               "--artifacts-destination", str(tmp_path / "mlartifacts"), "--port", str(port), "--workers", "1"]
    with started_server(command, f"{url}/health", "mlflow_server", env=SERVER_ENV, cwd=tmp_path) as starting:
        params, dag, variants, metrics = _prepare_runs(tmp_path, url)  # while the server starts
        server = starting.ready()
        assert_loopback_only(server, "mlflow server")  # no --host given: the default must stay local
        import mlflow

        from cxrsynth.flows.evaluate import _log_variant_runs

        _log_variant_runs(params, dag, variants, metrics, {v: {} for v, _ in variants})  # the evaluate stage's own logging, as it runs

        experiment = mlflow.get_experiment_by_name(params.tracking.experiment).experiment_id
        page.goto(f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning")
        page.get_by_text(f"evaluate:{variants[-1][0]}", exact=True).wait_for()
        if page.get_by_role("button", name="Close").count():  # the assistant side panel hides columns
            page.get_by_role("button", name="Close").click()
        listed = _show_ratio_column(page)
        assert {name: float(ratio) for name, ratio in listed.items()} == {f"evaluate:{v}": r for v, r in variants}
        screenshot(page, "mlflow_runs")

        ratio_runs = mlflow.search_runs([experiment], filter_string="params.variant LIKE 'ratio_%'",
                                        order_by=["params.ratio ASC"])
        ids = list(ratio_runs["run_id"])
        assert len(ids) == len(params.mix.ratios)
        page.goto(f"{url}/#/compare-runs?runs={json.dumps(ids)}&experiments={json.dumps([experiment])}")
        page.get_by_text(f"Comparing {len(ids)} Runs").wait_for()
        names = [f"evaluate:{name}" for name in ratio_runs["params.variant"]]
        for finding in params.generate.rare_findings:
            shown = [float(value) for value in _metric_row(page, f"per_finding.{finding}.auroc")]
            expected = [metrics[name.split(":")[1]]["per_finding"][finding]["auroc"] for name in names]
            assert shown == pytest.approx(expected, abs=6e-4), f"{finding}: runs {names}"
        screenshot(page, "mlflow_compare")
        assert not page.errors, page.errors
