import numpy as np
import pandas as pd

from cxrsynth.tasks.ingest.splits import assign_splits

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
