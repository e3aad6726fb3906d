"""How reports name each cxrsynth finding: one lexicon, shared by the rule parser and RadGraph.

Patterns run on normalised text (``normalise``: lower case, hyphens and slashes as spaces, single
spaces). Each Term is a phrase radiologists use for the finding, with what the phrase itself
implies: a *sign* such as blunting of a costophrenic angle suggests an effusion without proving it
(uncertain unless the report names the effusion), a *normal* phrase such as "heart size is
normal" states the finding absent, and a few words carry a size ("mass" is a lesion over 3 cm).
``exclusions`` are look-alike phrases that are other findings (pericardial effusion, breast mass).
An opacity is a description, not a diagnosis: "airspace opacity" is not consolidation (as CheXpert
keeps Lung Opacity apart from Consolidation) and "infiltrate" is left out, while "airspace disease"
and pneumonia are consolidation, and "nodular opacity" is a nodule.
Open-i's de-identification leaves ``xxxx`` in place of some words; patterns allow it where a
noun such as "angle" is often replaced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cxrsynth.tasks.findings import ABSENT, PRESENT, UNCERTAIN


@dataclass(frozen=True)
class Term:
    pattern: str
    state: int = PRESENT  # the state the phrase states before negation and hedging
    severity: str | None = None  # a size the phrase itself implies
    fixed: bool = False  # the phrase carries its own state; negation and hedging do not apply
    descriptive: bool = False  # describes a shadow, not a diagnosis: another finding named as its cause replaces it


def normalise(text: str) -> str:
    text = text.lower().replace("-", " ").replace("/", " ")
    text = re.sub(r"\b(left|right) and (left|right)\b", "bilateral", text)
    return " ".join(text.split())


# Words that may stand between "heart" and "enlarged" in one statement about heart size.
_HEART_GAP = (
    r"(?: (?:is|are|was|remains?|appears?|again|also|still|now|noted|seen|to|be|likely|probably|not|"
    r"slightly|mildly|moderately|markedly|severely|minimally|massively|somewhat|borderline|stably|"
    r"significantly|considerably|substantially|grossly|at|least|size|in|xxxx|mild|moderate|marked)){0,6}"
)
_HEART = r"(?:heart(?: size)?|cardiac (?:silhouette|shadow|contour|size)|cardio ?mediastinal silhouette)"
_ANGLE = r"(?: (?:angles?|sulcus|sulci|recess(?:es)?|xxxx))?"
_QUANTITY = r"(?:opacit(?:y|ies)|opacification|densit(?:y|ies)|lesions?|foc(?:us|i)|shadows?)"
# air and fluid in the pleural space: both a pneumothorax and an effusion ("hydro-pneumothorax" after normalise)
_HYDROPNEUMOTHORAX = r"hydro ?pn(?:eu|ue)mothora(?:x|ces)"

TERMS: dict[str, tuple[Term, ...]] = {
    "cardiomegaly": (
        Term(r"cardiomegaly"),
        Term(r"cardiac enlargement"),
        Term(r"enlarge(?:d|ment of the)(?: \w+)? " + _HEART),
        Term(_HEART + _HEART_GAP + r" (?:enlarged|large|enlargement)"),
        Term(r"increased? in (?:the )?(?:size of the (?:heart|cardiac silhouette)|(?:heart|cardiac) size)"),
        Term(r"borderline (?:heart|cardiac) size", severity="mild"),
        Term(_HEART + r"(?: and [a-z ]{3,40}?)? (?:is |are |appears? |remains? )?(?:within |at )?(?:the )?"
             r"(?:normal|upper limits? of normal|top normal|top of normal|unremarkable)", state=ABSENT, fixed=True),
        Term(r"normal (?:size )?(?:heart|cardiac silhouette|cardiomediastinal silhouette|cardiac size)",
             state=ABSENT, fixed=True),
        Term(r"heart (?:is )?(?:of )?normal (?:in )?size", state=ABSENT, fixed=True),
    ),
    "pleural_effusion": (
        Term(_HYDROPNEUMOTHORAX),
        Term(r"pleural (?:or|and|and or) pericardial effusions?"),
        Term(r"(?:pleural )?effusions?"),
        Term(r"pleural fluid"),
        Term(r"hydrothorax|hemothorax"),
        Term(r"blunt(?:ing|ed) (?:of )?(?:the )?(?:\w+ ){0,4}?costophrenic" + _ANGLE, state=UNCERTAIN, severity="mild"),
        Term(r"costophrenic" + _ANGLE + r"(?: \w+){0,3}? (?:is |are )?blunt(?:ed|ing)",
             state=UNCERTAIN, severity="mild"),
    ),
    "pneumothorax": (
        Term(_HYDROPNEUMOTHORAX),
        Term(r"pn(?:eu|ue)mothora(?:x|ces)"),
        Term(r"ptx"),
        Term(r"(?:intra ?)?pleural (?:air|gas)(?: collections?)?"),
        Term(r"(?:air|gas) (?:collection )?(?:is |are )?(?:in|within) the (?:\w+ ){0,2}?pleural (?:space|cavity)"),
    ),
    "nodule": (
        Term(r"nodules?"),
        Term(r"nodular " + _QUANTITY, descriptive=True),
        Term(r"mass ?like " + _QUANTITY, severity="severe", descriptive=True),
        Term(r"(?:lung|pulmonary|parenchymal|coin) (?:lesions?|masse?s?)"),
        Term(r"mass(?:es)?", severity="severe"),
    ),
    "atelectasis": (
        Term(r"atelecta(?:sis|ses|tic)"),
        Term(r"(?:lobar|lobe|lung|segmental|subsegmental|lingular) collapse"),
        Term(r"collapse of the (?:\w+ ){0,4}?(?:lobes?|lungs?|lingula|segments?)"),
        Term(r"collapsed (?:\w+ )?(?:lung|lobe)"),
    ),
    "consolidation": (
        Term(r"consolidat(?:ion|ions|ive|ed)"),
        Term(r"air ?space (?:disease|process|filling)"),
        Term(r"alveolar (?:filling|process|disease)"),
        Term(r"(?:broncho)?pneumonias?|pneumonic|pneumonitis"),
    ),
}

EXCLUSIONS: dict[str, str] = {
    "pleural_effusion": r"(?:pericardial|joint|knee|elbow|shoulder|hip) effusions?",
    "nodule": (
        r"(?:breast|mediastinal|soft tissue|neck|thyroid|hilar|paratracheal|abdominal|adrenal|renal|liver|hepatic|"
        r"pelvic|axillary|chest wall|mediastinum) (?:\w+ )?(?:masse?s?|nodules?|lesions?)|"
        r"mass effect|lymph nodes?|nipple"
    ),
}


# What a finding-like shadow turns out to be when a report explains it away ("nodular density ... represents a
# nipple shadow", "apparent pneumothorax is a skin fold"): look-alikes that are not cxrsynth findings. A granuloma is
# not among them: "nodule, likely a granuloma" names what the nodule is, not that there is none (as CheXpert reads it).
LOOK_ALIKES = (
    r"nipple(?: shadows?| markers?)?|(?:(?:healing|healed|old|acute|displaced) )?(?:rib |clavicular |clavicle )?"
    r"fractures?|artifacts?|artefacts?|skin folds?|(?:overlapping|overlying|superimposed|confluence of|confluent|"
    r"crossing) (?:\w+ ){0,2}?(?:vessels|vascular \w+|structures?|shadows?|soft tissues?|markings|ribs)|"
    r"(?:end on )?(?:vessels?|vascular shadows?) (?:seen )?end on|end on vessels?|"
    r"costochondral (?:calcifications?|cartilage|junctions?)|(?:calcified )?costal cartilages?|bone islands?|"
    r"osteophytes?|calcified lymph nodes?|"
    r"(?:ekg|ecg|monitor|telemetry) (?:leads?|wires?|electrodes?|pads?)|(?:external|overlying) (?:objects?|devices?)|"
    r"breast (?:tissue|shadows?)|summation(?: shadows?)?|(?:epicardial |pericardial )?fat pads?|pericardial fat|"
    r"scars?|scarring|pleural (?:thickening|plaques?)|hair|braids?|clothing|button"
)
_LOOK_ALIKES = re.compile(rf"\b(?:{LOOK_ALIKES})\b")


def find_look_alikes(text: str) -> list[tuple[int, int]]:
    """Spans of the look-alikes (LOOK_ALIKES) in normalised text, in reading order."""
    return [match.span() for match in _LOOK_ALIKES.finditer(text)]


@dataclass(frozen=True)
class Mention:
    finding: str
    start: int
    end: int
    term: Term


def _compile(terms: tuple[Term, ...]) -> re.Pattern:
    return re.compile("|".join(f"(?P<t{i}>\\b(?:{term.pattern})\\b)" for i, term in enumerate(terms)))


_COMPILED = {finding: (_compile(terms), terms) for finding, terms in TERMS.items()}
_EXCLUDED = {finding: re.compile(rf"\b(?:{pattern})\b") for finding, pattern in EXCLUSIONS.items()}


def find_mentions(text: str) -> list[Mention]:
    """Every finding mention in normalised text, in reading order."""
    mentions = []
    for finding, (pattern, terms) in _COMPILED.items():
        excluded = [m.span() for m in _EXCLUDED[finding].finditer(text)] if finding in _EXCLUDED else []
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(s <= start and end <= e for s, e in excluded):
                continue
            term = terms[int(match.lastgroup[1:])]
            mentions.append(Mention(finding, start, end, term))
    return sorted(mentions, key=lambda m: (m.start, m.end))
