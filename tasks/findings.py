"""The findings cxrsynth models, their states and attribute vocabularies: defined once, here."""

from __future__ import annotations

FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural_effusion",
    "pneumothorax",
    "nodule",
    "atelectasis",
    "consolidation",
)

# Manifest encoding of a finding's state (CheXpert convention); null means "not mentioned".
PRESENT, ABSENT, UNCERTAIN = 1, 0, -1
STATE_NAMES = {PRESENT: "present", ABSENT: "absent", UNCERTAIN: "uncertain", None: "not_mentioned"}

LATERALITIES: tuple[str, ...] = ("left", "right", "bilateral")
SEVERITIES: tuple[str, ...] = ("mild", "moderate", "severe")
LOCATIONS: tuple[str, ...] = ("apical", "upper", "middle", "lower", "basal", "lateral", "perihilar")

# Size words in reports map onto the same three-step severity scale.
SIZE_TO_SEVERITY = {"small": "mild", "tiny": "mild", "trace": "mild", "minimal": "mild",
                    "moderate": "moderate", "medium": "moderate",
                    "large": "severe", "massive": "severe", "extensive": "severe"}


# Frontal radiographs (PA and AP alike) are displayed as if facing the patient: the patient's left
# is on the image's right. Every image-side to patient-side mapping in the project goes through here.
def patient_side(column: float, midline: float) -> str:
    """The patient's side ("left" or "right") of image column ``column``, given the body's midline column."""
    return "left" if column >= midline else "right"


def check_finding(name: str, where: str = "") -> str:
    """Return ``name`` if it is a modelled finding, else raise naming it and the choices."""
    if name not in FINDINGS:
        place = f" in {where}" if where else ""
        raise ValueError(f"unknown finding {name!r}{place}; expected one of {', '.join(FINDINGS)}")
    return name


def finding_index(name: str) -> int:
    """Position of a finding in FINDINGS: its bit in mask label maps and its label-vector slot."""
    return FINDINGS.index(check_finding(name))
