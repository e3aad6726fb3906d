"""Sampling a phantom patient: build, site, studies, acquisitions and findings with their attributes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.params import PhantomParams
from cxrsynth.tasks.sources.phantom.study import (
    ANATOMY_STREAM,
    FINDINGS_STREAM,
    PATIENT_FINDINGS,
    SITE_PROFILES,
    SITES,
    STUDY_STREAM,
    TRAINING,
    Acquisition,
    Anatomy,
    Collection,
    Lesion,
    Study,
    rng_for,
)


def sample_patient(config: PhantomParams, index: int, collection: Collection = TRAINING) -> list[Study]:
    """Every study of patient ``index`` (0-based) of ``collection``, from ``(config.seed, collection, index)``
    alone; ``config.prevalence`` decides the findings (a collection may pass its own)."""
    if index < 0:
        raise ValueError(f"patient index must be >= 0, got {index}")
    stream = collection.stream
    rng = rng_for(config.seed, index, ANATOMY_STREAM, stream=stream)
    sex = "Female" if rng.random() < 0.5 else "Male"
    age = int(rng.integers(18, 91))
    site = SITES[int(rng.integers(config.sites))] if config.sites > 1 else SITES[0]
    anatomy = _sample_anatomy(rng, sex)
    study_rng = rng_for(config.seed, index, STUDY_STREAM, stream=stream)
    n_studies = 2 if study_rng.random() < config.repeat_study_fraction else 1
    gaps = [0] + sorted(int(d) for d in study_rng.integers(14, 720, size=n_studies - 1))
    finding_rng = rng_for(config.seed, index, FINDINGS_STREAM, stream=stream)
    patient_lesions = {
        name: _sample_lesion(name, finding_rng)
        for name in PATIENT_FINDINGS
        if finding_rng.random() < config.prevalence.get(name, 0.0)
    }
    studies = []
    for study_index, days in enumerate(gaps):
        lesions = [_copy_lesion(patient_lesions[name]) for name in FINDINGS if name in patient_lesions]
        for name in FINDINGS:
            if name in PATIENT_FINDINGS:
                continue
            if finding_rng.random() < config.prevalence.get(name, 0.0):
                lesions.append(_sample_lesion(name, finding_rng))
        lesions.sort(key=lambda lesion: FINDINGS.index(lesion.finding))
        studies.append(Study(
            patient_index=index, study_index=study_index, sex=sex, age=min(age + days // 365, 95), site=site,
            days_from_first=days, anatomy=anatomy,
            acquisition=_sample_acquisition(study_rng, site, anatomy, int(study_rng.integers(2**31))),
            lesions=lesions, collection=collection,
        ))
    return studies


def _copy_lesion(lesion: Lesion) -> Lesion:
    return replace(lesion, detail=dict(lesion.detail))


def _sample_anatomy(rng: np.random.Generator, sex: str) -> Anatomy:
    male = sex == "Male"
    return Anatomy(
        body_width=rng.uniform(0.86, 1.03) + (0.04 if male else 0.0),
        body_depth=rng.uniform(0.8, 1.3),
        lung_width=rng.uniform(0.88, 1.05),
        lung_height=rng.uniform(0.9, 1.06),
        heart_ctr=rng.uniform(0.39, 0.5),
        heart_tilt=rng.uniform(0.45, 0.75),
        dome_right=rng.uniform(0.30, 0.42),
        dome_left_drop=rng.uniform(0.02, 0.07),
        rib_spacing=rng.uniform(0.14, 0.16),
        breast=0.0 if male else rng.uniform(0.4, 1.0),
        stomach_bubble=rng.uniform(0.6, 1.2) if rng.random() < 0.7 else 0.0,
        vessel_seed=int(rng.integers(2**31)),
        texture_seed=int(rng.integers(2**31)),
    )


def _sample_acquisition(rng: np.random.Generator, site: str, anatomy: Anatomy, noise_seed: int) -> Acquisition:
    profile = SITE_PROFILES[site]
    # automatic exposure control follows the patient's thickness, imperfectly
    compensation = 1.7 * (anatomy.body_depth - 1.0)
    return Acquisition(
        site=site,
        exposure=profile.exposure + compensation + rng.normal(0, 0.07),
        latitude=profile.latitude * rng.uniform(0.88, 1.12),
        photons=profile.photons * rng.uniform(0.7, 1.3),
        blur_px=profile.blur_px,
        scale=rng.uniform(0.9, 1.05),
        shift_x=rng.normal(0, 0.035),
        shift_y=rng.normal(0, 0.035),
        tilt=np.deg2rad(rng.normal(0, 2.5)),
        rotation=rng.normal(0, 0.025),
        inspiration=rng.normal(0, 0.05),
        noise_seed=noise_seed,
    )


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    probs = np.array([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=probs / probs.sum()))]


def _side(rng: np.random.Generator) -> str:
    return "right" if rng.random() < 0.5 else "left"


def _sample_lesion(finding: str, rng: np.random.Generator) -> Lesion:
    return _LESION_SAMPLERS[finding](rng)


def _sample_cardiomegaly(rng: np.random.Generator) -> Lesion:
    ctr = float(rng.uniform(0.52, 0.66))
    severity = "mild" if ctr < 0.57 else "moderate" if ctr < 0.61 else "severe"
    return Lesion("cardiomegaly", severity=severity, detail={"ctr": round(ctr, 3)})


_EFFUSION_SEVERITY = {"small": "mild", "moderate": "moderate", "large": "severe"}


def _sample_effusion(rng: np.random.Generator) -> Lesion:
    laterality = _choice(rng, {"right": 0.4, "left": 0.3, "bilateral": 0.3})
    size = _choice(rng, {"small": 0.5, "moderate": 0.35, "large": 0.15})
    return Lesion("pleural_effusion", laterality, "basal", _EFFUSION_SEVERITY[size],
                  {"size": size, "jitter": float(rng.uniform(-1, 1))})


def _sample_pneumothorax(rng: np.random.Generator) -> Lesion:
    location = _choice(rng, {"apical": 0.6, "lateral": 0.4})
    size = _choice(rng, {"small": 0.5, "moderate": 0.3, "large": 0.2})
    depth = {"small": (0.07, 0.11), "moderate": (0.12, 0.18), "large": (0.2, 0.3)}[size]
    return Lesion("pneumothorax", _side(rng), location, _EFFUSION_SEVERITY[size],
                  {"size": size, "depth": float(rng.uniform(*depth))})


def _sample_nodule(rng: np.random.Generator) -> Lesion:
    zone = _choice(rng, {"upper": 0.45, "middle": 0.3, "lower": 0.25})
    margin = _choice(rng, {"smooth": 0.5, "lobulated": 0.3, "spiculated": 0.2})
    return Lesion("nodule", _side(rng), zone, None, {
        "size_mm": int(rng.integers(10, 31)), "margin": margin,
        "u": float(rng.uniform(0.3, 0.75)), "v": float(rng.uniform(0.2, 0.8)),
        "seed": int(rng.integers(2**31)),
    })


_LOBES = {"right upper lobe": ("right", "upper"), "right lower lobe": ("right", "lower"),
          "left lower lobe": ("left", "lower")}


def _sample_atelectasis(rng: np.random.Generator) -> Lesion:
    if rng.random() < 0.65:
        laterality = _choice(rng, {"right": 0.4, "left": 0.4, "bilateral": 0.2})
        return Lesion("atelectasis", laterality, "basal", "mild", {
            "kind": "linear", "length_mm": float(rng.uniform(35, 65)),
            "thickness_mm": float(rng.uniform(4, 7)), "angle": float(rng.normal(0, 0.2)),
            "u": float(rng.uniform(0.35, 0.65)), "v": float(rng.uniform(0.0, 1.0)),
        })
    lobe = _choice(rng, {"right upper lobe": 0.3, "right lower lobe": 0.3, "left lower lobe": 0.4})
    laterality, location = _LOBES[lobe]
    return Lesion("atelectasis", laterality, location, None,
                  {"kind": "lobar", "lobe": lobe, "extent": float(rng.uniform(0.8, 1.1))})


def _sample_consolidation(rng: np.random.Generator) -> Lesion:
    zone = _choice(rng, {"upper": 0.25, "middle": 0.3, "lower": 0.45})
    return Lesion("consolidation", _side(rng), zone, None, {
        "radius": float(rng.uniform(0.13, 0.24)), "u": float(rng.uniform(0.35, 0.7)),
        "v": float(rng.uniform(0.3, 0.7)), "seed": int(rng.integers(2**31)),
    })


_LESION_SAMPLERS = {
    "cardiomegaly": _sample_cardiomegaly,
    "pleural_effusion": _sample_effusion,
    "pneumothorax": _sample_pneumothorax,
    "nodule": _sample_nodule,
    "atelectasis": _sample_atelectasis,
    "consolidation": _sample_consolidation,
}
