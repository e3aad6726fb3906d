"""The normal chest as attenuation: soft tissue, bones, airways, lung air, vessels and texture.

Attenuation units: ~2.0 is the full soft-tissue thickness of the trunk; lung air takes up to ~1.1 off.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage

from cxrsynth.tasks.sources.phantom.geometry import Frame, Geometry, ellipse_r2, smoothstep
from cxrsynth.tasks.sources.phantom.study import SIDES, Anatomy


def _tube(distance, half):
    """Projected thickness across a bone of radius ``half``: cortex brighter than marrow."""
    outer = np.sqrt(np.clip(1 - (distance / half) ** 2, 0, None))
    inner = np.sqrt(np.clip(1 - (distance / (0.65 * half)) ** 2, 0, None))
    return outer - 0.3 * inner


def body(frame: Frame, anat: Anatomy):
    """Soft-tissue thickness of the trunk, neck and shoulders."""
    y = frame.y
    bw = anat.body_width
    neck, shoulders, chest = 0.27 * bw, 1.2 * bw, 0.97 * bw
    half_width = (neck + (shoulders - neck) / (1 + np.exp(-(y + 0.8) / 0.05))
                  - (shoulders - chest) / (1 + np.exp(-(y + 0.38) / 0.12)))
    thickness = np.cbrt(np.clip(1 - np.abs(frame.x / half_width) ** 3, 0, None))  # a rounded box
    shoulder_girdle = 0.3 * smoothstep((-0.4 - y) / 0.3)  # muscle over the apices
    return (2.0 * anat.body_depth + shoulder_girdle) * thickness, half_width


def bones(frame: Frame, geo: Geometry, anat: Anatomy, half_width) -> np.ndarray:
    spine = within(frame, near(frame.x, geo.x_mid, 0.13, axis=0), _spine, geo, anat)
    clavicles = within(frame, near(frame.y, -0.68 * anat.lung_height, 0.25, axis=1), _clavicles, anat)
    return _ribs(frame, anat, half_width) + clavicles + spine


def near(coordinate: np.ndarray, centre: float, half_width: float, axis: int) -> tuple[slice, slice]:
    """The rows (axis=1) or columns (axis=0) of the grid where a coordinate comes near a value."""
    hits = np.flatnonzero((np.abs(coordinate - centre) < half_width).any(axis=axis))
    span = slice(hits[0], hits[-1] + 1) if hits.size else slice(0, 0)
    return (slice(None), span) if axis == 0 else (span, slice(None))


def within(frame: Frame, band: tuple[slice, slice], draw, *args) -> np.ndarray:
    """Draw a structure only inside the band of the grid it can reach (it is zero elsewhere)."""
    out = np.zeros_like(frame.x)
    out[band] = draw(replace(frame, x=frame.x[band], y=frame.y[band]), *args)
    return out


def _ribs(frame: Frame, anat: Anatomy, half_width) -> np.ndarray:
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
        posterior_window = smoothstep((u - 0.06) / 0.04) * smoothstep((u_end - u) / 0.06)
        anterior_window = smoothstep((u - 0.28) / 0.08) * smoothstep((u_end - u) / 0.03)
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


def _clavicles(frame: Frame, anat: Anatomy) -> np.ndarray:
    total = np.zeros_like(frame.x)
    y0 = -0.62 * anat.lung_height
    for s in SIDES.values():
        u = s * frame.x
        t = np.clip(u - 0.06, 0, None)
        centre = y0 - 0.2 * t + 0.04 * np.sin(np.pi * t / 0.62)
        slope = -0.2 + 0.04 * np.pi / 0.62 * np.cos(np.pi * t / 0.62)
        distance = (frame.y - centre) / np.sqrt(1 + slope * slope)
        half = 0.03 + 0.012 * np.exp(-t / 0.06)  # the sternal end is bulbous
        window = smoothstep((u - 0.05) / 0.03) * smoothstep((0.78 * anat.body_width - u) / 0.05)
        total += 0.5 * window * _tube(distance, half)
    return total


def _spine(frame: Frame, geo: Geometry, anat: Anatomy) -> np.ndarray:
    period = anat.rib_spacing * anat.lung_height
    dx = frame.x - geo.x_mid
    phase = np.mod((frame.y + 0.86 * anat.lung_height) / period + 0.3, 1.0)
    body_rows = smoothstep(phase / 0.1) * smoothstep((0.9 - phase) / 0.1)
    bodies = 0.2 * body_rows * _tube(dx, 0.1)
    pedicles = sum(
        _tube(np.sqrt(ellipse_r2(dx, phase * period, s * 0.065, 0.4 * period, 0.02, 0.032)), 1.0)
        for s in (-1, 1)
    )
    spinous = np.sqrt(np.clip(1 - ellipse_r2(dx, phase * period, 0.0, 0.72 * period, 0.014, 0.035), 0, None))
    return bodies + 0.15 * pedicles + 0.12 * spinous


def trachea(frame: Frame, geo: Geometry) -> np.ndarray:
    carina = geo.hilum["left"][1] - 0.08
    dx = frame.x - geo.x_mid - 0.01
    column = np.sqrt(np.clip(1 - (dx / 0.045) ** 2, 0, None)) * smoothstep((carina - frame.y) / 0.03)
    air = column
    for side, angle in (("right", 0.5), ("left", 0.85)):
        s = SIDES[side]
        along = (frame.y - carina) * np.cos(angle) + s * dx * np.sin(angle)
        across = -(frame.y - carina) * np.sin(angle) + s * dx * np.cos(angle)
        inside = smoothstep(along / 0.02) * smoothstep((0.16 - along) / 0.05)
        air = np.maximum(air, 0.8 * inside * np.sqrt(np.clip(1 - (across / 0.03) ** 2, 0, None)))
    return air


def vessels(frame: Frame, geo: Geometry, anat: Anatomy) -> np.ndarray:
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


def texture(frame: Frame, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal((frame.size, frame.size)).astype(np.float32)
    band = ndimage.gaussian_filter(noise, frame.px(1.2)) - ndimage.gaussian_filter(noise, frame.px(4.0))
    return band / (band.std() + 1e-6)


def lung_air(frame: Frame, envelope: np.ndarray, heart_r2: np.ndarray) -> np.ndarray:
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


def aorta(frame: Frame, geo: Geometry) -> np.ndarray:
    knob = np.sqrt(np.clip(1 - ellipse_r2(frame.x, frame.y, geo.x_mid + 0.1, -0.33, 0.08, 0.065), 0, None))
    return 0.15 * knob


def breasts(frame: Frame, anat: Anatomy) -> np.ndarray:
    if anat.breast == 0:
        return np.zeros_like(frame.x)
    total = np.zeros_like(frame.x)
    for s in SIDES.values():
        r = np.sqrt(ellipse_r2(frame.x, frame.y, s * 0.52 * anat.body_width, 0.45, 0.4, 0.32))
        # a convex lower edge, fading out upwards over the pectoral muscle
        total += smoothstep((1 - r) / 0.35) * smoothstep((frame.y - 0.2) / 0.35)
    return 0.22 * anat.breast * total


def stomach_bubble(frame: Frame, geo: Geometry, anat: Anatomy) -> np.ndarray:
    if anat.stomach_bubble == 0:
        return np.zeros_like(frame.x)
    cy = geo.dome["left"] + 0.1
    r2 = ellipse_r2(frame.x, frame.y, geo.x_mid + 0.42, cy, 0.12 * anat.stomach_bubble, 0.07)
    gas = np.sqrt(np.clip(1 - r2, 0, None)) * (frame.y < cy + 0.02)  # flat fluid level below
    return 0.45 * gas
