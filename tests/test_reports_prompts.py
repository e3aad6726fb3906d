import pandas as pd
import pytest

from cxrsynth.tasks.reports.prompts import NORMAL_PROMPT, canonical_prompt, describe, prompt_counts
from cxrsynth.tasks.reports.records import FindingState


def test_present_with_attributes_then_negatives():
    findings = {
        "pleural_effusion": FindingState(0),
        "pneumothorax": FindingState(1, laterality="right", location="apical", severity="mild"),
    }
    assert canonical_prompt(findings) == "small right apical pneumothorax; no pleural effusion"


def test_order_is_fixed_by_findings_not_by_mapping_order():
    first = {"consolidation": FindingState(1), "cardiomegaly": FindingState(1, severity="moderate")}
    second = dict(reversed(list(first.items())))
    assert canonical_prompt(first) == canonical_prompt(second) == "moderate cardiomegaly; consolidation"


def test_uncertain_after_present_and_not_mentioned_left_out():
    findings = {
        "atelectasis": FindingState(-1, laterality="left", location="basal"),
        "nodule": FindingState(1, laterality="left", location="upper", severity="severe"),
        "cardiomegaly": FindingState(None),
        "pneumothorax": FindingState(0),
    }
    assert canonical_prompt(findings) == (
        "large left upper zone pulmonary nodule; possible left basal atelectasis; no pneumothorax"
    )


@pytest.mark.parametrize("findings", [{}, {"pneumothorax": FindingState(0)}, {"nodule": FindingState(None)}])
def test_nothing_present_is_the_normal_prompt(findings):
    assert canonical_prompt(findings) == NORMAL_PROMPT


def test_severity_reads_as_size_for_collections_and_as_severity_for_processes():
    assert describe("pleural_effusion", FindingState(1, severity="severe")) == "large pleural effusion"
    assert describe("consolidation", FindingState(1, severity="severe")) == "severe consolidation"
    assert describe("pleural_effusion", FindingState(1, laterality="bilateral")) == "bilateral pleural effusion"


def test_unknown_finding_is_named():
    with pytest.raises(ValueError, match="unknown finding 'pneumonia' in canonical_prompt"):
        canonical_prompt({"pneumonia": FindingState(1)})


def test_bad_attribute_is_refused():
    with pytest.raises(ValueError, match="laterality must be one of"):
        FindingState(1, laterality="up")
    with pytest.raises(ValueError, match="state must be"):
        FindingState(2)


def test_prompt_counts_most_frequent_first():
    counts = prompt_counts(pd.Series(["b", "a", "b", None, "a", "c"], dtype="string"))
    assert counts.to_dict("records") == [
        {"prompt": "a", "images": 2}, {"prompt": "b", "images": 2},
        {"prompt": "", "images": 1}, {"prompt": "c", "images": 1},
    ]
