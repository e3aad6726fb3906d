"""What a phantom patient is made of: anatomy, acquisitions, studies, lesions, and the random streams.

A patient is sampled from ``(seed, collection, patient index)`` alone (``sampling.py``), so chunks of
patients can be generated in parallel in any order; each part of a patient draws from its own stream
(``rng_for``), so one draw never shifts another. Each collection (training, test, reserve) has streams
and patient numbers of its own, so no patient of one is ever a patient of another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SITES: tuple[str, ...] = ("SITE-A", "SITE-B")
SIDES = {"right": -1.0, "left": 1.0}  # patient side -> sign of x on a PA image

# Independent random streams per patient, so one draw never shifts another (see rng_for).
ANATOMY_STREAM, STUDY_STREAM, FINDINGS_STREAM = 0, 1, 2
REPORT_STREAM, EXPORT_STREAM = 3, 4  # used by reports.py and writer.py

# Findings that belong to the patient (same in every study), the rest are drawn per study.
PATIENT_FINDINGS = ("cardiomegaly", "nodule")


@dataclass(frozen=True)
class SiteProfile:
    """How a site's detector and technique show the same body."""

    exposure: float  # centre of the characteristic curve, in attenuation units
    latitude: float  # width of the curve: larger = flatter, lower contrast
    photons: float  # quanta per pixel at zero attenuation: fewer = noisier
    blur_px: float  # detector point spread (sigma) at 256 px


SITE_PROFILES: dict[str, SiteProfile] = {
    "SITE-A": SiteProfile(exposure=1.05, latitude=0.36, photons=40000.0, blur_px=0.7),
    "SITE-B": SiteProfile(exposure=1.2, latitude=0.46, photons=12000.0, blur_px=1.0),
}


@dataclass
class Lesion:
    """One finding in one study: what the report may say about it and how to draw it."""

    finding: str
    laterality: str | None = None  # left / right / bilateral (tasks.findings.LATERALITIES)
    location: str | None = None  # tasks.findings.LOCATIONS
    severity: str | None = None  # mild / moderate / severe
    detail: dict = field(default_factory=dict)  # finding-specific words and geometry


@dataclass(frozen=True)
class Anatomy:
    """A patient's build: fixed across their studies."""

    body_width: float
    body_depth: float  # soft-tissue attenuation scale (habitus)
    lung_width: float
    lung_height: float
    heart_ctr: float  # cardiothoracic ratio of the normal heart
    heart_tilt: float  # radians
    dome_right: float  # y of the right hemidiaphragm dome at mid inspiration
    dome_left_drop: float  # left dome lies this much lower
    rib_spacing: float
    breast: float  # 0 for men
    stomach_bubble: float  # 0: none
    vessel_seed: int
    texture_seed: int


@dataclass(frozen=True)
class Acquisition:
    """One exposure: site technique plus this study's positioning and jitter."""

    site: str
    exposure: float
    latitude: float
    photons: float
    blur_px: float
    scale: float
    shift_x: float
    shift_y: float
    tilt: float  # radians, in-plane
    rotation: float  # mediastinum offset from patient obliquity, normalised units
    inspiration: float  # diaphragm shift, positive = deeper breath (lower domes)
    noise_seed: int


# The collections the phantom stage writes; ingest gives the test and reserve ones the splits of their names.
TRAINING_NAME, TEST_NAME, RESERVE_NAME = "train", "test", "reserve"
TEST_STREAM, RESERVE_STREAM = 1, 2  # their random streams (Collection.stream)


@dataclass(frozen=True)
class Collection:
    """One export of the phantom hospital: its own random streams and its own range of patient numbers."""

    name: str = TRAINING_NAME  # train (the main export), test or reserve
    stream: int = 0  # 0: the training collection, whose streams are those it always had; others differ
    first_number: int = 1  # patient number of index 0; the ranges of two collections never overlap

    @property
    def folder(self) -> str:
        """Where it lies under the phantom folder: the training collection at its root, the others in sub-folders."""
        return "" if self.name == TRAINING_NAME else self.name


TRAINING = Collection()


@dataclass
class Study:
    patient_index: int  # 0-based, in its collection's stream
    study_index: int  # 0-based
    sex: str
    age: int
    site: str
    days_from_first: int
    anatomy: Anatomy
    acquisition: Acquisition
    lesions: list[Lesion]
    collection: Collection = TRAINING

    @property
    def patient_number(self) -> int:
        """The patient's number in the export (``PHANTOM-00001``, ``patient00001``): unique across collections."""
        return self.collection.first_number + self.patient_index

    def rng(self, seed: int, *keys: int) -> np.random.Generator:
        """A random stream of this study's patient (see ``rng_for``)."""
        return rng_for(seed, self.patient_index, *keys, stream=self.collection.stream)

    def lesion(self, finding: str) -> Lesion | None:
        return next((lesion for lesion in self.lesions if lesion.finding == finding), None)


def rng_for(seed: int, patient_index: int, *keys: int, stream: int = 0) -> np.random.Generator:
    """The generator of one stream of one patient of a collection: independent of every other patient.

    A collection's ``stream`` is the SeedSequence's spawn key (none for the training collection), which
    NumPy mixes in after zero-padding the entropy, so ``(seed, index, keys)`` of two collections never
    give the same generator."""
    spawn_key = (stream,) if stream else ()
    return np.random.default_rng(np.random.SeedSequence([seed, patient_index, *keys], spawn_key=spawn_key))
