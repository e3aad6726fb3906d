"""What the phantom stage reports of a collection: counts per finding and site, and the sample grid."""

import numpy as np
import pandas as pd
from PIL import Image

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.params import PhantomParams
from cxrsynth.tasks.sources.phantom.layout import LABELS, LESIONS, TRUTH
from cxrsynth.tasks.sources.phantom.summary import counts, pick_samples, sample_grid
from cxrsynth.tasks.sources.phantom.writer import generate_patients, write_tables

FIRST = "files/patient00001/study1/view1_frontal.dcm"
FOLLOW_UP = "files/patient00001/study2/view1_frontal.dcm"
NORMAL = "files/patient00002/study1/view1_frontal.dcm"


def _truth_rows(path: str, **findings: tuple) -> list[dict]:
    """One truth row per finding; ``findings`` gives (state, in_labels, in_report) where not (0, None, None)."""
    rows = []
    for finding in FINDINGS:
        state, in_labels, in_report = findings.get(finding, (0, None, None))
        rows.append({"Path": path, "finding": finding, "state": state, "laterality": None, "location": None,
                     "severity": None, "in_labels": in_labels, "in_report": in_report})
    return rows


def _tables() -> dict[str, pd.DataFrame]:
    """Three images of two patients: a masked pneumothorax and a hedged nodule; the same pneumothorax
    named only by the report and a negated effusion; a normal study."""
    truth = pd.DataFrame(
        _truth_rows(FIRST, pneumothorax=(1, 1.0, 1), nodule=(1, -1.0, -1))
        + _truth_rows(FOLLOW_UP, pneumothorax=(1, None, 1), pleural_effusion=(0, 0.0, 0))
        + _truth_rows(NORMAL)
    )
    truth["in_report"] = truth["in_report"].astype("Int8")
    labels = pd.DataFrame({"Path": [FIRST, FOLLOW_UP, NORMAL], "No Finding": [None, None, 1.0]})
    lesions = pd.DataFrame({"Path": [FIRST], "finding": ["pneumothorax"], "mask": ["masks/patient00001/study1_1.png"]})
    return {LABELS: labels, TRUTH: truth, LESIONS: lesions}


def test_counts_per_finding_and_site_from_hand_made_tables():
    summary = counts(_tables(), ["SITE-B", "SITE-B", "SITE-A"])
    assert {key: summary[key] for key in ("images", "patients", "no_finding", "sites")} == {
        "images": 3, "patients": 2, "no_finding": 1, "sites": {"SITE-A": 1, "SITE-B": 2}}
    assert summary["findings"]["pneumothorax"] == {"present": 2, "stated": 2, "prevalence": 0.6667, "uncertain": 0,
                                                   "report_only": 1, "negated": 0, "masks": 1}
    assert summary["findings"]["nodule"] == {"present": 1, "stated": 0, "prevalence": 0.3333, "uncertain": 1,
                                             "report_only": 0, "negated": 0, "masks": 0}
    assert summary["findings"]["pleural_effusion"] == {"present": 0, "stated": 0, "prevalence": 0.0, "uncertain": 0,
                                                       "report_only": 0, "negated": 1, "masks": 0}
    assert list(summary["findings"]) == list(FINDINGS)


def test_counts_agree_with_the_files_a_written_collection_holds(tmp_path):
    config = PhantomParams(n_patients=10, size=32, prevalence={f: 0.4 for f in FINDINGS}, mask_fraction=0.5)
    rows = generate_patients(config, range(config.n_patients), tmp_path)
    summary = counts(write_tables(rows, tmp_path), rows.sites)
    dicoms = sorted(tmp_path.glob("files/*/*/*.dcm"))
    assert summary["images"] == len(dicoms) and summary["patients"] == config.n_patients
    assert sum(summary["sites"].values()) == len(dicoms)
    shipped = pd.read_csv(tmp_path / LESIONS)
    assert sum(c["masks"] for c in summary["findings"].values()) == len(list(tmp_path.glob("masks/*/*.png")))
    for finding, row in summary["findings"].items():
        assert row["masks"] == int((shipped["finding"] == finding).sum()) <= row["present"]


def test_samples_show_each_finding_first_then_a_normal_study():
    truth = _tables()[TRUTH]
    assert pick_samples(truth, 2) == [FIRST, NORMAL]  # the pneumothorax's first image also shows the nodule
    assert pick_samples(truth, 5) == [FIRST, NORMAL, FOLLOW_UP]  # never more than the collection holds


def _coloured_pixels(path) -> int:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 80).sum())


def test_sample_grid_reads_the_dicoms_and_outlines_shipped_masks(tmp_path):
    config = PhantomParams(n_patients=4, size=32, prevalence={f: 0.5 for f in FINDINGS}, mask_fraction=1.0)
    tables = write_tables(generate_patients(config, range(config.n_patients), tmp_path), tmp_path)
    assert not tables[LESIONS].empty
    outlined = sample_grid(tmp_path, tables, tmp_path / "grid.png", count=4)
    plain = sample_grid(tmp_path, {**tables, LESIONS: tables[LESIONS].iloc[:0]}, tmp_path / "plain.png", count=4)
    assert outlined == tmp_path / "grid.png"
    with Image.open(outlined) as image:
        assert image.size == (572, 660)  # 2 x 2 panels of 2.6 x 3.0 inches at 110 dpi
    assert _coloured_pixels(outlined) > 20 and _coloured_pixels(plain) == 0
    assert not list(tmp_path.glob(".*.tmp"))
