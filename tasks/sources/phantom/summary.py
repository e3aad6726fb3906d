"""What a written phantom collection holds: counts per finding and site, and a sample grid."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import atomic_path, read_mask
from cxrsynth.tasks.sources.phantom.layout import LABELS, LESIONS, TRUTH
from cxrsynth.tasks.sources.phantom.writer import read_dicom_image

SHORT_NAMES = {"cardiomegaly": "cardiomegaly", "pleural_effusion": "effusion", "pneumothorax": "PTX",
               "nodule": "nodule", "atelectasis": "atelectasis", "consolidation": "consolidation"}
MASK_COLOURS = {"cardiomegaly": "tab:orange", "pleural_effusion": "tab:cyan", "pneumothorax": "tab:red",
                "nodule": "yellow", "atelectasis": "tab:green", "consolidation": "magenta"}


def counts(tables: dict[str, pd.DataFrame], sites: list[str]) -> dict:
    """Images, patients and sites; per finding: present, stated present (unhedged) by the report, hedged,
    report-only, masked, prevalence."""
    labels, truth, lesions = tables[LABELS], tables[TRUTH], tables[LESIONS]
    summary: dict = {
        "images": len(labels),
        "patients": int(labels["Path"].str.split("/").str[1].nunique()),
        "no_finding": int((labels["No Finding"] == 1.0).sum()),
        "sites": dict(sorted(Counter(sites).items())),
        "findings": {},
    }
    for finding in FINDINGS:
        rows = truth[truth["finding"] == finding]
        present = rows["state"] == 1
        summary["findings"][finding] = {
            "present": int(present.sum()),
            "stated": int((present & (rows["in_report"] == 1)).sum()),  # what the parsed labels call positive
            "prevalence": round(float(present.mean()), 4) if len(rows) else 0.0,
            "uncertain": int((present & (rows["in_report"] == -1)).sum()),
            "report_only": int((present & rows["in_labels"].isna() & rows["in_report"].notna()).sum()),
            "negated": int((rows["in_report"] == 0).sum()),
            "masks": int((lesions["finding"] == finding).sum()),
        }
    return summary


def pick_samples(truth: pd.DataFrame, count: int) -> list[str]:
    """Image paths for a grid: a few of each finding first, then images without findings."""
    present = truth[truth["state"] == 1]
    chosen: list[str] = []
    per_finding = max(1, count // (len(FINDINGS) + 2))
    for finding in FINDINGS:
        paths = [p for p in present.loc[present["finding"] == finding, "Path"].unique() if p not in chosen]
        chosen += paths[:per_finding]
    normal = sorted(set(truth["Path"]) - set(present["Path"]))
    chosen += normal[: count - len(chosen)]
    leftovers = [p for p in truth["Path"].unique() if p not in chosen]
    return (chosen + leftovers)[:count]


def _title(truth: pd.DataFrame, path: str) -> str:
    rows = truth[(truth["Path"] == path) & (truth["state"] == 1)]
    if rows.empty:
        return "no finding"
    words = []
    for row in rows.itertuples():
        side = {"left": "L", "right": "R", "bilateral": "B"}.get(row.laterality, "")
        severity = row.severity if isinstance(row.severity, str) else ""
        words.append(" ".join(w for w in (SHORT_NAMES[row.finding], side, severity) if w))
    return "\n".join(words)


def sample_grid(root: str | Path, tables: dict[str, pd.DataFrame], path: str | Path, count: int = 16) -> Path:
    """A grid of written images read back from their DICOMs, findings in titles, masks outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    truth, lesions = tables[TRUTH], tables[LESIONS]
    samples = pick_samples(truth, count)
    columns = int(np.ceil(np.sqrt(len(samples))))
    rows = int(np.ceil(len(samples) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 3.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image_path in zip(axes.ravel(), samples, strict=False):  # spare axes stay blank
        ax.imshow(read_dicom_image(root / image_path), cmap="gray", vmin=0, vmax=1)
        for lesion in lesions[lesions["Path"] == image_path].itertuples():
            ax.contour(read_mask(root / lesion.mask) > 0, levels=[0.5], colors=MASK_COLOURS[lesion.finding],
                       linewidths=0.8)
        ax.set_title(_title(truth, image_path), fontsize=7)
    figure.suptitle("phantom samples (outlines: shipped lesion masks)", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=110)
    plt.close(figure)
    return path
