"""The reader-study scores as people read them: an HTML summary (template
``templates/summary.html.j2``) with a figure of the Likert ratings, and an MLflow run."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402

from cxrsynth.tasks import tracking  # noqa: E402
from cxrsynth.tasks.metrics import json_ready, numeric  # noqa: E402
from cxrsynth.tasks.params import Params  # noqa: E402
from cxrsynth.tasks.reader_study.page import LIKERT, SOURCES, environment  # noqa: E402

SECTIONS = (("pooled", None), ("per reader", "per_reader"), ("per finding", "per_finding"),
            ("per condition type", "per_condition_type"))


def sections(result: dict) -> list[tuple[str, list[tuple[str, dict]]]]:
    """The result's groups as (section title, [(group name, statistics)]) in reading order."""
    return [(title, [("all readers", result["pooled"])] if field is None else
             [(name.replace("_", " ") if field == "per_finding" else name, stats) for name, stats in result[field].items()])
            for title, field in SECTIONS]


def likert_figure(result: dict) -> plt.Figure:
    """Share of each rating, real beside synthetic, pooled and per finding (stacked horizontal bars)."""
    groups = [("all", result["pooled"])] + [(f.replace("_", " "), s) for f, s in result["per_finding"].items()]
    labels, shares = [], []
    for name, stats in groups:
        for source in SOURCES:
            counts = np.array([stats["likert"][source]["counts"][str(v)] for v in LIKERT], float)
            labels.append(f"{name}: {source} (n={int(counts.sum())})")
            shares.append(counts / counts.sum() if counts.sum() else counts)
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(labels) + 1.2))
    left = np.zeros(len(labels))
    colours = plt.get_cmap("RdYlGn")(np.linspace(0.1, 0.9, len(LIKERT)))
    for column, (value, colour) in enumerate(zip(LIKERT, colours)):
        width = np.array([share[column] for share in shares])
        axes.barh(labels, width, left=left, color=colour, label=str(value))
        left += width
    axes.invert_yaxis()
    axes.set(xlim=(0, 1), xlabel="share of ratings", title="Likert acceptability (1 = not at all, 5 = fully)")
    axes.legend(title="rating", ncol=len(LIKERT), loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=7)
    figure.tight_layout()
    return figure


def _png_base64(figure: plt.Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def render_summary(result: dict) -> str:
    """The HTML summary of a scored study (the figure inline, so the page stands alone)."""
    return environment().get_template("summary.html.j2").render(
        result=result, sections=sections(result), likert_png=_png_base64(likert_figure(result)))


def log_to_mlflow(result: dict, params: Params, files: Sequence[str | Path] = ()) -> str:
    """One MLflow run, ``reader_study:<study>``, in the project's experiment: every numeric figure
    as a metric (dotted names, e.g. ``per_reader.<reader>.turing.accuracy.value``) and ``files`` as
    artifacts; returns the run id."""
    tracking.configure(params)
    tags = {"cxrsynth.stage": "reader_study", "mlflow.source.git.commit": tracking.git_commit()}
    with mlflow.start_run(run_name=f"reader_study:{result['study']}", tags=tags) as run:
        mlflow.log_params({"study": result["study"], "n_items": result["n_items"], "n_readers": len(result["readers"])})
        figures = {key: value for key, value in result.items() if key not in ("study", "readers")}
        tracking.log_metrics(numeric(tracking.flatten(json_ready(figures))))
        for path in files:
            mlflow.log_artifact(str(path), "reader_study")
        return run.info.run_id
