"""One study to pixels: the radiograph and one binary mask per lesion, deterministically.

Pixel model: a line integral of attenuation ``A`` (soft tissue, minus lung air, plus heart, bone
and lesions), detector blur, quantum noise whose variance grows with ``exp(A)`` (fewer photons
behind dense tissue), and a logistic characteristic curve whose centre (exposure) and width
(latitude) are the site's. Output: float32 in [0, 1], brighter = more attenuation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cxrsynth.tasks.sources.phantom import anatomy, geometry
from cxrsynth.tasks.sources.phantom.geometry import Frame, Layers, make_frame, study_geometry
from cxrsynth.tasks.sources.phantom.lesions import DRAWERS
from cxrsynth.tasks.sources.phantom.study import SIDES, Acquisition, Study


@dataclass
class Rendering:
    image: np.ndarray  # float32 (size, size) in [0, 1]
    masks: dict[str, np.ndarray]  # finding -> bool (size, size), one per lesion of the study


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
    frame = make_frame(size, spacing_mm, study.acquisition)
    geo = study_geometry(study, any(lesion.finding == "cardiomegaly" for lesion in drawn), lesion_contrast)
    anat = study.anatomy
    soft, half_width = anatomy.body(frame, anat)
    heart_r2 = geometry.heart_r2(frame, geo)
    # the heart's lowest part hides in the abdomen's density: draw and mask only what shows
    silhouette = (heart_r2 < 1) & (frame.y < geometry.diaphragm(frame, geo))
    heart = np.sqrt(np.clip(1 - heart_r2, 0, None)) * silhouette
    envelopes = {side: geometry.lung_envelope(frame, geo, side) for side in SIDES}
    envelope = envelopes["right"] | envelopes["left"]
    lungs = {side: mask & (heart_r2 >= 1) for side, mask in envelopes.items()}
    air = anatomy.lung_air(frame, envelope, heart_r2)
    vessels = anatomy.vessels(frame, geo, anat) * envelope
    markings = vessels + 0.018 * anatomy.texture(frame, anat.texture_seed) * envelope
    layers = Layers(lungs, envelopes, air, markings, vessels)

    attenuation = (soft + anatomy.bones(frame, geo, anat, half_width) - 1.1 * air + markings + 0.12 * heart
                   - 0.4 * anatomy.within(frame, anatomy.near(frame.x, geo.x_mid, 0.3, axis=0), anatomy.trachea, geo)
                   + anatomy.aorta(frame, geo) + anatomy.breasts(frame, anat)
                   - anatomy.stomach_bubble(frame, geo, anat))
    masks: dict[str, np.ndarray] = {}
    for lesion in drawn:
        if lesion.finding == "cardiomegaly":
            masks["cardiomegaly"] = silhouette
            continue
        delta, mask = DRAWERS[lesion.finding](lesion, frame, geo, layers)
        attenuation += lesion_contrast * delta
        masks[lesion.finding] = mask
    image = _expose(attenuation, frame, study.acquisition)
    return Rendering(image=image, masks=masks)


def _expose(attenuation: np.ndarray, frame: Frame, acq: Acquisition) -> np.ndarray:
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
