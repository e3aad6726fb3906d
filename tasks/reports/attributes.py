"""Laterality, location and severity words around a finding mention, in cxrsynth's vocabulary.

Words are read from the mention itself and its attribute window: back to the previous clause
boundary or mention of another finding ("small left effusion"), and forward over a trailing
phrase ("effusion on the left", "pneumothorax at the right apex"). A mention with no side or zone
of its own shares those of the phrase it is coordinated with ("left basilar infiltrate versus
atelectasis", "atelectasis or infiltrate in the right base"), written right after it ("atelectasis
left base"), or of the opacity it explains ("opacity in the left base, likely atelectasis"),
never its size. Lobe abbreviations
carry side and zone (RLL = right lower); plural bases and apices are bilateral. Cardiomegaly has
no side or zone. The vocabularies are
tasks.findings' LATERALITIES, LOCATIONS, SEVERITIES and SIZE_TO_SEVERITY.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cxrsynth.tasks.findings import SIZE_TO_SEVERITY
from cxrsynth.tasks.reports.records import merge_lateralities, most_severe

WHOLE_ORGAN_FINDINGS = frozenset({"cardiomegaly"})

_LOBES = {"rul": ("right", "upper"), "rml": ("right", "middle"), "rll": ("right", "lower"),
          "lul": ("left", "upper"), "lll": ("left", "lower")}

LATERALITY_WORDS: tuple[tuple[str, str], ...] = (
    ("bilateral", r"bilateral(?:ly)?|both|bibasilar|bibasal|biapical|bi basilar|bi apical|left greater than right|"
                  r"right greater than left|bases|apices"),
    ("left", r"left|lingula|lingular|retrocardiac|lt"),
    ("right", r"right|rt"),
)
LOCATION_WORDS: tuple[tuple[str, str], ...] = (
    ("apical", r"apical|apex|apices|biapical|bi apical"),
    ("perihilar", r"perihilar|parahilar|hilar|hila|hilum"),
    ("upper", r"upper"),
    ("middle", r"middle|mid lung|midlung|mid zone|mid chest|lingula|lingular|mid"),
    ("lower", r"lower|retrocardiac"),
    ("basal", r"bases|base|basal|basilar|basally|bibasilar|bibasal|bi basilar|costophrenic|subpulmonic"),
    ("lateral", r"lateral(?! (?:view|image|projection|radiograph|film|exam\w*|study|chest))"),
)
SEVERITY_WORDS: dict[str, str] = {
    **SIZE_TO_SEVERITY,
    "mild": "mild", "mildly": "mild", "slight": "mild", "slightly": "mild", "minimally": "mild",
    "borderline": "mild", "subtle": "mild", "small sized": "mild",
    "moderately": "moderate", "moderate sized": "moderate", "moderate size": "moderate",
    "severe": "severe", "severely": "severe", "marked": "severe", "markedly": "severe",
    "large sized": "severe", "huge": "severe", "sizable": "severe", "sizeable": "severe",
}

_HARD_BREAK = r"[,;:()]|\b(?:with|but|which|that|while|whereas|however)\b"
_COORDINATOR = r"\b(?:and or|and|or|versus|vs)\b"
_CLAUSE_BREAK = re.compile(rf"{_HARD_BREAK}|{_COORDINATOR}")
_HARD = re.compile(_HARD_BREAK)
_ENDS_COORDINATED = re.compile(rf"{_COORDINATOR}\s*$")
_TELEGRAPHIC = re.compile(
    r"^\s*(?:left|right|bilateral)(?: lung)? (?:base|bases|apex|apical|upper|middle|mid|lower|basilar|perihilar|hilar|"
    r"lateral)(?: (?:lobe|lung|zone|lung zone))?(?=\s*(?:[,;:.]|$))"
)
_OPACITY = re.compile(r"\b(?:opacit(?:y|ies)|opacification|densit(?:y|ies)|infiltrates?|air ?space disease)\b")
_STARTS_COORDINATED = re.compile(
    rf"^\s*{_COORDINATOR}\s+(?:[a-z]+\s+){{0,3}}?(?=(?:in|at|on|of|within|involving|along)\b)"
)
_TRAILING = re.compile(r"^\s*(?:is |are |seen |noted |present |identified |again )*"
                       r"(?:in|at|on|of|within|involving|along|over|overlying|projecting over|near)\b")


def _alternation(pairs) -> re.Pattern:
    return re.compile("|".join(rf"(?P<g{i}>\b(?:{p})\b)" for i, (_, p) in enumerate(pairs)))


_LATERALITY = _alternation(LATERALITY_WORDS)
_LOCATION = _alternation(LOCATION_WORDS)
_LOBE = re.compile(r"\b(rul|rml|rll|lul|lll)\b")
_SEVERITY = re.compile(r"\b(" + "|".join(sorted(map(re.escape, SEVERITY_WORDS), key=len, reverse=True)) + r")\b")


@dataclass(frozen=True)
class Attributes:
    laterality: str | None = None
    location: str | None = None
    severity: str | None = None


def attribute_window(text: str, start: int, end: int, previous_end: int, next_start: int) -> str:
    """The words that describe the mention at [start, end) of ``text``: before, the mention, a trailing phrase."""
    before = text[previous_end:start]
    breaks = list(_CLAUSE_BREAK.finditer(before))
    if breaks:
        before = before[breaks[-1].end():]
    after = text[end:next_start]
    cut = _CLAUSE_BREAK.search(after)
    after = after[: cut.start()] if cut else after
    if not _TRAILING.match(after):
        after = ""
    return f"{before} {text[start:end]} {after}"


def coordinated_window(text: str, start: int, end: int) -> str:
    """Words shared through a coordination: "left basilar infiltrate versus [atelectasis]", "[atelectasis] or
    infiltrate in the right base". Empty when the mention is not coordinated."""
    before, after = text[:start], text[end:]
    shared = ""
    coordinated = _ENDS_COORDINATED.search(before)
    if coordinated:
        head = before[: coordinated.start()]
        breaks = list(_HARD.finditer(head))
        shared = head[breaks[-1].end():] if breaks else head
    following = _STARTS_COORDINATED.match(after)
    if following:
        tail = after[following.end():]
        cut = _HARD.search(tail)
        shared += " " + (tail[: cut.start()] if cut else tail)
    return shared


def telegraphic_window(text: str, end: int) -> str:
    """A side and zone written right after the mention without a preposition: "atelectasis left base"."""
    match = _TELEGRAPHIC.match(text[end:])
    return match.group(0) if match else ""


def described_opacity_window(text: str, start: int) -> str:
    """The clause of the opacity a mention explains: "opacity in the left base, likely [atelectasis]"."""
    before = text[:start]
    opacities = list(_OPACITY.finditer(before))
    if not opacities:
        return ""
    last = opacities[-1]
    breaks = [m for m in _HARD.finditer(before) if m.end() <= last.start()]
    clause_start = breaks[-1].end() if breaks else 0
    cut = _HARD.search(before, last.end())
    return before[clause_start: cut.start() if cut else len(before)]


def describe(text: str, start: int, end: int, previous_end: int, next_start: int, finding: str) -> Attributes:
    """Attributes of the mention at [start, end): its own words; else side and zone shared through a coordination,
    written telegraphically after it, or of the opacity it explains; its size always its own."""
    own = read_attributes(attribute_window(text, start, end, previous_end, next_start), finding)
    if own.laterality or own.location or finding in WHOLE_ORGAN_FINDINGS:
        return own
    for window in (coordinated_window(text, start, end), telegraphic_window(text, end),
                   described_opacity_window(text, start)):
        shared = read_attributes(window, finding)
        if shared.laterality or shared.location:
            return Attributes(shared.laterality, shared.location, own.severity)
    return own


def read_attributes(window: str, finding: str) -> Attributes:
    """Laterality, location and severity named in ``window`` (normalised text)."""
    severity = most_severe(SEVERITY_WORDS[m.group(1)] for m in _SEVERITY.finditer(window))
    if finding in WHOLE_ORGAN_FINDINGS:
        return Attributes(severity=severity)
    lobe = _LOBE.search(window)
    sides = [LATERALITY_WORDS[int(m.lastgroup[1:])][0] for m in _LATERALITY.finditer(window)]
    laterality = merge_lateralities(sides + ([_LOBES[lobe.group(1)][0]] if lobe else []))
    location_match = _LOCATION.search(window)
    location = LOCATION_WORDS[int(location_match.lastgroup[1:])][0] if location_match else None
    if lobe and (location is None or lobe.start() < location_match.start()):
        location = _LOBES[lobe.group(1)][1]
    return Attributes(laterality, location, severity)
