import numpy as np
import pandas as pd
import pytest

from cxrsynth.tasks import manifest
from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import write_mask, write_png16
from cxrsynth.tasks.masks import labelmap
from cxrsynth.tasks.metrics.inputs import evaluation_labels, load_set, mask_conditioned, read_real, read_synthetic


def frame(rows: list[dict]) -> pd.DataFrame:
    base = {"split": "test", "source": "real", "dataset": "t", "mask_path": None}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_load_set_reads_images_masks_and_quarantines(tmp_path):
    write_png16(tmp_path / "a.png", np.full((8, 8), 0.5, np.float32))
    write_png16(tmp_path / "big.png", np.zeros((16, 16), np.float32))
    nodule = np.zeros((8, 8), bool); nodule[2:4, 2:4] = True
    write_mask(tmp_path / "a_mask.png", labelmap.encode({"nodule": nodule}, (8, 8)))
    rows = frame([{"image_id": "a", "path": "a.png", "mask_path": "a_mask.png"},
                  {"image_id": "missing", "path": "missing.png"},
                  {"image_id": "big", "path": "big.png"}])
    loaded = load_set(rows, tmp_path, 8, "test")
    assert loaded.ids == ["a"] and loaded.images.shape == (1, 8, 8)
    assert loaded.masks[0, FINDINGS.index("nodule")].sum() == 4 and loaded.masks.dtype == bool
    reasons = {entry["image_id"]: entry["reason"] for entry in loaded.quarantined}
    assert set(reasons) == {"missing", "big"} and "expected (8, 8)" in reasons["big"]
    assert str(tmp_path) not in reasons["missing"]
    assert len(loaded.subset(np.array([False]))) == 0


def test_load_set_reasons_keep_relative_paths_whole(tmp_path, monkeypatch):
    """With root "." (evaluate's), a reason names the file as the manifest does, dots and all."""
    monkeypatch.chdir(tmp_path)
    loaded = load_set(frame([{"image_id": "gone", "path": "data/x.1.png"}]), ".", 8, "test")
    assert "data/x.1.png" in loaded.quarantined[0]["reason"]
    absolute = load_set(frame([{"image_id": "gone", "path": "data/x.1.png"}]), tmp_path, 8, "test")
    assert str(tmp_path) not in absolute.quarantined[0]["reason"] and "data/x.1.png" in absolute.quarantined[0]["reason"]


def test_evaluation_labels():
    rows = pd.DataFrame({f: pd.array([1, 0, -1, None], dtype="Int8") for f in FINDINGS})
    labels = evaluation_labels(rows)
    assert labels[:, 0].tolist()[:2] == [1, 0] and np.isnan(labels[2, 0]) and labels[3, 0] == 0


def test_manifest_readers(tmp_path):
    real = frame([{"image_id": "r", "path": "r.png", "patient_id": "p", "split": "test"}])
    manifest.write(real, tmp_path / "real.parquet", "prepare_masks")
    assert read_real(tmp_path / "real.parquet")["image_id"].tolist() == ["r"]
    with pytest.raises(manifest.ManifestError, match="not synthetic training rows"):
        read_synthetic(tmp_path / "real.parquet")
    synthetic = frame([{"image_id": "s", "path": "s.png", "split": "train", "source": "synthetic"}])
    manifest.write(synthetic, tmp_path / "synthetic.parquet", "generate")
    assert len(read_synthetic(tmp_path / "synthetic.parquet")) == 1


def test_mask_conditioned_rows():
    rows = pd.DataFrame({"mask_path": ["m.png", "m.png", None, "m.png"],
                         "condition_type": ["label+mask", "text", "label+mask", None]})
    assert mask_conditioned(rows).tolist() == [True, False, False, True]
    assert mask_conditioned(rows.drop(columns="condition_type")).tolist() == [True, True, False, True]


def test_a_hedged_report_left_null_by_the_ignore_policy_is_not_a_negative():
    states = pd.array([1, None, None], dtype="Int8")
    report = pd.array([1, -1, None], dtype="Int8")  # row 1: "possible ...", row 2: not mentioned at all
    rows = pd.DataFrame({**{f: states for f in FINDINGS}, **{f"report_{f}": report for f in FINDINGS},
                         **{f"structured_{f}": pd.array([None] * 3, dtype="Int8") for f in FINDINGS}})
    labels = evaluation_labels(rows)
    assert labels[0, 0] == 1 and np.isnan(labels[1, 0]) and labels[2, 0] == 0
