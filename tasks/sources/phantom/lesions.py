"""Lesions drawn into a study: each drawer returns (attenuation change at lesion_contrast 1, binary mask)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cxrsynth.tasks.sources.phantom.geometry import Frame, Geometry, Layers, smoothstep
from cxrsynth.tasks.sources.phantom.study import SIDES, Lesion

_NODULE_PER_MM = 0.02  # a solid nodule in aerated lung, per mm of its projected thickness
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


def _draw_nodule(lesion: Lesion, frame: Frame, geo: Geometry, layers: Layers):
    d = lesion.detail
    row, col = _place(layers.lungs[lesion.laterality], lesion.laterality, lesion.location, d["u"], d["v"])
    radius = frame.mm_to_px(d["size_mm"]) / 2
    distance, theta = _polar(frame.x.shape, row, col)
    outline = radius * _nodule_outline(theta, d["margin"], np.random.default_rng(d["seed"]))
    thickness_mm = d["size_mm"] * np.sqrt(np.clip(1 - (distance / outline) ** 2, 0, None))
    return _NODULE_PER_MM * thickness_mm, distance < outline


def _draw_effusion(lesion: Lesion, frame: Frame, geo: Geometry, layers: Layers):
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


def _draw_pneumothorax(lesion: Lesion, frame: Frame, geo: Geometry, layers: Layers):
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


def _draw_atelectasis(lesion: Lesion, frame: Frame, geo: Geometry, layers: Layers):
    if lesion.detail["kind"] == "linear":
        return _plate_atelectasis(lesion, frame, layers)
    return _lobar_collapse(lesion, frame, geo, layers)


def _plate_atelectasis(lesion: Lesion, frame: Frame, layers: Layers):
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
                          * smoothstep((half_length - np.abs(along)) / (0.3 * half_length)) * layers.lungs[side])
    return 0.4 * band, band > 0.1


def _lobar_collapse(lesion: Lesion, frame: Frame, geo: Geometry, layers: Layers):
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
        fill = envelope * smoothstep((edge - frame.y) * frame.unit_px / 2.5)
    else:  # the lower lobe collapses medially and down: the sail behind the heart
        du = 0.25 + 0.18 * extent
        t = np.clip((frame.y - hy) / (geo.dome[side] + 0.05 - hy), 0, 1)
        edge = hu + t * (du - hu) + 0.04 * np.sin(np.pi * t)
        fill = envelope * (frame.y > hy) * smoothstep((edge - u) * frame.unit_px / 2.5)
    fill *= 0.85  # a collapsed lobe keeps a little air
    delta = fill * (1.1 * layers.air + 0.2) - fill * layers.markings
    return delta, fill > 0.05


def _draw_consolidation(lesion: Lesion, frame: Frame, geo: Geometry, layers: Layers):
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
    patchy = smoothstep((0.65 * falloff + 0.3 * blobs - 0.12) / 0.6) * (distance < radius)
    fill = 0.6 * ndimage.gaussian_filter(patchy, frame.px(2.5)) * layers.lungs[side]  # ill-defined margins
    bronchograms = layers.vessels / (layers.vessels.max() + 1e-6)
    delta = fill * (1.1 * layers.air + 0.05) - fill * layers.markings - 0.25 * fill * bronchograms
    return delta, fill > 0.01  # the hazy margin counts: the lesion changes every pixel of its mask


DRAWERS = {
    "pleural_effusion": _draw_effusion,
    "pneumothorax": _draw_pneumothorax,
    "nodule": _draw_nodule,
    "atelectasis": _draw_atelectasis,
    "consolidation": _draw_consolidation,
}
