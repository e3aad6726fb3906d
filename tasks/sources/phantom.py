"""Procedural PA chest radiographs: the built-in phantom collection's patients, studies and pixels.

A patient is sampled from ``(seed, patient index)`` alone, so chunks of patients can be generated
in parallel in any order. ``sample_patient`` draws anatomy, site, studies and findings;
``render`` turns one study into an image and one binary mask per lesion, deterministically.

Geometry lives in normalised anatomical coordinates: x and y span [-1, 1] across the detector
(x to the image right, which is the patient's left on a PA film; y downwards). The acquisition pose
(scale, shift, tilt) maps them onto the pixel grid, so every structure is drawn analytically at
the final resolution. Lesion sizes given in millimetres (nodules, plate atelectasis) use the pixel
spacing, so a mask's size agrees with the DICOM's PixelSpacing and the report's words.

Pixel model: a line integral of attenuation ``A`` (soft tissue, minus lung air, plus heart, bone
and lesions), detector blur, quantum noise whose variance grows with ``exp(A)`` (fewer photons
behind dense tissue), and a logistic characteristic curve whose centre (exposure) and width
(latitude) are the site's. Output: float32 in [0, 1], brighter = more attenuation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.params import PhantomParams

SITES: tuple[str, ...] = ("SITE-A", "SITE-B")
SIDES = {"right": -1.0, "left": 1.0}  # patient side -> sign of x on a PA image

# Independent random streams per patient, so one draw never shifts another (see rng_for).
_ANATOMY, _STUDY, _FINDINGS = 0, 1, 2
REPORT_STREAM, EXPORT_STREAM = 3, 4  # used by phantom_reports and the collection writer

# Findings that belong to the patient (same in every study), the rest are drawn per study.
PATIENT_FINDINGS = ("cardiomegaly", "nodule")

# Attenuation units: ~2.0 is the full soft-tissue thickness of the trunk; lung air takes up to ~1.1 off.
_NODULE_PER_MM = 0.02  # a solid nodule in aerated lung, per mm of its projected thickness


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


@dataclass
class Study:
    patient_index: int  # 0-based
    study_index: int  # 0-based
    sex: str
    age: int
    site: str
    days_from_first: int
    anatomy: Anatomy
    acquisition: Acquisition
    lesions: list[Lesion]

    def lesion(self, finding: str) -> Lesion | None:
        return next((lesion for lesion in self.lesions if lesion.finding == finding), None)


@dataclass
class Rendering:
    image: np.ndarray  # float32 (size, size) in [0, 1]
    masks: dict[str, np.ndarray]  # finding -> bool (size, size), one per lesion of the study


def rng_for(seed: int, patient_index: int, *keys: int) -> np.random.Generator:
    """The generator of one stream of one patient: independent of every other patient."""
    return np.random.default_rng(np.random.SeedSequence([seed, patient_index, *keys]))


# ----------------------------------------------------------------------------------------------
# Sampling: patients, studies, findings
# ----------------------------------------------------------------------------------------------


def sample_patient(config: PhantomParams, index: int) -> list[Study]:
    """Every study of patient ``index`` (0-based), from ``(config.seed, index)`` alone."""
    if index < 0:
        raise ValueError(f"patient index must be >= 0, got {index}")
    rng = rng_for(config.seed, index, _ANATOMY)
    sex = "Female" if rng.random() < 0.5 else "Male"
    age = int(rng.integers(18, 91))
    site = SITES[int(rng.integers(config.sites))] if config.sites > 1 else SITES[0]
    anatomy = _sample_anatomy(rng, sex)
    study_rng = rng_for(config.seed, index, _STUDY)
    n_studies = 2 if study_rng.random() < config.repeat_study_fraction else 1
    gaps = [0] + sorted(int(d) for d in study_rng.integers(14, 720, size=n_studies - 1))
    finding_rng = rng_for(config.seed, index, _FINDINGS)
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
            lesions=lesions,
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


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


@dataclass
class _Frame:
    """The pixel grid in anatomical coordinates, and the mapping back to pixels."""

    size: int
    x: np.ndarray
    y: np.ndarray
    unit_px: float  # pixels per normalised anatomical unit
    spacing_mm: float
    acquisition: Acquisition

    def to_pixels(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Anatomical (x, y) to (row, col) pixel coordinates."""
        acq = self.acquisition
        cos, sin = np.cos(acq.tilt), np.sin(acq.tilt)
        xi = acq.scale * (cos * x - sin * y) + acq.shift_x
        yi = acq.scale * (sin * x + cos * y) + acq.shift_y
        return (yi + 1) * self.size / 2 - 0.5, (xi + 1) * self.size / 2 - 0.5

    def mm_to_px(self, mm: float) -> float:
        return mm / self.spacing_mm

    def px(self, sigma_at_256: float) -> float:
        """A length given in pixels at 256 px, at this frame's size."""
        return max(sigma_at_256 * self.size / 256, 0.35)


def _frame(size: int, spacing_mm: float, acq: Acquisition) -> _Frame:
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yi, xi = np.meshgrid(centres, centres, indexing="ij")
    xi, yi = xi - acq.shift_x, yi - acq.shift_y
    cos, sin = np.cos(acq.tilt), np.sin(acq.tilt)
    x = (cos * xi + sin * yi) / acq.scale
    y = (-sin * xi + cos * yi) / acq.scale
    return _Frame(size, x.astype(np.float32), y.astype(np.float32), acq.scale * size / 2, spacing_mm, acq)


@dataclass
class _Geometry:
    """Where the patient's structures lie in this study, in anatomical units."""

    x_mid: float
    lung_cu: float  # lateral centre of each lung's envelope (|x|)
    lung_cy: float
    lung_a: float
    lung_b: float
    dome: dict[str, float]  # side -> y of the dome
    heart: tuple[tuple[float, float, float, float, float], ...]  # ellipses (cx, cy, a, b, tilt)
    hilum: dict[str, tuple[float, float]]

    @property
    def lung_top(self) -> float:
        return self.lung_cy - self.lung_b

    @property
    def thorax_width(self) -> float:
        return 2 * (self.lung_cu + self.lung_a)


def _geometry(study: Study, with_cardiomegaly: bool, lesion_contrast: float = 1.0) -> _Geometry:
    anat, acq = study.anatomy, study.acquisition
    lw, lh = anat.lung_width, anat.lung_height
    x_mid = acq.rotation
    dome_right = anat.dome_right + acq.inspiration
    dome = {"right": dome_right, "left": dome_right + anat.dome_left_drop}
    geo = _Geometry(
        x_mid=x_mid, lung_cu=0.47 * lw, lung_cy=0.1 * lh, lung_a=0.39 * lw, lung_b=0.88 * lh, dome=dome,
        heart=(),
        hilum={"right": (x_mid - 0.17 * lw, -0.12 * lh), "left": (x_mid + 0.19 * lw, -0.17 * lh)},
    )
    geo.heart = _heart(geo, anat.heart_ctr, anat.heart_tilt)
    lesion = study.lesion("cardiomegaly")
    if with_cardiomegaly and lesion is not None:
        # lesion_contrast scales the enlargement: at 1 the heart is drawn at the lesion's own ratio
        geo.heart = _enlarge(geo.heart, 1 + lesion_contrast * (lesion.detail["ctr"] / anat.heart_ctr - 1))
    return geo


def _heart(geo: _Geometry, ctr: float, tilt: float) -> tuple[tuple[float, float, float, float, float], ...]:
    """The cardiac silhouette, ctr x thoracic width across: a tilted ventricular ellipse whose
    lowest part hides below the left dome, plus the right atrium bulging past the spine."""
    width = ctr * geo.thorax_width
    cos2, sin2 = np.cos(tilt) ** 2, np.sin(tilt) ** 2
    a = 0.44 * width / np.sqrt(cos2 + 0.36 * sin2)
    b = 0.6 * a
    half_height = np.sqrt(a * a * sin2 + b * b * cos2)
    cx = geo.x_mid + 0.26 * width
    cy = geo.dome["left"] + 0.22 - half_height
    atrium = (geo.x_mid - 0.13 * width, cy + 0.25 * half_height, 0.21 * width, 0.5 * half_height, 0.0)
    return (float(cx), float(cy), float(a), float(b), float(tilt)), tuple(float(v) for v in atrium)


def _enlarge(heart, factor: float):
    """Scale the heart about a point inside both ellipses: the larger shape contains the smaller."""
    ax, ay = heart[0][0] - 0.3 * heart[0][2], heart[0][1] + 0.2 * heart[0][3]
    return tuple((ax + factor * (cx - ax), ay + factor * (cy - ay), a * factor, b * factor, tilt)
                 for cx, cy, a, b, tilt in heart)


def _heart_r2(frame: _Frame, geo: _Geometry) -> np.ndarray:
    """Normalised squared radius of the union of the heart's ellipses (< 1 inside)."""
    return np.minimum.reduce([_ellipse_r2(frame.x, frame.y, *ellipse) for ellipse in geo.heart])


def _ellipse_r2(x, y, cx, cy, a, b, tilt=0.0):
    cos, sin = np.cos(tilt), np.sin(tilt)
    dx, dy = x - cx, y - cy
    return ((cos * dx + sin * dy) / a) ** 2 + ((-sin * dx + cos * dy) / b) ** 2


def _dome(u, side: str, geo: _Geometry):
    """y of one hemidiaphragm at lateral coordinate u = |x|: steep to the costophrenic sulcus."""
    peak = geo.lung_cu - 0.02
    lateral = np.clip(u - peak, 0, None) / 0.38
    medial = np.clip(peak - u, 0, None) / 0.38
    return geo.dome[side] + 0.22 * lateral**2 + 0.15 * medial**2


def _diaphragm(frame: _Frame, geo: _Geometry) -> np.ndarray:
    """y of the diaphragm under every pixel: the left dome right of the midline, else the right."""
    u = np.abs(frame.x)
    return np.where(frame.x > geo.x_mid, _dome(u, "left", geo), _dome(u, "right", geo))


def _mediastinum_half_width(y, side: str):
    width = 0.13 + 0.02 * np.clip((y + 0.5) / 0.4, 0, 1)
    if side == "left":  # aortic knob
        width = width + 0.075 * np.exp(-(((y + 0.33) / 0.075) ** 2))
    else:  # right paratracheal stripe / SVC
        width = width + 0.02 * np.exp(-(((y + 0.35) / 0.15) ** 2))
    return width


def _lung_envelope(frame: _Frame, geo: _Geometry, side: str) -> np.ndarray:
    """One lung field including the part behind the heart."""
    s = SIDES[side]
    u = s * frame.x
    envelope = (np.abs((u - geo.lung_cu) / geo.lung_a) ** 2.4 + np.abs((frame.y - geo.lung_cy) / geo.lung_b) ** 2.2) < 1
    above_dome = frame.y < _dome(u, side, geo)
    lateral_of_mediastinum = s * (frame.x - geo.x_mid) > _mediastinum_half_width(frame.y, side)
    return envelope & above_dome & lateral_of_mediastinum


def _smoothstep(t):
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


def _tube(distance, half):
    """Projected thickness across a bone of radius ``half``: cortex brighter than marrow."""
    outer = np.sqrt(np.clip(1 - (distance / half) ** 2, 0, None))
    inner = np.sqrt(np.clip(1 - (distance / (0.65 * half)) ** 2, 0, None))
    return outer - 0.3 * inner


def _body(frame: _Frame, anat: Anatomy):
    """Soft-tissue thickness of the trunk, neck and shoulders."""
    y = frame.y
    bw = anat.body_width
    neck, shoulders, chest = 0.27 * bw, 1.2 * bw, 0.97 * bw
    half_width = (neck + (shoulders - neck) / (1 + np.exp(-(y + 0.8) / 0.05))
                  - (shoulders - chest) / (1 + np.exp(-(y + 0.38) / 0.12)))
    thickness = np.cbrt(np.clip(1 - np.abs(frame.x / half_width) ** 3, 0, None))  # a rounded box
    shoulder_girdle = 0.3 * _smoothstep((-0.4 - y) / 0.3)  # muscle over the apices
    return (2.0 * anat.body_depth + shoulder_girdle) * thickness, half_width


def _bones(frame: _Frame, geo: _Geometry, anat: Anatomy, half_width) -> np.ndarray:
    spine = _within(frame, _near(frame.x, geo.x_mid, 0.13, axis=0), _spine, geo, anat)
    clavicles = _within(frame, _near(frame.y, -0.68 * anat.lung_height, 0.25, axis=1), _clavicles, anat)
    return _ribs(frame, anat, half_width) + clavicles + spine


def _near(coordinate: np.ndarray, centre: float, half_width: float, axis: int) -> tuple[slice, slice]:
    """The rows (axis=1) or columns (axis=0) of the grid where a coordinate comes near a value."""
    hits = np.flatnonzero((np.abs(coordinate - centre) < half_width).any(axis=axis))
    span = slice(hits[0], hits[-1] + 1) if hits.size else slice(0, 0)
    return (slice(None), span) if axis == 0 else (span, slice(None))


def _within(frame: _Frame, band: tuple[slice, slice], draw, *args) -> np.ndarray:
    """Draw a structure only inside the band of the grid it can reach (it is zero elsewhere)."""
    out = np.zeros_like(frame.x)
    out[band] = draw(replace(frame, x=frame.x[band], y=frame.y[band]), *args)
    return out


def _ribs(frame: _Frame, anat: Anatomy, half_width) -> np.ndarray:
    """Eleven posterior ribs a side, each sweeping down laterally, and their fainter anterior
    parts running back medially and down. Every rib follows one course shifted by its level, so
    a pixel's rib is found by inverting the level and checking that rib and its neighbours."""
    lh = anat.lung_height
    level0, spacing = -0.86 * lh, anat.rib_spacing * lh
    total = np.zeros_like(frame.x)
    for s in SIDES.values():
        u = s * frame.x
        u_end = 0.96 * half_width
        course, slope = _rib_course(np.clip(u - 0.07, 0, None))
        end_course, _ = _rib_course(np.clip(u_end - 0.07, 0, None))
        back = np.clip(u_end - u, 0, None)
        anterior, anterior_slope = 0.5 * back - 0.18 * back * back, 0.5 - 0.36 * back
        posterior_window = _smoothstep((u - 0.06) / 0.04) * _smoothstep((u_end - u) / 0.06)
        anterior_window = _smoothstep((u - 0.28) / 0.08) * _smoothstep((u_end - u) / 0.03)
        # the level of the nearest rib, refined once for the extra bend of the upper ribs
        nearest = np.rint((frame.y - level0 - course) / spacing)
        nearest = np.rint((frame.y - level0 - _rib_bend(nearest) * course) / spacing)
        nearest_anterior = np.rint((frame.y - level0 - end_course - anterior) / spacing)
        nearest_anterior = np.rint((frame.y - level0 - _rib_bend(nearest_anterior) * end_course - anterior) / spacing)
        for offset in (-1, 0, 1):
            index = nearest + offset
            bend = _rib_bend(index)
            distance = (frame.y - level0 - index * spacing - bend * course) / np.sqrt(1 + (bend * slope) ** 2)
            half = (0.025 + 0.0025 * index) * lh
            total += 0.17 * posterior_window * _tube(distance, half) * ((index >= 0) & (index <= 10))
            index = nearest_anterior + offset
            join = level0 + index * spacing + _rib_bend(index) * end_course
            distance = (frame.y - join - anterior) / np.sqrt(1 + anterior_slope**2)
            half = 1.3 * (0.025 + 0.0025 * index) * lh
            total += 0.06 * anterior_window * _tube(distance, half) * ((index >= 0) & (index <= 10))
    return total


def _rib_bend(index):
    """Upper ribs curve more tightly."""
    return 1 + 0.6 * np.exp(-np.clip(index, 0, None) / 1.5)


def _rib_course(t):
    """Posterior rib centre line (offset from its level) and slope: a slight rise from the
    spine, then a sweep down to the lateral chest wall."""
    lateral = np.clip(t - 0.5, 0, None)
    return -0.25 * t + 0.6 * t * t + 1.5 * lateral * lateral, -0.25 + 1.2 * t + 3.0 * lateral


def _clavicles(frame: _Frame, anat: Anatomy) -> np.ndarray:
    total = np.zeros_like(frame.x)
    y0 = -0.62 * anat.lung_height
    for s in SIDES.values():
        u = s * frame.x
        t = np.clip(u - 0.06, 0, None)
        centre = y0 - 0.2 * t + 0.04 * np.sin(np.pi * t / 0.62)
        slope = -0.2 + 0.04 * np.pi / 0.62 * np.cos(np.pi * t / 0.62)
        distance = (frame.y - centre) / np.sqrt(1 + slope * slope)
        half = 0.03 + 0.012 * np.exp(-t / 0.06)  # the sternal end is bulbous
        window = _smoothstep((u - 0.05) / 0.03) * _smoothstep((0.78 * anat.body_width - u) / 0.05)
        total += 0.5 * window * _tube(distance, half)
    return total


def _spine(frame: _Frame, geo: _Geometry, anat: Anatomy) -> np.ndarray:
    period = anat.rib_spacing * anat.lung_height
    dx = frame.x - geo.x_mid
    phase = np.mod((frame.y + 0.86 * anat.lung_height) / period + 0.3, 1.0)
    body_rows = _smoothstep(phase / 0.1) * _smoothstep((0.9 - phase) / 0.1)
    bodies = 0.2 * body_rows * _tube(dx, 0.1)
    pedicles = sum(
        _tube(np.sqrt(_ellipse_r2(dx, phase * period, s * 0.065, 0.4 * period, 0.02, 0.032)), 1.0)
        for s in (-1, 1)
    )
    spinous = np.sqrt(np.clip(1 - _ellipse_r2(dx, phase * period, 0.0, 0.72 * period, 0.014, 0.035), 0, None))
    return bodies + 0.15 * pedicles + 0.12 * spinous


def _trachea(frame: _Frame, geo: _Geometry) -> np.ndarray:
    carina = geo.hilum["left"][1] - 0.08
    dx = frame.x - geo.x_mid - 0.01
    column = np.sqrt(np.clip(1 - (dx / 0.045) ** 2, 0, None)) * _smoothstep((carina - frame.y) / 0.03)
    air = column
    for side, angle in (("right", 0.5), ("left", 0.85)):
        s = SIDES[side]
        along = (frame.y - carina) * np.cos(angle) + s * dx * np.sin(angle)
        across = -(frame.y - carina) * np.sin(angle) + s * dx * np.cos(angle)
        inside = _smoothstep(along / 0.02) * _smoothstep((0.16 - along) / 0.05)
        air = np.maximum(air, 0.8 * inside * np.sqrt(np.clip(1 - (across / 0.03) ** 2, 0, None)))
    return air


def _vessels(frame: _Frame, geo: _Geometry, anat: Anatomy) -> np.ndarray:
    """Branching, gently curving pulmonary vessels from each hilum, thinning to the periphery.

    Lower trunks are wider (an upright film perfuses the bases more); each generation is drawn
    into one of three layers blurred to its calibre.
    """
    rng = np.random.default_rng(anat.vessel_seed)
    trunks = np.linspace(-1.35, 1.35, 7)
    starts, angles, sizes, signs = [], [], [], []
    for side, s in SIDES.items():
        hx, hy = geo.hilum[side]
        offsets = np.stack([rng.normal(0, 0.012, trunks.size), 0.06 * np.sin(trunks)], axis=1)
        starts.append(np.array([hx, hy]) + offsets)
        angles.append(trunks + rng.normal(0, 0.12, trunks.size))
        sizes.append((0.75 + 0.25 * np.sin(trunks)) * rng.uniform(0.8, 1.2, trunks.size))
        signs.append(np.full(trunks.size, s))
    start, angle, width, sign = (np.concatenate(v) for v in (starts, angles, sizes, signs))
    hilum = start.copy()
    length = 0.13 * anat.lung_height
    layers = [np.zeros((frame.size, frame.size), np.float32) for _ in range(3)]
    for generation in range(8):
        n_t = max(3, int(np.ceil(length * frame.unit_px * 1.2)))
        length_each = length * rng.uniform(0.75, 1.25, angle.size)
        bend = rng.normal(0, 0.5, angle.size) * length_each
        heading = angle[:, None] + bend[:, None] * np.linspace(0, 1, n_t)[None, :]
        step = (length_each / n_t)[:, None]
        points = start[:, None, :] + np.cumsum(np.stack([sign[:, None] * np.cos(heading) * step,
                                                         np.sin(heading) * step], axis=-1), axis=1)
        rows, cols = frame.to_pixels(points[..., 0], points[..., 1])
        # line density per pixel x pixel size keeps a vessel's projected thickness at any resolution
        weight = np.repeat(width * length_each * frame.unit_px / n_t * frame.size / 256, n_t)
        _splat(layers[min(generation // 2, 2)], rows.ravel(), cols.ravel(), weight)
        start, angle = points[:, -1, :], heading[:, -1]
        # children fork either side of the parent but keep heading away from the hilum
        outward = np.arctan2(start[:, 1] - hilum[:, 1], sign * (start[:, 0] - hilum[:, 0]))
        angle = angle + 0.4 * np.angle(np.exp(1j * (outward - angle)))
        spread = rng.uniform(0.15, 0.45, (2, angle.size))
        angle = np.concatenate([angle + spread[0], angle - spread[1]])
        start, width, sign = np.tile(start, (2, 1)), np.tile(width * 0.7, 2), np.tile(sign, 2)
        hilum = np.tile(hilum, (2, 1))
        length *= 0.8
    hila = sum(np.exp(-(((frame.x - hx) / 0.045) ** 2) - (((frame.y - hy) / 0.09) ** 2))
               for hx, hy in geo.hilum.values())
    return (0.35 * hila
            + 1.3 * ndimage.gaussian_filter(layers[0], frame.px(2.2))
            + 0.8 * ndimage.gaussian_filter(layers[1], frame.px(1.2))
            + 0.7 * ndimage.gaussian_filter(layers[2], frame.px(0.7)))


def _splat(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray, weight: np.ndarray) -> None:
    r, c = np.round(rows).astype(int), np.round(cols).astype(int)
    keep = (r >= 0) & (r < grid.shape[0]) & (c >= 0) & (c < grid.shape[1])
    flat = np.bincount(r[keep] * grid.shape[1] + c[keep], weights=weight[keep], minlength=grid.size)
    grid += flat.reshape(grid.shape).astype(grid.dtype)


def _texture(frame: _Frame, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal((frame.size, frame.size)).astype(np.float32)
    band = ndimage.gaussian_filter(noise, frame.px(1.2)) - ndimage.gaussian_filter(noise, frame.px(4.0))
    return band / (band.std() + 1e-6)


@dataclass
class _Layers:
    """The parts of the attenuation map that lesions act on."""

    lungs: dict[str, np.ndarray]  # side -> visible lung field (bool)
    envelopes: dict[str, np.ndarray]  # side -> lung field including behind the heart
    air: np.ndarray  # lung air thickness, 0..1
    markings: np.ndarray  # vessels and interstitial texture (attenuation)
    vessels: np.ndarray


def render(
    study: Study,
    size: int,
    spacing_mm: float,
    lesion_contrast: float = 1.0,
    findings: tuple[str, ...] | None = None,
) -> Rendering:
    """Draw one study: the radiograph and one binary mask per drawn lesion.

    ``findings`` limits the lesions drawn (None: all of the study's); everything else, noise
    included, is identical, so a lesion's effect is the difference of two renderings.
    """
    drawn = [lesion for lesion in study.lesions if findings is None or lesion.finding in findings]
    frame = _frame(size, spacing_mm, study.acquisition)
    geo = _geometry(study, any(lesion.finding == "cardiomegaly" for lesion in drawn), lesion_contrast)
    anat = study.anatomy
    soft, half_width = _body(frame, anat)
    heart_r2 = _heart_r2(frame, geo)
    # the heart's lowest part hides in the abdomen's density: draw and mask only what shows
    silhouette = (heart_r2 < 1) & (frame.y < _diaphragm(frame, geo))
    heart = np.sqrt(np.clip(1 - heart_r2, 0, None)) * silhouette
    envelopes = {side: _lung_envelope(frame, geo, side) for side in SIDES}
    envelope = envelopes["right"] | envelopes["left"]
    lungs = {side: mask & (heart_r2 >= 1) for side, mask in envelopes.items()}
    air = _lung_air(frame, envelope, heart_r2)
    vessels = _vessels(frame, geo, anat) * envelope
    markings = vessels + 0.018 * _texture(frame, anat.texture_seed) * envelope
    layers = _Layers(lungs, envelopes, air, markings, vessels)

    attenuation = (soft + _bones(frame, geo, anat, half_width) - 1.1 * air + markings + 0.12 * heart
                   - 0.4 * _within(frame, _near(frame.x, geo.x_mid, 0.3, axis=0), _trachea, geo)
                   + _aorta(frame, geo) + _breasts(frame, anat)
                   - _stomach_bubble(frame, geo, anat))
    masks: dict[str, np.ndarray] = {}
    for lesion in drawn:
        if lesion.finding == "cardiomegaly":
            masks["cardiomegaly"] = silhouette
            continue
        delta, mask = _LESION_DRAWERS[lesion.finding](lesion, frame, geo, layers)
        attenuation += lesion_contrast * delta
        masks[lesion.finding] = mask
    image = _expose(attenuation, frame, study.acquisition)
    return Rendering(image=image, masks=masks)


def _lung_air(frame: _Frame, envelope: np.ndarray, heart_r2: np.ndarray) -> np.ndarray:
    """Air thickness: full in the lung's middle, thinner at its edges and behind the heart."""
    depth = _wide_blur(envelope.astype(np.float32), frame.px(10.0))
    air = ndimage.gaussian_filter(envelope * (0.45 + 0.55 * depth), frame.px(0.8))  # anti-aliased edges
    return air * (1 - 0.7 * (heart_r2 < 1) * np.sqrt(np.clip(1 - heart_r2, 0, None)) - 0.25 * (heart_r2 < 1))


def _wide_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """A broad Gaussian blur computed at a quarter of the resolution (it only carries low frequencies)."""
    if sigma < 4:
        return ndimage.gaussian_filter(image, sigma)
    small = ndimage.zoom(image, 0.25, order=1)
    blurred = ndimage.gaussian_filter(small, sigma * small.shape[0] / image.shape[0])
    return ndimage.zoom(blurred, (image.shape[0] / small.shape[0], image.shape[1] / small.shape[1]), order=1)


def _aorta(frame: _Frame, geo: _Geometry) -> np.ndarray:
    knob = np.sqrt(np.clip(1 - _ellipse_r2(frame.x, frame.y, geo.x_mid + 0.1, -0.33, 0.08, 0.065), 0, None))
    return 0.15 * knob


def _breasts(frame: _Frame, anat: Anatomy) -> np.ndarray:
    if anat.breast == 0:
        return np.zeros_like(frame.x)
    total = np.zeros_like(frame.x)
    for s in SIDES.values():
        r = np.sqrt(_ellipse_r2(frame.x, frame.y, s * 0.52 * anat.body_width, 0.45, 0.4, 0.32))
        # a convex lower edge, fading out upwards over the pectoral muscle
        total += _smoothstep((1 - r) / 0.35) * _smoothstep((frame.y - 0.2) / 0.35)
    return 0.22 * anat.breast * total


def _stomach_bubble(frame: _Frame, geo: _Geometry, anat: Anatomy) -> np.ndarray:
    if anat.stomach_bubble == 0:
        return np.zeros_like(frame.x)
    cy = geo.dome["left"] + 0.1
    r2 = _ellipse_r2(frame.x, frame.y, geo.x_mid + 0.42, cy, 0.12 * anat.stomach_bubble, 0.07)
    gas = np.sqrt(np.clip(1 - r2, 0, None)) * (frame.y < cy + 0.02)  # flat fluid level below
    return 0.45 * gas


def _expose(attenuation: np.ndarray, frame: _Frame, acq: Acquisition) -> np.ndarray:
    """Detector blur, quantum noise and the site's characteristic curve."""
    rng = np.random.default_rng(acq.noise_seed)
    blurred = ndimage.gaussian_filter(attenuation, frame.px(acq.blur_px))
    noise = ndimage.gaussian_filter(rng.standard_normal(blurred.shape).astype(np.float32), frame.px(0.5))
    noise /= noise.std() + 1e-6
    photons = acq.photons * (256 / frame.size) ** 2
    noisy = blurred + noise * np.sqrt(np.exp(np.clip(blurred, 0, 6)) / photons)
    heel = 0.05 * frame.y  # anode heel: exposure falls off along the tube axis
    curve = 1 / (1 + np.exp(-(noisy - acq.exposure - heel) / acq.latitude))
    floor = 1 / (1 + np.exp(acq.exposure / acq.latitude))
    return np.clip((curve - floor) / (1 - floor), 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Lesions: each drawer returns (attenuation change at lesion_contrast 1, binary mask)
# ----------------------------------------------------------------------------------------------

_ZONES = {"upper": 0, "middle": 1, "lower": 2}


def _place(lung: np.ndarray, side: str, zone: str, u: float, v: float) -> tuple[int, int]:
    """A pixel in one third of a lung field: v down the zone, u from medial (0) to lateral (1)."""
    rows = np.flatnonzero(lung.any(axis=1))
    if rows.size == 0:
        raise ValueError(f"no {side} lung field to place a lesion in")
    top, bottom = rows[0], rows[-1]
    row = int(round(top + (_ZONES[zone] + v) * (bottom - top) / 3))
    cols = np.flatnonzero(lung[row])
    if cols.size == 0:  # the row missed this lung (a sliver): take the nearest lung pixel
        _, (near_rows, near_cols) = ndimage.distance_transform_edt(~lung, return_indices=True)
        return int(near_rows[row, lung.shape[1] // 2]), int(near_cols[row, lung.shape[1] // 2])
    lateral, medial = (cols[0], cols[-1]) if side == "right" else (cols[-1], cols[0])
    return row, int(round(medial + u * (lateral - medial)))


def _polar(shape: tuple[int, int], row: float, col: float) -> tuple[np.ndarray, np.ndarray]:
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    return np.hypot(rr - row, cc - col), np.arctan2(rr - row, cc - col)


def _nodule_outline(theta: np.ndarray, margin: str, rng: np.random.Generator) -> np.ndarray:
    """Radius multiplier by angle: round, lobulated, or with thin radiating spicules."""
    phases = rng.uniform(0, 2 * np.pi, 3)
    if margin == "smooth":
        return 1 + 0.04 * np.cos(2 * theta + phases[0])
    if margin == "lobulated":
        return 1 + 0.14 * np.cos(3 * theta + phases[0]) + 0.09 * np.cos(5 * theta + phases[1])
    spikes = rng.uniform(-np.pi, np.pi, int(rng.integers(8, 14)))
    gap = np.angle(np.exp(1j * (theta[..., None] - spikes)))
    return 0.9 + (rng.uniform(0.5, 1.0, spikes.size) * np.exp(-((gap / 0.07) ** 2))).sum(axis=-1)


def _draw_nodule(lesion: Lesion, frame: _Frame, geo: _Geometry, layers: _Layers):
    d = lesion.detail
    row, col = _place(layers.lungs[lesion.laterality], lesion.laterality, lesion.location, d["u"], d["v"])
    radius = frame.mm_to_px(d["size_mm"]) / 2
    distance, theta = _polar(frame.x.shape, row, col)
    outline = radius * _nodule_outline(theta, d["margin"], np.random.default_rng(d["seed"]))
    thickness_mm = d["size_mm"] * np.sqrt(np.clip(1 - (distance / outline) ** 2, 0, None))
    return _NODULE_PER_MM * thickness_mm, distance < outline


def _draw_effusion(lesion: Lesion, frame: _Frame, geo: _Geometry, layers: _Layers):
    """Fluid in the dependent pleural space: a meniscus rising laterally, the sulcus blunted."""
    size, jitter = lesion.detail["size"], lesion.detail["jitter"]
    # medial fluid level below (+) or above (-) the dome, and how far the meniscus climbs the wall
    medial_level, rise = {"small": (0.1, 0.06), "moderate": (-0.08, 0.2), "large": (-0.4, 0.25)}[size]
    medial_level += 0.04 * jitter
    sides = ("right", "left") if lesion.laterality == "bilateral" else (lesion.laterality,)
    fill = np.zeros_like(frame.x)
    for side in sides:
        u = SIDES[side] * frame.x
        t = np.clip((u - 0.1) / (geo.lung_cu + geo.lung_a - 0.1), 0, 1)
        meniscus = geo.dome[side] + medial_level - rise * t**2
        fill += layers.envelopes[side] * np.clip((frame.y - meniscus) / 0.07, 0, 1) ** 0.7
    delta = fill * (1.1 * layers.air + 0.1) - fill * layers.markings
    return delta, fill > 0.02


def _draw_pneumothorax(lesion: Lesion, frame: _Frame, geo: _Geometry, layers: _Layers):
    """Pleural air between chest wall and a thin visceral pleural line; no lung markings in it."""
    side = lesion.laterality
    lung = layers.lungs[side]
    u = SIDES[side] * frame.x
    height = geo.dome[side] - geo.lung_top
    along = np.clip((frame.y - geo.lung_top) / height, 0, 1)
    # the chest wall this air lies against: lateral for both kinds, and over the apex for apical
    wall = ~layers.envelopes[side] & (frame.y < geo.dome[side] - 0.03) & (u > geo.lung_cu)
    if lesion.location == "apical":
        wall |= ~layers.envelopes[side] & (along < 0.1) & (u > 0.15)
        taper = np.clip(1 - along / 0.55, 0, 1) ** 0.6
    else:
        taper = np.clip(np.sin(np.pi * np.clip((along - 0.05) / 0.85, 0, 1)), 0, None) ** 0.7
    from_wall = ndimage.distance_transform_edt(~wall)
    depth_px = lesion.detail["depth"] * 2 * geo.lung_a * frame.unit_px
    space = lung & (from_wall < depth_px * taper)
    line = lung & ~space & ndimage.binary_dilation(space, iterations=max(1, round(frame.size / 256)))
    delta = space * (-layers.markings - 0.22 * layers.air) + 0.2 * line
    return delta, space | line


def _draw_atelectasis(lesion: Lesion, frame: _Frame, geo: _Geometry, layers: _Layers):
    if lesion.detail["kind"] == "linear":
        return _plate_atelectasis(lesion, frame, layers)
    return _lobar_collapse(lesion, frame, geo, layers)


def _plate_atelectasis(lesion: Lesion, frame: _Frame, layers: _Layers):
    """A disc of collapsed lung seen edge-on: a thin, nearly horizontal band at the base."""
    d = lesion.detail
    sides = ("right", "left") if lesion.laterality == "bilateral" else (lesion.laterality,)
    band = np.zeros_like(frame.x)
    half_length, half_thickness = frame.mm_to_px(d["length_mm"]) / 2, frame.mm_to_px(d["thickness_mm"]) / 2
    for side in sides:
        row, col = _place(layers.lungs[side], side, "lower", d["u"], 0.1 + 0.45 * d["v"])
        distance, theta = _polar(frame.x.shape, row, col)
        angle = d["angle"] * SIDES[side]
        along = distance * np.cos(theta - angle)
        across = distance * np.sin(theta - angle)
        band = np.maximum(band, np.exp(-((across / half_thickness) ** 2))
                          * _smoothstep((half_length - np.abs(along)) / (0.3 * half_length)) * layers.lungs[side])
    return 0.4 * band, band > 0.1


def _lobar_collapse(lesion: Lesion, frame: _Frame, geo: _Geometry, layers: _Layers):
    """A collapsed lobe: a dense triangle against the mediastinum (upper) or behind the heart (lower)."""
    side, extent = lesion.laterality, lesion.detail["extent"]
    s = SIDES[side]
    u = s * frame.x
    hu, hy = s * geo.hilum[side][0], geo.hilum[side][1]
    envelope = layers.envelopes[side]
    if lesion.location == "upper":  # the minor fissure swings up towards the lateral apex
        pu, py = 0.35 + 0.3 * extent, geo.lung_top + 0.12
        t = np.clip((u - hu) / (pu - hu), 0, 1)
        edge = hy + t * (py - hy) - 0.08 * np.sin(np.pi * t)
        fill = envelope * _smoothstep((edge - frame.y) * frame.unit_px / 2.5)
    else:  # the lower lobe collapses medially and down: the sail behind the heart
        du = 0.25 + 0.18 * extent
        t = np.clip((frame.y - hy) / (geo.dome[side] + 0.05 - hy), 0, 1)
        edge = hu + t * (du - hu) + 0.04 * np.sin(np.pi * t)
        fill = envelope * (frame.y > hy) * _smoothstep((edge - u) * frame.unit_px / 2.5)
    fill *= 0.85  # a collapsed lobe keeps a little air
    delta = fill * (1.1 * layers.air + 0.2) - fill * layers.markings
    return delta, fill > 0.05


def _draw_consolidation(lesion: Lesion, frame: _Frame, geo: _Geometry, layers: _Layers):
    """Patchy airspace opacity: coalescing blobs, with air bronchograms where vessels ran."""
    d = lesion.detail
    side = lesion.laterality
    row, col = _place(layers.lungs[side], side, lesion.location, d["u"], d["v"])
    radius = d["radius"] * frame.unit_px
    distance, _ = _polar(frame.x.shape, row, col)
    noise = np.random.default_rng(d["seed"]).standard_normal(frame.x.shape).astype(np.float32)
    blobs = ndimage.gaussian_filter(noise, max(radius / 6, 0.8))
    blobs /= blobs.std() + 1e-6
    falloff = np.clip(1 - (distance / radius) ** 2, 0, 1)
    patchy = _smoothstep((0.65 * falloff + 0.3 * blobs - 0.12) / 0.6) * (distance < radius)
    fill = 0.6 * ndimage.gaussian_filter(patchy, frame.px(2.5)) * layers.lungs[side]  # ill-defined margins
    bronchograms = layers.vessels / (layers.vessels.max() + 1e-6)
    delta = fill * (1.1 * layers.air + 0.05) - fill * layers.markings - 0.25 * fill * bronchograms
    return delta, fill > 0.01  # the hazy margin counts: the lesion changes every pixel of its mask


_LESION_DRAWERS = {
    "pleural_effusion": _draw_effusion,
    "pneumothorax": _draw_pneumothorax,
    "nodule": _draw_nodule,
    "atelectasis": _draw_atelectasis,
    "consolidation": _draw_consolidation,
}
