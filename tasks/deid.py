"""De-identification of report text and acquisition sites, applied at ingest before anything is written.

Rule-based: no de-identification library on the registry runs here without downloading a model
(Presidio needs a spaCy model, philter needs NLTK's tagger data, scrubadub's name detectors a NER
model), and a rule set is auditable. Each identifier becomes a typed placeholder (``[DATE]``,
``[TIME]``, ``[ID]``, ``[PHONE]``, ``[EMAIL]``, ``[NAME]``, ``[ADDRESS]``, ``[INSTITUTION]``,
``[AGE]``) in the manner of the public de-identified corpora (MIMIC-CXR's ``___``), so the clinical
words around them, and so report parsing, are untouched. Institution names the collection itself
declares (DICOM ``InstitutionName``, a CSV ``site`` column) are removed verbatim as well, and the
site itself becomes a pseudonym (``site-1``, ...) whose mapping is never written.

The rules are tuned on ``tests/deid_corpus.py``, a corpus of radiology reports with planted
identifiers; what they cannot catch (a bare name with no title, role or degree beside it) is said
in that corpus too.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence

from cxrsynth.tasks.sources.base import SourceRecord

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_WORD = r"[A-Z][a-zA-Z'\-]+"
_INITIAL = r"[A-Z]\.?"
# A person's name: capitalised words and initials, "Smith, John" and "J. R. Smith" alike.
_TITLES = r"(?:Dr|Doctor|Drs|Mr|Mrs|Ms|Miss|Mx|Prof|Professor|Sister|Nurse)\.?"
# A title left in place by an earlier rule ("Dr. [NAME]") is not itself a name.
_PERSON = rf"(?:(?!{_TITLES}[ \t])(?:{_WORD}|{_INITIAL})(?:,?[ \t]+(?:{_WORD}|{_INITIAL})){{0,3}})"
_ROLES = (
    r"(?:(?:electronically\s+)?(?:signed|dictated|transcribed|reported|read|verified|approved|interpreted|"
    r"reviewed|discussed|called|communicated)(?:\s+(?:by|with|to))|attending|radiologist|resident|fellow|"
    r"technologist|tech|physician|referring(?:\s+(?:physician|doctor|provider))?|ordering(?:\s+(?:physician|provider))?|"
    r"provider|patient(?:\s+name)?|name|cc|author|reader)"
)
_DEGREES = r"(?:M\.?D|D\.?O|Ph\.?D|MBBS|FRCR|FRCPC|RT|R\.?T\.?\(R\)|PA-C|NP|RN|MRCP)\.?"
_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Way|Court|Ct|Place|Pl|Terrace|Parkway|Pkwy|"
    r"Highway|Hwy|Square|Sq)\.?"
)
_INSTITUTION_WORDS = (
    r"(?:Hospital|Medical\s+Cent(?:er|re)|Health(?:\s+(?:System|Centre|Center|Care))?|Clinic|Infirmary|Institute|"
    r"Imaging(?:\s+Cent(?:er|re))?|Radiology(?:\s+(?:Associates|Group|Department))|University|College|Hospice|Sanatorium)\b"
)

# (placeholder, pattern), applied in order: the most specific shapes first, so a phone number is not
# taken for a record number nor a date's digits for a time.
RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (placeholder, re.compile(pattern, flags))
    for placeholder, pattern, flags in (
        ("[EMAIL]", r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b", 0),
        ("[ID]", r"\b(?:https?://|www\.)\S+", re.I),
        ("[DATE]", r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b|\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b", 0),
        ("[DATE]", rf"\b\d{{1,2}}(?:st|nd|rd|th)?(?:\s+of)?\s+{_MONTH},?\s+\d{{2,4}}\b", re.I),
        ("[DATE]", rf"\b{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{2,4}}\b", re.I),
        ("[DATE]", rf"\b{_MONTH}\s+\d{{4}}\b|\b(?:19|20)\d{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b", re.I),
        ("[PHONE]", r"(?<![\w])(?:\+?\d{1,3}[\s.-]?)?\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?:\s*(?:x|ext\.?)\s*\d{1,5})?\b", re.I),
        ("[PHONE]", r"(?<![\w])\+?0\d{1,4}[\s-]\d{3,4}[\s-]\d{3,4}\b", 0),
        ("[PHONE]", r"\b(?:pager|page|beeper|bleep|ext(?:ension)?|tel(?:ephone)?|phone|fax)\.?\s*(?:no\.?|number|#)?\s*:?\s*\d[\d\s.-]{2,}\d\b", re.I),
        ("[TIME]", r"\b(?:(?:[01]?\d|2[0-3])[:h]|(?:[01]\d|2[0-3])\.)[0-5]\d(?::[0-5]\d)?(?:\s*(?:[ap]\.?m\.?|hrs?|hours))?"
                   r"(?!\d|\.\d|\s*(?:mm|cm|m|ml|%|x)\b)", re.I),
        ("[TIME]", r"\b(?:1[0-2]|0?[1-9])\s*[ap]\.?m\.?(?!\w)", re.I),
        ("[ID]", r"\b(?:MRN|medical\s+record(?:\s+(?:number|no))?|record\s*(?:number|no|#)|accession(?:\s+(?:number|no))?|acc|"
                 r"account|encounter|visit|order|requisition|exam(?:ination)?\s+(?:number|no|id|#)|study\s+(?:number|no|id|#)|"
                 r"patient\s+(?:id|number|no)|NHS\s+(?:number|no)|SSN|ID)\.?\s*(?:number|no\.?|#)?\s*[:#]?\s*[A-Z]*\d[\w-]{2,}", re.I),
        ("[ID]", r"\b\d{3}-\d{2}-\d{4}\b|\b[A-Z]{0,4}\d{6,}[A-Z]*\b|\b(?=[A-Z\d-]*\d{3,})[A-Z]{1,4}-?\d[\dA-Z-]{4,}\b", 0),
        ("[ADDRESS]", rf"\b\d{{1,5}}(?:\s+{_WORD}){{1,4}}\s+{_STREET}(?:,?\s+(?:Suite|Apt|Unit|Floor)\s*\w+)?"
                      rf"(?:,\s*{_WORD}(?:\s+{_WORD})?)?(?:,?\s+[A-Z]{{2}})?(?:\s+\d{{5}}(?:-\d{{4}})?)?", 0),
        ("[ADDRESS]", r"\b(?:P\.?O\.?\s+Box|Postbox)\s+\d+\b|\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b|\b[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b", 0),
        ("[INSTITUTION]", rf"\b(?:(?:St\.?|Saint|Mount|Mt\.?)[ \t]+)?(?:{_WORD}[ \t]+){{0,4}}{_INSTITUTION_WORDS}"
                          rf"(?:[ \t]+of(?:[ \t]+the)?(?:[ \t]+{_WORD}){{1,4}})?", 0),
        ("[INSTITUTION]", rf"\b{_INSTITUTION_WORDS}[ \t]+of(?:[ \t]+the)?(?:[ \t]+{_WORD}){{1,4}}", 0),
        ("[NAME]", rf"\b{_TITLES}[ \t]+{_PERSON}", 0),
        ("[NAME]", rf"(?<![\w\]]){_PERSON},?[ \t]+{_DEGREES}(?![\w])", 0),
        ("[NAME]", rf"(?<![\w\]])(?i:{_ROLES})[ \t]*(?::[ \t]*|(?<=by|to|th)[ \t]+){_PERSON}", 0),
        ("[NAME]", rf"(?i:\b(?:signed|dictated|transcribed|verified|discussed|communicated|called)\s+(?:by|with|to))\s+"
                   rf"{_PERSON}", 0),
        ("[AGE]", r"\b(?:9\d|1[0-4]\d)(?:\s*|-)(?:years?|yrs?|y)(?:\s*|-)old\b|\baged?\s+(?:9\d|1[0-4]\d)\b", re.I),
    )
)
PLACEHOLDERS = tuple(sorted({placeholder for placeholder, _ in RULES}))
_PLACEHOLDER = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))


def scrub(text: str | None, institutions: Iterable[str] = ()) -> str | None:
    """``text`` with every identifier the rules find (and every listed institution name) replaced."""
    if text is None:
        return None
    for name in sorted({n.strip() for n in institutions if n and n.strip()}, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", "[INSTITUTION]", text, flags=re.I)
    for placeholder, pattern in RULES:
        text = pattern.sub(lambda match, p=placeholder: _replace(match, p), text)
    return text


def _replace(match: re.Match[str], placeholder: str) -> str:
    """Keep a role word ("Signed by:") and any placeholder already in the match; replace the rest."""
    found = match.group(0)
    if _PLACEHOLDER.fullmatch(found):
        return found
    if placeholder == "[NAME]":
        lead = re.match(rf"(?i)^[ \t]*(?:{_ROLES}|{_TITLES})[ \t]*[:\-]?[ \t]*", found)
        if lead and lead.end() < len(found):
            return found[: lead.end()] + placeholder
    return placeholder


def site_pseudonyms(sites: Sequence[str | None]) -> dict[str, str]:
    """``site-1``, ``site-2``, ... in order of first appearance (case and spacing ignored); never written out."""
    mapping: dict[str, str] = {}
    numbers: dict[str, str] = {}
    for site in sites:
        if site is None or not site.strip():
            continue
        key = " ".join(site.split()).casefold()
        mapping[site] = numbers.setdefault(key, f"site-{len(numbers) + 1}")
    return mapping


def deidentify(records: list[SourceRecord], header_sites: Sequence[str | None]) -> list[SourceRecord]:
    """Records with scrubbed reports and their site (the index's, else the file header's) as a pseudonym.

    ``header_sites`` holds each record's institution as its image file declares it (None if it does
    not), in record order; every name there and in the records is also struck from every report.
    """
    if len(header_sites) != len(records):
        raise ValueError(f"{len(header_sites)} header sites for {len(records)} records")
    sites = [record.site or header for record, header in zip(records, header_sites, strict=True)]
    names = site_pseudonyms(sites)
    institutions = [name for name in names if name]
    institutions += [header for header in header_sites if header]
    return [
        dataclasses.replace(record, report=scrub(record.report, institutions), site=names.get(site) if site else None)
        for record, site in zip(records, sites, strict=True)
    ]
