from pathlib import Path

import pytest

from cxrsynth.tasks import deid
from cxrsynth.tasks.sources.base import SourceRecord
from cxrsynth.tasks.sources.phantom.reports import write_report
from tests import deid_corpus
from tests.test_phantom import _config, _studies


def test_every_planted_identifier_is_removed_from_the_corpus():
    assert deid_corpus.planted() == deid_corpus.found(lambda text: text) == 71  # all there before
    assert deid_corpus.found(deid.scrub) == 0


@pytest.mark.parametrize("report, identifiers, clinical", deid_corpus.CORPUS)
def test_clinical_words_survive_and_placeholders_are_typed(report, identifiers, clinical):
    scrubbed = deid.scrub(report)
    for phrase in clinical:
        assert phrase in scrubbed
    assert any(placeholder in scrubbed for placeholder in deid.PLACEHOLDERS)
    assert deid.scrub(scrubbed) == scrubbed  # placeholders are stable under a second pass


@pytest.mark.parametrize("text, expected", [
    ("Discussed with Dr. Emily Navarro at 14:05 on 2021-07-02.", "Discussed with Dr. [NAME] at [TIME] on [DATE]."),
    ("MRN: 00482913", "[ID]"),
    ("Callback (617) 555-0142.", "Callback [PHONE]."),
    ("Electronically signed by: Sarah Whitfield, MD", "Electronically signed by: [NAME]"),
    ("A 10.25 mm nodule, tip 12.5 cm above the carina at T4.", "A 10.25 mm nodule, tip 12.5 cm above the carina at T4."),
    ("Clinical correlation recommended. Dr. XXXX XXXX notified.", "Clinical correlation recommended. Dr. [NAME] notified."),
])
def test_scrub_examples(text, expected):
    assert deid.scrub(text) == expected


def test_phantom_reports_carry_no_identifier_and_are_left_unchanged():
    config = _config()
    prior = {}
    reports = []
    for study in _studies(config, 60):
        reports.append(write_report(study, prior.get(study.patient_index), config).text)
        prior[study.patient_index] = study
    assert len(reports) > 60 and [deid.scrub(r) for r in reports] == reports


def test_named_institutions_are_struck_whatever_their_case():
    assert deid.scrub("Films from ACME x-ray north, compared.", ["Acme X-Ray North"]) == "Films from [INSTITUTION], compared."
    assert deid.scrub(None) is None


def test_site_pseudonyms_follow_first_appearance():
    mapping = deid.site_pseudonyms(["St Elsewhere", None, "Clinic B", " st  elsewhere", "", "Clinic B"])
    assert mapping == {"St Elsewhere": "site-1", "Clinic B": "site-2", " st  elsewhere": "site-1"}


def _record(row, site=None, report=None):
    return SourceRecord(row=row, patient_key="p", study_key="s", image_path=Path("x.dcm"), site=site, report=report)


def test_deidentify_replaces_sites_and_strikes_them_from_reports():
    records = [_record(1, report="Compared with films from Lakeview Imaging North."),
               _record(2, site="Index Site", report="Normal."), _record(3)]
    cleaned = deid.deidentify(records, ["Lakeview Imaging North", "Header Name", None])
    assert [r.site for r in cleaned] == ["site-1", "site-2", None]
    assert cleaned[0].report == "Compared with films from [INSTITUTION]."
    assert records[0].site is None and records[0].report.endswith("North.")  # the source records are not changed
    with pytest.raises(ValueError, match="2 header sites for 3 records"):
        deid.deidentify(records, [None, None])
