"""The Open-i (Indiana University) chest X-ray reports as a parser benchmark.

Each XML file holds one report (``AbstractText`` sections FINDINGS and IMPRESSION) and the MeSH
terms human indexers coded from it (``<MeSH><major>Term/qualifier/...</major>``). Only positive
findings are coded. MESH_TO_FINDING is the one place that says which MeSH majors mean which
cxrsynth findings, and MESH_NOT_MODELLED names the look-alike majors that mean none, with the reason; a rule
may require a qualifier (an enlarged cardiac shadow is cardiomegaly; a
mass counts as a lung lesion only when the indexer placed it in the lung, as CheXpert's
"Lung Lesion" groups nodules and masses).
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.reports.records import merge_lateralities, most_severe

# MeSH major term -> ((cxrsynth finding, qualifier the major must carry or None), ...)
MESH_TO_FINDING: dict[str, tuple[tuple[str, str | None], ...]] = {
    "Cardiomegaly": (("cardiomegaly", None),),
    "Cardiac Shadow": (("cardiomegaly", "enlarged"),),
    "Pleural Effusion": (("pleural_effusion", None),),
    # blood in the pleural space is pleural fluid; the lexicon reads "hemothorax" as an effusion too
    "Hemothorax": (("pleural_effusion", None),),
    # air and fluid in the pleural space: both findings, as the lexicon reads "hydropneumothorax"
    "Hydropneumothorax": (("pneumothorax", None), ("pleural_effusion", None)),
    "Pneumothorax": (("pneumothorax", None),),
    "Nodule": (("nodule", None),),
    "Mass": (("nodule", "lung"),),
    "Pulmonary Atelectasis": (("atelectasis", None),),
    "Consolidation": (("consolidation", None),),
    "Airspace Disease": (("consolidation", None),),
    "Pneumonia": (("consolidation", None),),
}

# MeSH majors near a cxrsynth finding that deliberately map to none, and why. The parser is scored against this
# convention, so a report whose only nodule word is "round opacity" counts as no nodule on both sides.
MESH_NOT_MODELLED: dict[str, str] = {
    "Opacity": "a shadow, not a diagnosis (round, nodular or patchy alike); the lexicon reads bare opacities as no "
               "finding, as CheXpert keeps Lung Opacity apart from Consolidation and Lung Lesion",
    "Density": "a shadow, not a diagnosis, like Opacity",
    "Infiltrate": "an old word for an opacity of any cause; the lexicon leaves it out for the same reason",
    "Lucency": "a darker region, not a diagnosis; the indexers code a pleural air collection as Pneumothorax",
    "Lung, Hyperlucent": "over-inflation or emphysema, not air in the pleural space",
    "Mediastinal Emphysema": "air in the mediastinum (pneumomediastinum), not in the pleural space",
    "Calcified Granuloma": "a healed, calcified granuloma that the report does not call a nodule; the lexicon does "
                           "not read 'granuloma' alone as a nodule",
    "Granuloma": "as Calcified Granuloma",
    "Granulomatous Disease": "healed granulomatous infection, scattered calcified granulomas rather than a lesion",
    "Cicatrix": "a scar, which the lexicon reads as no nodule or atelectasis",
    "Cavitation": "a cavity names no cxrsynth finding by itself; a cavitary nodule or mass is coded Nodule or Mass",
    "Pericardial Effusion": "fluid around the heart, not in the pleural space (the lexicon excludes it too)",
    "Pulmonary Edema": "not a cxrsynth finding",
    "Pulmonary Congestion": "not a cxrsynth finding",
    "Emphysema": "not a cxrsynth finding (and not pleural air)",
}


# Qualifiers the indexers use for side and size, in cxrsynth's vocabulary.
MESH_LATERALITY = {"left": "left", "right": "right", "bilateral": "bilateral"}
MESH_SEVERITY = {"mild": "mild", "small": "mild", "borderline": "mild", "moderate": "moderate",
                 "large": "severe", "severe": "severe", "massive": "severe"}


# The split of the shared reports into a part rules may be tuned on and a held-out part that is only scored, fixed
# before any report was read: a report is held out when the first byte of sha256(SALT + file name) is odd. The
# held-out file names are listed in HELD_OUT_LIST so that the split stays the same whatever the hash library does.
SPLIT_SALT = "cxrsynth-openi-split-v1:"
HELD_OUT_LIST = Path(__file__).resolve().parents[2] / "benchmarks" / "openi_held_out.txt"


def is_held_out(file_name: str) -> bool:
    """Whether an Open-i report file (its name, "1234.xml") falls in the held-out part by the fixed hash rule."""
    return hashlib.sha256((SPLIT_SALT + file_name).encode()).digest()[0] % 2 == 1


def read_held_out(path: str | Path = HELD_OUT_LIST) -> frozenset[str]:
    """The report ids (file stems) of the held-out part, from the committed list (one file name a line)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the held-out list: {exc}") from None
    names = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    bad = [name for name in names if not name.endswith(".xml")]
    if bad:
        raise ValueError(f"{path}: expected Open-i file names ending in .xml, got {bad[0]!r}")
    return frozenset(name[: -len(".xml")] for name in names)


def mesh_findings(majors: list[str]) -> dict[str, dict[str, str | None]]:
    """cxrsynth findings coded by a report's MeSH majors ("Pleural Effusion/left/small", ...), with side and size."""
    found: dict[str, dict[str, list[str]]] = {}
    for major in majors:
        term, *qualifiers = [part.strip().lower() if i else part.strip() for i, part in enumerate(major.split("/"))]
        for finding, required in MESH_TO_FINDING.get(term, ()):
            if required is None or required in qualifiers:
                words = found.setdefault(finding, {"laterality": [], "severity": []})
                words["laterality"] += [MESH_LATERALITY[q] for q in qualifiers if q in MESH_LATERALITY]
                words["severity"] += [MESH_SEVERITY[q] for q in qualifiers if q in MESH_SEVERITY]
    return {finding: {"laterality": merge_lateralities(words["laterality"]), "severity": most_severe(words["severity"])}
            for finding, words in found.items()}


def read_report(path: Path) -> tuple[str, list[str]]:
    """(FINDINGS + IMPRESSION text, MeSH majors) of one Open-i XML file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path}: not a readable Open-i XML report: {exc}") from None
    sections = {node.get("Label"): (node.text or "").strip() for node in root.iter("AbstractText")}
    text = "\n\n".join(sections[label] for label in ("FINDINGS", "IMPRESSION") if sections.get(label))
    majors = [(node.text or "").strip() for node in root.iter("major")]
    return text, majors


def load_openi(folder: str | Path) -> pd.DataFrame:
    """One row per report: ``report_id``, ``text``, per finding a bool (coded by MeSH) and its side and size.

    ``folder`` holds the XML files, or an ``xml/`` folder of them (the layout of ../shared/data/openi-reports).
    """
    folder = Path(folder)
    if (folder / "xml").is_dir():
        folder = folder / "xml"
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise ValueError(f"{folder}: no Open-i XML reports found")
    rows = []
    for path in files:
        text, majors = read_report(path)
        coded = mesh_findings(majors)
        row = {"report_id": path.stem, "text": text}
        for finding in FINDINGS:
            row[finding] = finding in coded
            for attribute in ("laterality", "severity"):
                row[f"{finding}_{attribute}"] = coded.get(finding, {}).get(attribute)
        rows.append(row)
    return pd.DataFrame(rows)
