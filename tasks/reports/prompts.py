"""The canonical text prompt of an image, built from its findings: one function for every stage.

parse_reports writes it for each real image from the final findings; generate calls it with the
findings it requests, so training and sampling prompts read alike. Present findings come first,
each with its size or severity, side and zone ("small right apical pneumothorax"), then uncertain
ones ("possible left basal atelectasis"), then the findings stated absent ("no pleural effusion"),
each group in FINDINGS order; not-mentioned findings are left out. With nothing present or
uncertain the prompt is NORMAL_PROMPT.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from cxrsynth.tasks.findings import ABSENT, FINDINGS, PRESENT, UNCERTAIN, check_finding
from cxrsynth.tasks.reports.records import FindingState

NORMAL_PROMPT = "no acute cardiopulmonary abnormality"
SEPARATOR = "; "

FINDING_PHRASES = {
    "cardiomegaly": "cardiomegaly",
    "pleural_effusion": "pleural effusion",
    "pneumothorax": "pneumothorax",
    "nodule": "pulmonary nodule",
    "atelectasis": "atelectasis",
    "consolidation": "consolidation",
}
# Collections (effusion, air, a lesion) have a size; processes have a severity.
_SIZED = {"pleural_effusion", "pneumothorax", "nodule"}
_SIZE_WORDS = {"mild": "small", "moderate": "moderate", "severe": "large"}
LOCATION_PHRASES = {
    "apical": "apical", "upper": "upper zone", "middle": "mid zone", "lower": "lower zone",
    "basal": "basal", "lateral": "lateral", "perihilar": "perihilar",
}


def describe(finding: str, found: FindingState) -> str:
    """One finding with its attributes: "small right apical pneumothorax"."""
    words = []
    if found.severity:
        words.append(_SIZE_WORDS[found.severity] if finding in _SIZED else found.severity)
    if found.laterality:
        words.append(found.laterality)
    if found.location:
        words.append(LOCATION_PHRASES[found.location])
    words.append(FINDING_PHRASES[finding])
    return " ".join(words)


def canonical_prompt(findings: Mapping[str, FindingState]) -> str:
    """The prompt for an image with these findings (keys: cxrsynth finding names)."""
    for finding in findings:
        check_finding(finding, "canonical_prompt")
    ordered = [(finding, findings[finding]) for finding in FINDINGS if finding in findings]
    present = [describe(f, s) for f, s in ordered if s.state == PRESENT]
    uncertain = [f"possible {describe(f, s)}" for f, s in ordered if s.state == UNCERTAIN]
    if not present and not uncertain:
        return NORMAL_PROMPT
    absent = [f"no {FINDING_PHRASES[f]}" for f, s in ordered if s.state == ABSENT]
    return SEPARATOR.join(present + uncertain + absent)


def prompt_counts(prompts: pd.Series) -> pd.DataFrame:
    """How many images carry each prompt, most frequent first (ties alphabetically)."""
    counts = prompts.fillna("").value_counts().rename_axis("prompt").reset_index(name="images")
    return counts.sort_values(["images", "prompt"], ascending=[False, True], kind="stable").reset_index(drop=True)
