"""The phantom's test collection and the ceiling's reserve: new patients of their own, enough positives."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.params import ParamsError, PhantomParams, PhantomTestParams, parse_params
from cxrsynth.tasks.sources.phantom import selection
from cxrsynth.tasks.sources.phantom.collection import read_phantom
from cxrsynth.tasks.sources.phantom.layout import LABELS, TRUTH
from cxrsynth.tasks.sources.phantom.sampling import sample_patient
from cxrsynth.tasks.sources.phantom.selection import collection_plans, minimum_test_positives, stated_positives
from cxrsynth.tasks.sources.phantom.study import RESERVE_STREAM, TEST_STREAM, TRAINING, Collection, rng_for
from cxrsynth.tasks.sources.phantom.writer import generate_patients, write_tables

RARE = ["pneumothorax", "nodule"]


def _phantom(**changes) -> PhantomParams:
    test = PhantomTestParams(min_positives_rare=6, min_positives_other=3)
    return PhantomParams(**{"n_patients": 30, "size": 32, "test_collection": test, "reserve_positives": 4, **changes})


def _plans(phantom: PhantomParams) -> dict[str, selection.CollectionPlan]:
    return {plan.collection.name: plan for plan in collection_plans(phantom, RARE)}


def _studies(plan: selection.CollectionPlan) -> list:
    return [sample_patient(plan.config, index, plan.collection) for index in plan.patients]


def _stated(plan: selection.CollectionPlan) -> Counter:
    return sum((stated_positives(studies, plan.config) for studies in _studies(plan)), Counter())


def test_the_training_stream_is_the_one_it_always_was_and_the_others_differ():
    old = np.random.default_rng(np.random.SeedSequence([0, 5, 2])).random(4)  # the stream before collections existed
    assert np.array_equal(rng_for(0, 5, 2).random(4), old)
    draws = {stream: tuple(rng_for(0, 5, 2, stream=stream).random(4)) for stream in (0, TEST_STREAM, RESERVE_STREAM)}
    assert len(set(draws.values())) == 3
    config = _phantom()
    assert sample_patient(config, 3) == sample_patient(config, 3, TRAINING)
    other = sample_patient(config, 3, Collection("test", TEST_STREAM, 31))
    assert other[0].anatomy != sample_patient(config, 3)[0].anatomy


def test_no_patient_number_or_anatomy_is_shared_across_collections():
    plans = _plans(_phantom())
    assert list(plans) == ["train", "test", "reserve"] and list(plans["train"].patients) == list(range(30))
    numbers = {name: {s[0].patient_number for s in _studies(plan)} for name, plan in plans.items()}
    assert numbers["train"] == set(range(1, 31))
    assert not numbers["train"] & numbers["test"] and not numbers["train"] & numbers["reserve"]
    assert not numbers["test"] & numbers["reserve"]
    anatomies = {name: {s[0].anatomy for s in _studies(plan)} for name, plan in plans.items()}
    assert not anatomies["train"] & anatomies["test"] and not anatomies["train"] & anatomies["reserve"]


def test_the_test_collection_meets_every_minimum_and_stops_there():
    plans = _plans(_phantom())
    test = plans["test"]
    stated = _stated(test)
    minimums = minimum_test_positives(_phantom(), RARE)
    assert minimums == {f: 6 if f in RARE else 3 for f in FINDINGS}
    assert all(stated[finding] >= count for finding, count in minimums.items())
    shorter = selection.CollectionPlan(test.collection, test.config, test.patients[:-1])
    assert any(_stated(shorter)[finding] < count for finding, count in minimums.items())  # one fewer is short
    assert test.config.prevalence == _phantom().test_collection.prevalence  # drawn with its own prevalence
    assert {s.site for studies in _studies(test) for s in studies} == {"SITE-A", "SITE-B"}


def test_the_reserve_keeps_only_rare_positives_drawn_as_training_patients():
    phantom = _phantom()
    reserve = _plans(phantom)["reserve"]
    assert reserve.config == phantom  # the training prevalence, sites and sizes
    for studies in _studies(reserve):
        assert any(stated_positives(studies, phantom)[finding] for finding in RARE)
    assert all(_stated(reserve)[finding] >= 4 for finding in RARE)
    skipped = set(range(max(reserve.patients))) - set(reserve.patients)
    assert skipped, "a rare finding at 3% prevalence: most candidates are passed over"
    for index in sorted(skipped)[:20]:
        studies = sample_patient(phantom, index, reserve.collection)
        assert not any(stated_positives(studies, phantom)[finding] for finding in RARE)


def test_zero_minimums_and_no_reserve_write_only_the_training_collection():
    none = PhantomTestParams(min_positives_rare=0, min_positives_other=0)
    assert list(_plans(_phantom(test_collection=none, reserve_positives=0))) == ["train"]


def test_a_finding_that_cannot_occur_is_a_params_error_naming_the_key():
    with pytest.raises(ParamsError, match=r"phantom\.test_collection\.prevalence\.nodule must be > 0"):
        parse_params({"phantom": {"test_collection": {"prevalence": {f: 0.2 for f in FINDINGS if f != "nodule"}}}})
    with pytest.raises(ParamsError, match=r"invalid:\n  phantom\.prevalence\.pneumothorax must be > 0: the reserve"):
        parse_params({"phantom": {"prevalence": {"nodule": 0.03}, "test_collection": {"min_positives_rare": 0}}})


def test_drawing_gives_up_with_the_key_and_the_shortfall(monkeypatch):
    monkeypatch.setattr(selection, "MAX_CANDIDATES", 5)
    with pytest.raises(ValueError, match=r"phantom\.test_collection: 5 patients drawn and still short of positives"):
        _plans(_phantom(test_collection=PhantomTestParams(min_positives_rare=50)))


def test_written_collections_read_back_with_their_collection_and_unique_patients(tmp_path):
    plans = _plans(_phantom())
    for plan in plans.values():
        root = tmp_path / plan.collection.folder
        write_tables(generate_patients(plan.config, plan.patients, root, plan.collection), root)
    records = read_phantom(tmp_path)
    by_collection = Counter(record.collection for record in records)
    labels = {name: pd.read_csv(tmp_path / plan.collection.folder / LABELS) for name, plan in plans.items()}
    assert by_collection == {None: len(labels["train"]), "test": len(labels["test"]), "reserve": len(labels["reserve"])}
    patients = {}
    for record in records:
        patients.setdefault(record.patient_key, set()).add(record.collection)
        assert record.image_path.is_file() and record.report
    assert all(len(collections) == 1 for collections in patients.values())
    truth = pd.read_csv(tmp_path / "test" / TRUTH)
    stated = truth[(truth["state"] == 1) & (truth["in_report"] == 1)]["finding"].value_counts()
    assert all(stated.get(finding, 0) >= count for finding, count in minimum_test_positives(_phantom(), RARE).items())
