"""Which patients each phantom collection holds: training, test and reserve.

- training: patients ``0 .. n_patients - 1`` of the training streams, as the collection always had;
- test: patients of streams of their own, drawn in order with the test collection's (enriched)
  prevalence until each finding has its minimum of images whose report states it present, unhedged
  (what the report parser turns into a positive label, so what evaluate counts as a test positive);
- reserve: patients of a third set of streams drawn exactly as training patients are (the training
  prevalence, sites, sizes and contrasts), kept when one of their images states a rare finding
  present, until each rare finding has ``phantom.reserve_positives`` such images. Keeping the
  positives of patients drawn as usual, rather than forcing the finding in, leaves everything else
  about a kept patient (their other findings, lesion sizes, site) distributed as in the training
  collection among patients with that finding: the ceiling variant adds more of the same data.

Drawing only samples patients and writes their report text (well under a millisecond a patient);
rendering, the costly part, runs afterwards on the chosen patients only. Patient numbers run on from
one collection to the next (training ``1..n``, then test, then reserve), so no patient number,
folder or DICOM PatientID repeats across collections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from cxrsynth.tasks.findings import FINDINGS, PRESENT
from cxrsynth.tasks.params import PhantomParams
from cxrsynth.tasks.sources.phantom.reports import write_report
from cxrsynth.tasks.sources.phantom.sampling import sample_patient
from cxrsynth.tasks.sources.phantom.study import (
    RESERVE_NAME,
    RESERVE_STREAM,
    TEST_NAME,
    TEST_STREAM,
    TRAINING,
    Collection,
    Study,
)

# Patients drawn before a collection that has not reached its minimums is given up on (about a minute).
MAX_CANDIDATES = 200_000


@dataclass(frozen=True)
class CollectionPlan:
    """One collection to write: which patients (indices in its streams), drawn with which params."""

    collection: Collection
    config: PhantomParams  # the test collection's carries its own prevalence
    patients: Sequence[int]


def stated_positives(studies: list[Study], config: PhantomParams) -> Counter:
    """Per finding, the patient's images whose report states it present, unhedged."""
    found: Counter = Counter()
    for number, study in enumerate(studies):
        report = write_report(study, studies[number - 1] if number else None, config)
        found.update(finding for finding, state in report.states.items() if state == PRESENT)
    return found


def draw_patients(
    config: PhantomParams, collection: Collection, wanted: dict[str, int], only_positives: bool, where: str
) -> list[int]:
    """Indices of ``collection``'s patients, in order, until every finding has ``wanted`` stated positives;
    ``only_positives`` skips patients with none of a wanted finding."""
    have: Counter = Counter()
    kept: list[int] = []
    for index in range(MAX_CANDIDATES):
        if all(have[finding] >= count for finding, count in wanted.items()):
            return kept
        found = stated_positives(sample_patient(config, index, collection), config)
        if only_positives and not any(found[finding] for finding in wanted):
            continue
        kept.append(index)
        have.update(found)
    short = {finding: f"{have[finding]} of {count}" for finding, count in wanted.items() if have[finding] < count}
    raise ValueError(f"{where}: {MAX_CANDIDATES} patients drawn and still short of positives ({short}); "
                     "raise the prevalence of those findings or lower the minimums")


def minimum_test_positives(phantom: PhantomParams, rare_findings: Sequence[str]) -> dict[str, int]:
    """Stated positives the test collection needs per finding (findings needing none left out)."""
    rule = phantom.test_collection
    wanted = {f: rule.min_positives_rare if f in rare_findings else rule.min_positives_other for f in FINDINGS}
    return {finding: count for finding, count in wanted.items() if count > 0}


def collection_plans(phantom: PhantomParams, rare_findings: Sequence[str]) -> list[CollectionPlan]:
    """The training collection, then the test collection and the reserve when the params ask for them."""
    plans = [CollectionPlan(TRAINING, phantom, range(phantom.n_patients))]
    next_number = phantom.n_patients + 1
    minimums = minimum_test_positives(phantom, rare_findings)
    if minimums:
        test_config = phantom.model_copy(update={"prevalence": phantom.test_collection.prevalence})
        test = Collection(TEST_NAME, TEST_STREAM, next_number)
        patients = draw_patients(test_config, test, minimums, False, "phantom.test_collection")
        plans.append(CollectionPlan(test, test_config, patients))
        next_number += len(patients)
    if phantom.reserve_positives and rare_findings:
        reserve = Collection(RESERVE_NAME, RESERVE_STREAM, next_number)
        wanted = {finding: phantom.reserve_positives for finding in rare_findings}
        patients = draw_patients(phantom, reserve, wanted, True, "phantom.reserve_positives")
        plans.append(CollectionPlan(reserve, phantom, patients))
    return plans
