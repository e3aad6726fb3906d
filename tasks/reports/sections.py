"""Report text to the sentences that describe the image.

Hospital reports carry sections (MIMIC: ``INDICATION:``, ``COMPARISON:``, ``FINDINGS:``,
``IMPRESSION:``). Only findings and impression describe the image; an indication such as
"evaluate for pneumothorax" must not become a finding. Text without any section header is read
whole. Headers in capitals are recognised whatever they name; headers in title or mixed case ("Findings:",
"Clinical history:") only when they name a known section, since "Lungs: clear" in a report written as a list
is body text, not a header. Reports are hard-wrapped, so a single newline does not end a sentence; a blank line does.
"""

from __future__ import annotations

import re

DESCRIPTIVE_SECTIONS = frozenset(
    {"FINDINGS", "FINDING", "IMPRESSION", "IMPRESSIONS", "FINDINGS AND IMPRESSION", "CONCLUSION", "CONCLUSIONS",
     "OPINION", "SUMMARY", "REPORT"}
)
# Sections that do not describe the image, as hospitals title them.
OTHER_SECTIONS = frozenset(
    {"INDICATION", "INDICATIONS", "CLINICAL INDICATION", "HISTORY", "CLINICAL HISTORY", "CLINICAL INFORMATION",
     "REASON FOR EXAM", "REASON FOR EXAMINATION", "REASON FOR STUDY", "COMPARISON", "COMPARISONS", "TECHNIQUE",
     "EXAM", "EXAMINATION", "PROCEDURE", "RECOMMENDATION", "RECOMMENDATIONS", "NOTIFICATION", "ADDENDUM"}
)
_KNOWN = "|".join(sorted((re.escape(name).replace(r"\ ", " +") for name in DESCRIPTIVE_SECTIONS | OTHER_SECTIONS),
                         key=len, reverse=True))
# Upper-case words, or a known section name in any case, followed by a colon, at a line start or after a sentence end.
_HEADER = re.compile(rf"(?:^|(?<=[\n.]))\s*([A-Z][A-Z /&]{{2,40}}|(?i:{_KNOWN})):")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[.!?])$|\n\s*\n|(?<=[a-z)])\.(?=[A-Z])")


def report_body(text: object) -> str:
    """The findings and impression sections of a report, or the whole text when it has no headers.

    A missing report (None, NaN, pandas' NA) reads as empty."""
    if not isinstance(text, str) or not text:
        return ""
    headers = list(_HEADER.finditer(text))
    if not headers:
        return text
    kept = []
    for header, following in zip(headers, headers[1:] + [None], strict=True):
        name = " ".join(header.group(1).upper().split())
        if name in DESCRIPTIVE_SECTIONS:
            kept.append(text[header.end(): following.start() if following else len(text)])
    return "\n\n".join(kept) if kept else text


def split_sentences(text: str) -> list[str]:
    """Sentences of a report body, whitespace-normalised, empty pieces dropped."""
    sentences = (" ".join(piece.split()) for piece in _SENTENCE_BREAK.split(text))
    return [sentence for sentence in sentences if any(ch.isalpha() for ch in sentence)]
