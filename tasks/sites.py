"""Acquisition sites: which real images may train anything when ``evaluate.train_sites`` names some.

The manifest's ``site`` column holds ingest's site pseudonyms (``site-1``, ``site-2``, ... in the
collection's listing order; null where the source records none). With ``evaluate.train_sites`` set,
the seed's cross-site test runs: every classifier variant trains, and selects its epoch, on the
training and validation images of those sites only, and is tested on the test images of every site.

The validation split follows the training sites because it steers training (early stopping, the
kept epoch): validating on a held-out site would let that site shape the model, and a user who
holds site A's data only has no site B images to validate on either.

The diffusion model and its generation plan follow them too (train_diffusion and generate call
``training_sites_only``): a generator that learned from site B's training images would carry site B's
look into every synthetic variant, and the cross-site test would then measure that leak rather than
what synthetic images do for a classifier that never saw site B.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pandas as pd

TRAIN_SITES_KEY = "evaluate.train_sites"
TRAINING_SPLITS = ("train", "val", "reserve")  # reserve: the ceiling variant's extra real training images


def site_order(sites: Iterable[str]) -> list[str]:
    """Distinct site names in natural order: site-2 before site-10."""
    return sorted(set(sites), key=lambda name: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)])


def sites_in(frame: pd.DataFrame) -> list[str]:
    """The distinct sites ``frame`` names (rows without a site left out), in natural order."""
    if "site" not in frame.columns:
        return []
    return site_order(str(site) for site in frame["site"].dropna().unique())


def check_train_sites(frame: pd.DataFrame, train_sites: Sequence[str]) -> None:
    """Every named site must have training or validation images in ``frame``; the error names the key."""
    known = sites_in(frame[frame["split"].isin(TRAINING_SPLITS)])
    missing = [site for site in train_sites if site not in known]
    if missing:
        held = ", ".join(known) if known else "none (the source records no acquisition site)"
        raise ValueError(f"{TRAIN_SITES_KEY}: {', '.join(map(repr, missing))} not among the sites of the training "
                         f"and validation images; the data has: {held}")


def training_sites_only(frame: pd.DataFrame, train_sites: Sequence[str] | None) -> pd.DataFrame:
    """``frame`` with its real train and val rows from other sites (or from no site) dropped; test and
    synthetic rows untouched. ``train_sites`` None: every row kept."""
    if train_sites is None:
        return frame
    check_train_sites(frame[frame["source"] == "real"], train_sites)
    training = frame["split"].isin(TRAINING_SPLITS) & (frame["source"] == "real")
    from_named_site = frame["site"].isin(list(train_sites)).fillna(False).astype(bool)
    return frame[~training | from_named_site].reset_index(drop=True)
