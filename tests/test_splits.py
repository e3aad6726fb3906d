import numpy as np
import pandas as pd
import pytest

from cxrsynth.tasks.ingest.splits import assign_splits, main_fractions, split_with_collections
from cxrsynth.tasks.sources.base import SourceError

FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def _cohort(n_patients=300, seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(n_patients):
        for study in range(rng.integers(1, 4)):
            rows.append({"patient_id": f"p{patient}", "structured_pneumothorax": int(rng.random() < 0.05),
                         "structured_cardiomegaly": int(rng.random() < 0.2)})
    return pd.DataFrame(rows)


def test_no_patient_in_two_splits_and_fractions_hold():
    frame = _cohort()
    split = assign_splits(frame, FRACTIONS, seed=0)
    assert (split.groupby(frame.patient_id).nunique() == 1).all()
    per_patient = split.groupby(frame.patient_id).first().value_counts(normalize=True)
    for name, fraction in FRACTIONS.items():
        assert abs(per_patient[name] - fraction) < 0.05


def test_deterministic_in_seed_and_seed_matters():
    frame = _cohort()
    assert assign_splits(frame, FRACTIONS, 3).equals(assign_splits(frame, FRACTIONS, 3))
    assert not assign_splits(frame, FRACTIONS, 3).equals(assign_splits(frame, FRACTIONS, 4))


def test_rare_finding_reaches_every_split():
    frame = _cohort()
    split = assign_splits(frame, FRACTIONS, seed=0)
    rare = frame.structured_pneumothorax == 1
    assert set(split[rare]) == {"train", "val", "test"}


def _with_collections(n_test=40, n_reserve=20):
    """The cohort plus patients of a test and a reserve collection (their own patient ids)."""
    frame = _cohort()
    held_out = _cohort(n_test + n_reserve, seed=2)
    held_out["patient_id"] = "h" + held_out["patient_id"]
    collections = held_out["patient_id"].map(lambda p: "test" if int(p[2:]) < n_test else "reserve")
    frame = pd.concat([frame, held_out], ignore_index=True)
    return frame, pd.concat([pd.Series([None] * (len(frame) - len(held_out)), dtype=object), collections],
                            ignore_index=True)


def test_held_out_collections_keep_their_split_and_the_rest_is_train_and_val():
    frame, collections = _with_collections()
    split = split_with_collections(frame, collections, FRACTIONS, seed=0)
    held = collections.notna()
    assert split[held].equals(collections[held].astype(object))
    assert set(split[~held]) == {"train", "val"}
    per_patient = split[~held].groupby(frame.patient_id[~held]).first().value_counts(normalize=True)
    assert abs(per_patient["train"] - 0.7 / 0.8) < 0.05 and abs(per_patient["val"] - 0.1 / 0.8) < 0.05
    assert (split.groupby(frame.patient_id).nunique() == 1).all()


def test_without_a_test_collection_the_main_one_is_split_as_ever():
    frame, collections = _with_collections(n_test=0)
    split = split_with_collections(frame, collections, FRACTIONS, seed=0)
    main = collections.isna()
    assert split[main].equals(assign_splits(frame[main], FRACTIONS, 0).astype(object))
    assert set(split[~main]) == {"reserve"}
    none = pd.Series([None] * len(_cohort()), dtype=object)
    assert split_with_collections(_cohort(), none, FRACTIONS, 0).equals(assign_splits(_cohort(), FRACTIONS, 0).astype(object))


def test_a_patient_in_two_collections_or_an_unknown_collection_is_refused():
    frame, collections = _with_collections()
    leaked = collections.copy()
    leaked[frame.index[frame.patient_id == "p0"][0]] = "test"  # one of p0's images in the test collection
    with pytest.raises(SourceError, match=r"patients \['p0'\] have images in two of the source's collections"):
        split_with_collections(frame, leaked, FRACTIONS, 0)
    with pytest.raises(SourceError, match=r"unknown source collection\(s\) \['holdout'\]"):
        split_with_collections(frame, collections.replace("reserve", "holdout"), FRACTIONS, 0)


def test_main_fractions_drop_test_and_keep_the_train_val_proportion():
    assert main_fractions(FRACTIONS, True) == pytest.approx({"train": 0.875, "val": 0.125})
    assert main_fractions(FRACTIONS, False) == FRACTIONS
