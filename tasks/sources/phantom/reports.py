"""Radiology reports for phantom studies, and the CheXpert labels a labeler would derive from them.

Each study gets a MIMIC-style report (``FINDINGS:`` and ``IMPRESSION:`` sections) built from
several templates and synonyms per finding: positives with laterality, location and size words,
hedged positives ("Possible small left apical pneumothorax.", "cannot be excluded", "may
represent"), explicit negatives ("No pneumothorax.", sometimes several in one sentence), a
resolved finding of a prior study ("Interval resolution of ..."), and normal statements.

What the report says of each finding (``StudyReport.states``: 1 present, -1 uncertain, 0 absent,
None not mentioned) is the ground truth for a report parser; the label CSV holds the same states,
except that ``report_only_fraction`` of the positives are left blank there, as a labeler misses
some findings that only the report names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrsynth.tasks.findings import ABSENT, FINDINGS, PRESENT, UNCERTAIN
from cxrsynth.tasks.params import PhantomParams
from cxrsynth.tasks.sources.chexpert import CHEXPERT_FINDINGS
from cxrsynth.tasks.sources.phantom.study import PATIENT_FINDINGS, REPORT_STREAM, Lesion, Study

# How often a radiologist states each finding's absence in words.
NEGATION_RATE = {"cardiomegaly": 0.75, "pleural_effusion": 0.7, "pneumothorax": 0.65,
                 "nodule": 0.12, "atelectasis": 0.08, "consolidation": 0.6}
# How often a finding seen on the prior study and gone now is reported as resolved.
RESOLUTION_RATE = 0.7

CHEXPERT_COLUMNS: tuple[str, ...] = (
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
    "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
    "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
)
# cxrsynth finding -> its CheXpert column: the inverse of the CheXpert reader's own mapping.
CHEXPERT_COLUMN = {finding: column for column, finding in CHEXPERT_FINDINGS.items()}

INDICATIONS = ("cough", "shortness of breath", "chest pain", "fever", "dyspnea on exertion",
               "hypoxia", "productive cough and fever", "suspected pneumonia", "weakness", "fall",
               "history of smoking", "palpitations")


@dataclass
class StudyReport:
    text: str
    states: dict[str, int | None]  # what the report says, per finding
    labels: dict[str, int | None]  # what the label CSV says, per finding
    edema_negated: bool  # the report says "No pulmonary edema." (CheXpert Edema 0.0)


def write_report(study: Study, prior: Study | None, config: PhantomParams) -> StudyReport:
    """The report of one study (``prior``: the patient's previous study, if any)."""
    rng = study.rng(config.seed, REPORT_STREAM, study.study_index)
    states: dict[str, int | None] = {}
    sentences: list[tuple[str, str]] = []  # (finding or section key, sentence)
    impression: list[str] = []
    negated: list[str] = []
    for finding in FINDINGS:
        lesion = study.lesion(finding)
        before = prior.lesion(finding) if prior is not None else None
        if lesion is not None:
            uncertain = rng.random() < config.uncertain_fraction
            states[finding] = UNCERTAIN if uncertain else PRESENT
            words = _Words(rng, lesion)
            unchanged = before is not None and not uncertain and rng.random() < 0.5
            sentences.append((finding, _describe(words, uncertain, unchanged)))
            impression.append(_summarise(words, uncertain))
        elif before is not None and finding not in PATIENT_FINDINGS and rng.random() < RESOLUTION_RATE:
            states[finding] = ABSENT
            sentences.append((finding, _resolved(_Words(rng, before))))
        elif rng.random() < NEGATION_RATE[finding]:
            states[finding] = ABSENT
            negated.append(finding)
        else:
            states[finding] = None
    sentences += _negations(rng, negated)
    positives = [f for f, s in states.items() if s in (PRESENT, UNCERTAIN)]
    edema_negated = rng.random() < 0.3
    sentences += _normal_statements(rng, positives, edema_negated)
    labels = {
        finding: (None if state in (PRESENT, UNCERTAIN) and rng.random() < config.report_only_fraction else state)
        for finding, state in states.items()
    }
    text = _layout(rng, study, prior, _ordered(sentences), impression or [_pick(rng, _NORMAL_IMPRESSIONS)])
    return StudyReport(text=text, states=states, labels=labels, edema_negated=edema_negated)


def label_row(study: Study, report: StudyReport, path: str) -> dict[str, object]:
    """One labels.csv row in CheXpert's format: 1.0 / 0.0 / -1.0, None for blank."""
    row: dict[str, object] = {column: None for column in CHEXPERT_COLUMNS}
    row.update({"Path": path, "Sex": study.sex, "Age": study.age, "Frontal/Lateral": "Frontal", "AP/PA": "PA"})
    for finding, column in CHEXPERT_COLUMN.items():
        state = report.labels[finding]
        row[column] = None if state is None else float(state)
    opacity = [report.labels[f] for f in ("consolidation", "atelectasis") if report.labels[f] in (PRESENT, UNCERTAIN)]
    if opacity:  # CheXpert's parent class of airspace findings
        row["Lung Opacity"] = float(PRESENT if PRESENT in opacity else UNCERTAIN)
    if report.edema_negated:
        row["Edema"] = 0.0
    if not study.lesions:
        row["No Finding"] = 1.0
    return row


# ----------------------------------------------------------------------------------------------
# Words
# ----------------------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


_SIZE = {"mild": ("small", "small", "small", "tiny"), "moderate": ("moderate",),
         "severe": ("large", "large", "large", "massive")}
_ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}
_ZONE = {
    "upper": ("{side} upper lobe", "{side} upper lung zone", "{side} upper lung"),
    "middle": ("{side} mid lung zone", "{side} mid lung", "{side} middle lung zone"),
    "lower": ("{side} lower lobe", "{side} lower lung zone", "{side} lower lung"),
}
_MARGIN = {"smooth": ("well-circumscribed", "smoothly marginated", "smooth"),
           "lobulated": ("lobulated",), "spiculated": ("spiculated",)}


class _Words:
    """The words one report uses for one lesion, drawn once so findings and impression agree."""

    def __init__(self, rng: np.random.Generator, lesion: Lesion):
        self.rng, self.lesion = rng, lesion
        d = lesion.detail
        self.size = _pick(rng, _SIZE[lesion.severity]) if lesion.severity else ""
        self.side = lesion.laterality or ""
        if lesion.finding == "pneumothorax":  # before the noun ("left apical") or after it
            self.where = f"{self.side} {lesion.location}"
            self.where_after = (f"at the {self.side} apex" if lesion.location == "apical"
                                else f"along the {self.side} lateral chest wall")
        elif lesion.finding in ("nodule", "consolidation"):
            self.where = _pick(rng, _ZONE[lesion.location]).format(side=self.side)
        elif lesion.finding == "atelectasis" and d.get("kind") == "lobar":
            self.where = d["lobe"]
        else:
            self.where = ""
        if lesion.finding == "nodule":
            mm = d["size_mm"]
            self.measure = _pick(rng, (f"{mm} mm", f"{mm}-mm", f"{mm / 10:.1f} cm"))
            self.margin = _pick(rng, _MARGIN[d["margin"]])


def _describe(w: _Words, uncertain: bool, unchanged: bool) -> str:
    """The FINDINGS sentence of a present or hedged lesion."""
    options = _UNCERTAIN[w.lesion.finding](w) if uncertain else _PRESENT[w.lesion.finding](w)
    sentence = _pick(w.rng, options)
    if unchanged:
        sentence = sentence.rstrip(".") + _pick(w.rng, (", unchanged from the prior study.",
                                                        ", stable compared with the prior exam."))
    return _sentence(sentence)


def _summarise(w: _Words, uncertain: bool) -> str:
    """The IMPRESSION line of a lesion: shorter, same words and hedging."""
    short = _SHORT[w.lesion.finding](w)
    if uncertain:
        short = _pick(w.rng, (f"possible {short}", f"{short} cannot be excluded", f"questionable {short}"))
    follow_up = " CT is recommended for further evaluation." if w.lesion.finding == "nodule" else ""
    return _sentence(short) + follow_up


def _effusion_phrase(w: _Words) -> str:
    if w.side == "bilateral":
        return _pick(w.rng, (f"{w.size} bilateral pleural effusions", f"bilateral {w.size} pleural effusions"))
    side = _pick(w.rng, (w.side, f"{w.side}-sided"))
    return _pick(w.rng, (f"{w.size} {side} pleural effusion", f"{w.size} {side} effusion"))


def _angles(w: _Words) -> str:
    return "costophrenic angles bilaterally" if w.side == "bilateral" else f"{w.side} costophrenic angle"


def _atelectasis_phrase(w: _Words) -> str:
    if w.lesion.detail["kind"] == "lobar":
        return _pick(w.rng, (f"{w.where} atelectasis", f"{w.where} collapse"))
    base = "bibasilar" if w.side == "bilateral" else _pick(w.rng, (f"{w.side} basilar", f"{w.side} basal"))
    kind = _pick(w.rng, ("plate-like", "linear", "subsegmental", ""))
    return f"{_pick(w.rng, ('mild', 'minimal'))} {base} {kind} atelectasis"


_PRESENT = {
    "cardiomegaly": lambda w: (
        f"the heart is {_ADVERB[w.lesion.severity]} enlarged.",
        f"{w.lesion.severity} cardiomegaly.",
        f"there is {w.lesion.severity} enlargement of the cardiac silhouette.",
        f"the cardiac silhouette is {_ADVERB[w.lesion.severity]} enlarged.",
    ),
    "pleural_effusion": lambda w: (
        f"{_effusion_phrase(w)}.",
        f"there is a {_effusion_phrase(w)}." if w.side != "bilateral" else f"there are {_effusion_phrase(w)}.",
        f"{_effusion_phrase(w)} with blunting of the costophrenic angle"
        + ("s." if w.side == "bilateral" else "."),
        f"layering {_effusion_phrase(w)}.",
        f"{_effusion_phrase(w)} at the lung base" + ("s." if w.side == "bilateral" else "."),
    ) + ((  # a labeler reads a blunted angle alone as a small effusion
        f"blunting of the {_angles(w)}.",
    ) if w.lesion.severity == "mild" else ()),
    "pneumothorax": lambda w: (
        f"{w.size} {w.where} pneumothorax.",
        f"{w.size} {w.side} pneumothorax {w.where_after}.",
        f"there is a {w.size} {w.side} pneumothorax {w.where_after}.",
        f"a visceral pleural line is seen {w.where_after}, consistent with a {w.size} pneumothorax.",
    ),
    "nodule": lambda w: (
        f"{w.measure} {w.margin} nodule in the {w.where}.",
        f"there is a {w.measure} {w.margin} nodular opacity projecting over the {w.where}.",
        f"a {w.margin} {w.measure} nodule is seen in the {w.where}.",
    ),
    "atelectasis": lambda w: (
        (f"{_atelectasis_phrase(w)}.",
         f"volume loss and opacity in the {w.where}, consistent with {_atelectasis_phrase(w)}.",
         f"there is {_atelectasis_phrase(w)}.")
        if w.lesion.detail["kind"] == "lobar" else
        (f"{_atelectasis_phrase(w)}.",
         f"linear opacity at the {'lung bases' if w.side == 'bilateral' else w.side + ' lung base'}, "
         f"consistent with {_atelectasis_phrase(w)}.",
         f"there is {_atelectasis_phrase(w)}.")
    ),
    "consolidation": lambda w: (
        f"patchy consolidation in the {w.where}.",
        f"focal consolidation in the {w.where}.",
        f"there is airspace consolidation in the {w.where}" + _pick(w.rng, (".", " with air bronchograms.")),
        f"patchy airspace opacity in the {w.where}, consistent with consolidation.",
    ),
}

_UNCERTAIN = {
    "cardiomegaly": lambda w: (
        f"possible {w.lesion.severity} cardiomegaly.",
        f"the heart may be {_ADVERB[w.lesion.severity]} enlarged.",
        f"{w.lesion.severity} cardiomegaly cannot be excluded.",
    ),
    "pleural_effusion": lambda w: (
        f"possible {_effusion_phrase(w)}.",
        f"blunting of the costophrenic angle{'s' if w.side == 'bilateral' else ''} "
        f"may represent {_effusion_phrase(w)}.",
        f"a {_effusion_phrase(w)} cannot be excluded." if w.side != "bilateral"
        else f"{_effusion_phrase(w)} cannot be excluded.",
        f"questionable {_effusion_phrase(w)}.",
    ),
    "pneumothorax": lambda w: (
        f"possible {w.size} {w.where} pneumothorax.",
        f"subtle lucency {w.where_after} may represent a {w.size} pneumothorax.",
        f"a {w.size} {w.where} pneumothorax cannot be excluded.",
    ),
    "nodule": lambda w: (
        f"possible {w.measure} nodule in the {w.where}.",
        f"a {w.measure} nodular density in the {w.where} may represent a pulmonary nodule.",
        f"a {w.measure} {w.margin} nodule in the {w.where} cannot be excluded.",
    ),
    "atelectasis": lambda w: (
        f"possible {_atelectasis_phrase(w)}.",
        f"opacity in the {w.where or ('lung bases' if w.side == 'bilateral' else w.side + ' lung base')} "
        f"may represent atelectasis.",
        f"{_atelectasis_phrase(w)} cannot be excluded.",
    ),
    "consolidation": lambda w: (
        f"patchy opacity in the {w.where} may represent consolidation.",
        f"possible consolidation in the {w.where}.",
        f"early consolidation in the {w.where} cannot be excluded.",
    ),
}

_SHORT = {
    "cardiomegaly": lambda w: _pick(w.rng, (f"{w.lesion.severity} cardiomegaly", "cardiomegaly")),
    "pleural_effusion": _effusion_phrase,
    "pneumothorax": lambda w: f"{w.size} {w.where} pneumothorax",
    "nodule": lambda w: f"{w.measure} {w.where} nodule",
    "atelectasis": _atelectasis_phrase,
    "consolidation": lambda w: f"{w.where} consolidation",
}


def _resolved(w: _Words) -> str:
    name = {"pleural_effusion": "pleural effusion", "pneumothorax": "pneumothorax", "atelectasis": "atelectasis",
            "consolidation": "consolidation"}[w.lesion.finding]
    side = "bilateral" if w.side == "bilateral" else w.side
    return _sentence(_pick(w.rng, (f"interval resolution of the previously seen {side} {name}.",
                                   f"the previously noted {side} {name} has resolved.")))


_NEGATION = {
    "cardiomegaly": ("heart size is normal.", "the cardiomediastinal silhouette is within normal limits.",
                     "normal heart size.", "the heart is not enlarged.", "no cardiomegaly."),
    "pleural_effusion": ("no pleural effusion.", "there is no pleural effusion.", "no effusion."),
    "pneumothorax": ("no pneumothorax.", "there is no pneumothorax.", "no evidence of pneumothorax."),
    "nodule": ("no pulmonary nodules.", "no suspicious pulmonary nodule.", "no focal nodule or mass."),
    "atelectasis": ("no atelectasis.", "no evidence of atelectasis."),
    "consolidation": ("no focal consolidation.", "no consolidation.", "there is no focal airspace consolidation."),
}
_LIST_NAME = {"consolidation": "focal consolidation", "pleural_effusion": "pleural effusion",
              "pneumothorax": "pneumothorax"}


def _negations(rng: np.random.Generator, negated: list[str]) -> list[tuple[str, str]]:
    """Negative statements; consolidation, effusion and pneumothorax often share one sentence."""
    listable = [f for f in negated if f in _LIST_NAME]
    sentences = []
    if len(listable) >= 2 and rng.random() < 0.6:
        names = [_LIST_NAME[f] for f in listable]
        joined = ", ".join(names[:-1]) + (", or " if len(names) > 2 else " or ") + names[-1]
        sentences.append((listable[0], _sentence(_pick(rng, (f"no {joined}.", f"there is no {joined}.",
                                                             f"no evidence of {joined}.")))))
        negated = [f for f in negated if f not in listable]
    return sentences + [(f, _sentence(_pick(rng, _NEGATION[f]))) for f in negated]


def _normal_statements(rng: np.random.Generator, positives: list[str], edema_negated: bool) -> list[tuple[str, str]]:
    statements = []
    if not set(positives) - {"cardiomegaly"} and rng.random() < 0.7:
        statements.append(("lungs", _sentence(_pick(rng, ("lungs are clear.", "the lungs are well expanded and clear.",
                                                           "the lungs are clear bilaterally.")))))
    if rng.random() < 0.5:
        statements.append(("hila", _sentence(_pick(rng, ("the mediastinal and hilar contours are normal.",
                                                         "hilar contours are unremarkable.")))))
    if edema_negated:
        statements.append(("edema", _sentence(_pick(rng, ("no pulmonary edema.", "there is no pulmonary edema.")))))
    if rng.random() < 0.6:
        statements.append(("bones", _sentence(_pick(rng, ("no acute osseous abnormality.",
                                                          "the visualized osseous structures are unremarkable.",
                                                          "osseous structures are intact.")))))
    return statements


# A radiologist's usual order: lungs, pleura, heart and mediastinum, bones.
_ORDER = ("lungs", "consolidation", "nodule", "atelectasis", "edema", "pleural_effusion", "pneumothorax",
          "cardiomegaly", "hila", "bones")


def _ordered(sentences: list[tuple[str, str]]) -> list[str]:
    return [text for _, text in sorted(sentences, key=lambda item: _ORDER.index(item[0]))]


_NORMAL_IMPRESSIONS = ("No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
                       "Normal chest radiograph.", "No radiographic evidence of acute cardiopulmonary disease.")


def _layout(rng: np.random.Generator, study: Study, prior: Study | None, findings: list[str],
            impression: list[str]) -> str:
    person = "woman" if study.sex == "Female" else "man"
    comparison = "___." if prior is not None else _pick(rng, ("None.", "None available."))
    return (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PA)\n\n"
        f" INDICATION:  ___ year old {person} with {_pick(rng, INDICATIONS)}.\n\n"
        " TECHNIQUE:  Single frontal view of the chest.\n\n"
        f" COMPARISON:  {comparison}\n\n"
        " FINDINGS: \n\n"
        f" {' '.join(findings)}\n\n"
        " IMPRESSION: \n\n"
        f" {' '.join(impression)}\n"
    )
