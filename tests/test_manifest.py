import pandas as pd
import pytest

from cxrsynth.tasks import manifest
from cxrsynth.tasks.manifest import ManifestError


def _rows(n=4, **overrides):
    frame = pd.DataFrame(
        {
            "image_id": [f"img-{i}" for i in range(n)],
            "patient_id": [f"p-{i // 2}" for i in range(n)],
            "split": ["train", "train", "test", "test"][:n],
            "source": "real",
            "dataset": "phantom",
            "path": [f"data/ingest/images/img-{i}.png" for i in range(n)],
            "structured_pneumothorax": [1, None, 0, -1][:n],
        }
    )
    for key, value in overrides.items():
        frame[key] = value
    return frame


def test_roundtrip_keeps_nullable_int8(tmp_path):
    written = manifest.write(_rows(), tmp_path / "m.parquet", "ingest")
    back = manifest.read(tmp_path / "m.parquet")
    assert back["structured_pneumothorax"].dtype == pd.Int8Dtype()
    assert back["structured_pneumothorax"].isna().tolist() == [False, True, False, False]
    pd.testing.assert_frame_equal(written, back)


def test_write_is_atomic_on_failure(tmp_path):
    target = tmp_path / "m.parquet"
    manifest.write(_rows(), target, "ingest")
    before = target.read_bytes()
    with pytest.raises(ManifestError):
        manifest.write(_rows(split="holdout"), target, "ingest")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]


def test_label_values_are_checked():
    with pytest.raises(ManifestError, match="structured_pneumothorax.*rows \\[0\\]"):
        manifest.validate(_rows(structured_pneumothorax=[2, 0, 0, 0]), "ingest")


def test_patient_in_two_splits_is_refused():
    frame = _rows()
    frame.loc[1, "split"] = "val"
    with pytest.raises(ManifestError, match="patients in more than one split: \\['p-0'\\]"):
        manifest.validate(frame, "ingest")


def test_synthetic_rows_never_leave_train():
    frame = _rows()
    frame.loc[2, "source"] = "synthetic"
    with pytest.raises(ManifestError, match="synthetic images outside the train split"):
        manifest.validate(frame, "ingest")


def test_unknown_column_is_named():
    with pytest.raises(ManifestError, match="not in the manifest schema.*colour"):
        manifest.validate(_rows(colour="red"), "ingest")


def test_extend_adds_own_columns_and_refuses_foreign_ones():
    base = manifest.conform(_rows(), "ingest")
    added = manifest.extend(base, pd.DataFrame({"image_id": ["img-0"], "prompt": ["no finding"]}), "parse_reports")
    assert added.loc[added.image_id == "img-0", "prompt"].item() == "no finding"
    assert added["split"].tolist() == base["split"].tolist()
    with pytest.raises(ManifestError, match="may not write columns owned elsewhere.*'split': 'ingest'"):
        manifest.extend(base, pd.DataFrame({"image_id": ["img-0"], "split": ["val"]}), "parse_reports")
    with pytest.raises(ManifestError, match="not in the manifest"):
        manifest.extend(base, pd.DataFrame({"image_id": ["img-9"], "prompt": ["x"]}), "parse_reports")


def test_read_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(ManifestError, match="m.parquet: manifest not found"):
        manifest.read(tmp_path / "m.parquet")
