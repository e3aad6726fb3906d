"""The prompt that asks the generator for a set of findings.

``prompt_for`` is the one place generation words its requests; it follows the sentence pattern of
the training prompts. The canonical prompt function of ``tasks.reports`` replaces it when it lands,
so training and generation prompts come from the same code.
"""

from __future__ import annotations

from collections.abc import Mapping

from tasks.findings import FINDINGS, PRESENT, UNCERTAIN


def _phrase(finding: str, laterality: str | None, severity: str | None, location: str | None) -> str:
    words = [w for w in (severity, laterality, location, finding.replace("_", " ")) if w]
    return " ".join(words)


def prompt_for(states: Mapping[str, int | None], laterality: Mapping[str, str | None],
               severity: Mapping[str, str | None], location: Mapping[str, str | None] | None = None) -> str:
    """E.g. ``"moderate left apical pneumothorax. possible nodule. no pleural effusion."``; findings
    not mentioned are left out, and ``"no acute findings."`` when nothing is present or uncertain."""
    location = location or {}
    present, uncertain, absent = [], [], []
    for finding in FINDINGS:
        state = states.get(finding)
        phrase = _phrase(finding, laterality.get(finding), severity.get(finding), location.get(finding))
        if state == PRESENT:
            present.append(f"{phrase}.")
        elif state == UNCERTAIN:
            uncertain.append(f"possible {phrase}.")
        elif state == 0:
            absent.append(f"no {finding.replace('_', ' ')}.")
    if not present and not uncertain:
        present = ["no acute findings."]
    return " ".join(present + uncertain + absent)
