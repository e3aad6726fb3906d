"""The pixel grid in anatomical coordinates, and where a study's lungs, heart and diaphragm lie.

Geometry lives in normalised anatomical coordinates: x and y span [-1, 1] across the detector
(x to the image right, which is the patient's left on a PA film; y downwards). The acquisition pose
(scale, shift, tilt) maps them onto the pixel grid, so every structure is drawn analytically at
the final resolution. Lesion sizes given in millimetres (nodules, plate atelectasis) use the pixel
spacing, so a mask's size agrees with the DICOM's PixelSpacing and the report's words.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrsynth.tasks.sources.phantom.study import SIDES, Acquisition, Study


@dataclass
class Frame:
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


def make_frame(size: int, spacing_mm: float, acq: Acquisition) -> Frame:
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    yi, xi = np.meshgrid(centres, centres, indexing="ij")
    xi, yi = xi - acq.shift_x, yi - acq.shift_y
    cos, sin = np.cos(acq.tilt), np.sin(acq.tilt)
    x = (cos * xi + sin * yi) / acq.scale
    y = (-sin * xi + cos * yi) / acq.scale
    return Frame(size, x.astype(np.float32), y.astype(np.float32), acq.scale * size / 2, spacing_mm, acq)


@dataclass
class Geometry:
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


def study_geometry(study: Study, with_cardiomegaly: bool, lesion_contrast: float = 1.0) -> Geometry:
    anat, acq = study.anatomy, study.acquisition
    lw, lh = anat.lung_width, anat.lung_height
    x_mid = acq.rotation
    dome_right = anat.dome_right + acq.inspiration
    dome = {"right": dome_right, "left": dome_right + anat.dome_left_drop}
    geo = Geometry(
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


def _heart(geo: Geometry, ctr: float, tilt: float) -> tuple[tuple[float, float, float, float, float], ...]:
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


def heart_r2(frame: Frame, geo: Geometry) -> np.ndarray:
    """Normalised squared radius of the union of the heart's ellipses (< 1 inside)."""
    return np.minimum.reduce([ellipse_r2(frame.x, frame.y, *ellipse) for ellipse in geo.heart])


def ellipse_r2(x, y, cx, cy, a, b, tilt=0.0):
    cos, sin = np.cos(tilt), np.sin(tilt)
    dx, dy = x - cx, y - cy
    return ((cos * dx + sin * dy) / a) ** 2 + ((-sin * dx + cos * dy) / b) ** 2


def _dome(u, side: str, geo: Geometry):
    """y of one hemidiaphragm at lateral coordinate u = |x|: steep to the costophrenic sulcus."""
    peak = geo.lung_cu - 0.02
    lateral = np.clip(u - peak, 0, None) / 0.38
    medial = np.clip(peak - u, 0, None) / 0.38
    return geo.dome[side] + 0.22 * lateral**2 + 0.15 * medial**2


def diaphragm(frame: Frame, geo: Geometry) -> np.ndarray:
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


def lung_envelope(frame: Frame, geo: Geometry, side: str) -> np.ndarray:
    """One lung field including the part behind the heart."""
    s = SIDES[side]
    u = s * frame.x
    envelope = (np.abs((u - geo.lung_cu) / geo.lung_a) ** 2.4 + np.abs((frame.y - geo.lung_cy) / geo.lung_b) ** 2.2) < 1
    above_dome = frame.y < _dome(u, side, geo)
    lateral_of_mediastinum = s * (frame.x - geo.x_mid) > _mediastinum_half_width(frame.y, side)
    return envelope & above_dome & lateral_of_mediastinum


def smoothstep(t):
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


@dataclass
class Layers:
    """The parts of the attenuation map that lesions act on."""

    lungs: dict[str, np.ndarray]  # side -> visible lung field (bool)
    envelopes: dict[str, np.ndarray]  # side -> lung field including behind the heart
    air: np.ndarray  # lung air thickness, 0..1
    markings: np.ndarray  # vessels and interstitial texture (attenuation)
    vessels: np.ndarray
