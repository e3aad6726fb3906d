"""Training-set variants for the downstream classifier: the baselines and real + synthetic mixes.

Every variant is a manifest (written with the ``generate`` schema, the widest, so all variants
share columns) that references images and never copies them. It holds the real training rows, the
synthetic rows drawn for it (ratio variants only) and the real validation rows, which training
uses for early stopping. Test rows are never in a variant, synthetic rows only ever in train, reserve
rows only in the ceiling's train.

Where a variant lives is dvc.yaml's to say (the outs of the mix stage that writes it, see
``variant_path``). A variant's settings travel in a sidecar JSON beside its manifest (``<name>.json`` next to
``<name>.parquet``): its kind and ratio, whether classical augmentation is on (and how strong),
which class balancing it uses, and the row counts. Training reads both, so a variant changes only
what the classifier is trained on; the architecture, seed and budget come from ``classifier``.

Ratio variants: for each finding the synthetic set holds, ``round(ratio * n)`` synthetic images are
added, ``n`` being the real training images with that finding present, capped by
``mix.cap_per_finding`` and by what the synthetic set has. Each synthetic image counts for one
finding (the rarest in the real training split among those it shows), and each finding's images are
permuted once with ``mix.seed``; a variant takes the first ones, so a smaller ratio's synthetic rows
are a subset of a larger ratio's and the variants differ only in how many synthetic images they add.

The ``ceiling`` baseline (phantom only) is the more-real-data ceiling: real only plus, per rare
finding, as many *real* positives from the phantom's reserve collection (new patients of the
training distribution, split ``reserve``, in no other variant) as the ratio variant at
``mix.ceiling_ratio`` asks for synthetic ones: the same rule and the same draw, capped by
``mix.cap_per_finding`` and by what the reserve has. Its sidecar records the counts per finding.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxrsynth.tasks import manifest
from cxrsynth.tasks.findings import FINDINGS, finding_index
from cxrsynth.tasks.io import write_json
from cxrsynth.tasks.manifest import ManifestError
from cxrsynth.tasks.params import Params, variant_name
from cxrsynth.tasks.stages import Dag

SCHEMA_STAGE = "generate"  # the widest schema: real and synthetic rows side by side
BASELINES_VARIANT = "baselines"  # the mix CLI variant that writes every baseline at once
CEILING = "ceiling"  # the baseline that adds real reserve positives instead of synthetic ones


def ratio_variants(params: Params) -> dict[str, int | float]:
    """Ratio variant name -> ratio, named as dvc.yaml's foreach renders them."""
    return {variant_name(ratio): ratio for ratio in params.mix.ratios}


def variants(params: Params) -> list[str]:
    """Every classifier variant the params define: the baselines, then the ratios in order."""
    return [*params.mix.baselines, *ratio_variants(params)]


def ratio_of(variant: str, params: Params) -> int | float | None:
    """The synthetic ratio of a variant; None for a baseline. Unknown names raise, listing the choices."""
    if variant in params.mix.baselines:
        return None
    ratios = ratio_variants(params)
    if variant not in ratios:
        raise ValueError(f"unknown variant {variant!r}; params define {', '.join(variants(params))}")
    return ratios[variant]


def mix_variant(variant: str, params: Params) -> str:
    """The ``--variant`` of the mix stage that writes ``variant``: every baseline is written by one."""
    return BASELINES_VARIANT if ratio_of(variant, params) is None else variant


def variant_path(dag: Dag, variant: str, params: Params, reader: str | None = None) -> Path:
    """The variant's manifest, an out of the mix stage that writes it in dvc.yaml; when ``reader``
    names a stage, checked to be one of its deps."""
    producer = dag.stage_for("mix", mix_variant(variant, params)).name
    name = f"{variant}.parquet"
    return dag.output(producer, name) if reader is None else dag.input(reader, producer, name)


def config_path(manifest_path: str | Path) -> Path:
    """The sidecar JSON of the variant's settings, beside its manifest."""
    return Path(manifest_path).with_suffix(".json")


def check_real(frame: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """The prepared manifest, checked to hold only real rows."""
    not_real = frame.index[frame["source"] != "real"].tolist()
    if not_real:
        raise ManifestError(f"{source}: rows {not_real[:10]} are not real images; the real input must hold only real rows")
    return frame


def real_rows(frame: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """The real train and validation rows of the prepared manifest (test and reserve rows stay out of every variant;
    the ceiling adds reserve rows of its own)."""
    frame = check_real(frame, source)
    return frame[frame["split"].isin(["train", "val"])].reset_index(drop=True)


def reserve_rows(frame: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """The prepared manifest's reserve: real images of new patients that only the ceiling variant trains on."""
    frame = check_real(frame, source)
    return frame[frame["split"] == "reserve"].reset_index(drop=True)


def check_synthetic(frame: pd.DataFrame, source: str | Path) -> pd.DataFrame:
    """Validate a synthetic manifest: generate-stage schema, every row synthetic and in train."""
    try:
        frame = manifest.validate(frame, SCHEMA_STAGE)
    except ManifestError as exc:
        raise ManifestError(f"{source}: {exc}") from None
    not_synthetic = frame.index[frame["source"] != "synthetic"].tolist()
    if not_synthetic:
        raise ManifestError(f"{source}: rows {not_synthetic[:10]} are not synthetic")
    return frame


def assert_no_synthetic_held_out(frame: pd.DataFrame, where: str) -> None:
    """Nothing synthetic may reach validation or test; a variant that breaks this is never written."""
    leaked = frame.index[(frame["source"] == "synthetic") & (frame["split"] != "train")].tolist()
    if leaked:
        raise ManifestError(f"{where}: synthetic rows {leaked[:10]} are outside the train split")


def present(frame: pd.DataFrame, finding: str) -> np.ndarray:
    """Boolean per row: the finding's state is 1 (null counts as not present)."""
    return frame[finding].eq(1).fillna(False).to_numpy(dtype=bool)


def positives(frame: pd.DataFrame) -> dict[str, int]:
    """Rows with each finding present (state 1)."""
    return {finding: int(present(frame, finding).sum()) for finding in FINDINGS}


def target_findings(synthetic: pd.DataFrame, real_train: pd.DataFrame) -> pd.Series:
    """The one finding each synthetic image counts for: the rarest in real train among those it shows."""
    real_counts = positives(real_train)
    by_rarity = sorted(FINDINGS, key=lambda finding: (real_counts[finding], finding_index(finding)))
    target = pd.Series(pd.NA, index=synthetic.index, dtype="string")
    for finding in reversed(by_rarity):  # the rarest assigned last, so it wins
        target[present(synthetic, finding)] = finding
    return target


def requested_count(ratio: float, real_positives: int) -> int:
    """Images a ratio asks for per finding: ``ratio`` per real training positive, rounded half up."""
    return int(np.floor(ratio * real_positives + 0.5))


def draw_per_finding(
    real_train: pd.DataFrame, pool: pd.DataFrame, ratio: float, cap: int, seed: int, findings: Sequence[str] = FINDINGS
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Rows of ``pool`` for one ratio: per finding of ``findings``, the first ``min(requested, cap, available)`` of
    the images counting for it in a permutation fixed by the seed; and per finding the real positives,
    requested, available and drawn counts."""
    pool = pool.sort_values(manifest.KEY, kind="stable").reset_index(drop=True)
    target = target_findings(pool, real_train)
    real_counts = positives(real_train)
    chosen: list[pd.DataFrame] = []
    counts: dict[str, dict[str, int]] = {}
    for finding in findings:
        candidates = pool[target.eq(finding).fillna(False).to_numpy(dtype=bool)]
        if candidates.empty:
            continue
        order = np.random.default_rng([seed, finding_index(finding)]).permutation(len(candidates))
        requested = requested_count(ratio, real_counts[finding])
        drawn = min(requested, cap, len(candidates))
        chosen.append(candidates.iloc[order[:drawn]])
        counts[finding] = {"real": real_counts[finding], "requested": requested, "available": len(candidates),
                           "drawn": drawn}
    rows = pd.concat(chosen, ignore_index=True) if chosen else pool.iloc[:0]
    return rows, counts


def draw_synthetic(
    real_train: pd.DataFrame, synthetic: pd.DataFrame, ratio: float, cap: int, seed: int
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Synthetic rows for one ratio and, per finding, the real positives, requested, available and drawn counts."""
    return draw_per_finding(real_train, synthetic, ratio, cap, seed)


def _split_counts(frame: pd.DataFrame) -> dict[str, int]:
    groups = frame.groupby(["source", "split"]).size()
    return {f"{source}_{split}": int(count) for (source, split), count in groups.items()}


def baseline_config(name: str, params: Params) -> dict:
    """A baseline's settings: augmentation on only for classical_aug, balancing only for class_weighted."""
    return {
        "variant": name,
        "kind": "baseline",
        "ratio": None,
        "augmentation": params.mix.augmentation.model_dump(mode="json") if name == "classical_aug" else None,
        "class_balance": params.mix.class_balance if name == "class_weighted" else "none",
        "seed": params.mix.seed,
    }


def build_baseline(real: pd.DataFrame, name: str, params: Params) -> tuple[pd.DataFrame, dict]:
    """A baseline variant: the real train and val rows, and its settings (the ceiling: ``build_ceiling``)."""
    if name == CEILING:
        raise ValueError(f"{CEILING} adds reserve images: build it with build_ceiling")
    frame = manifest.conform(real, SCHEMA_STAGE)
    assert_no_synthetic_held_out(frame, f"baseline {name}")
    config = baseline_config(name, params) | {"counts": _split_counts(frame)}
    return frame, config


def ceiling_ratio(params: Params) -> int | float:
    """The ratio whose synthetic count the ceiling matches with reserve images: mix.ceiling_ratio, else the largest."""
    return max(params.mix.ratios) if params.mix.ceiling_ratio is None else params.mix.ceiling_ratio


def build_ceiling(real: pd.DataFrame, reserve: pd.DataFrame, params: Params) -> tuple[pd.DataFrame, dict]:
    """The more-real-data ceiling: the real train and val rows plus, per rare finding, as many reserve positives as
    the ceiling ratio's variant asks for synthetic images of it (the same rule and cap), as training rows."""
    if reserve.empty:
        raise ManifestError(f"mix.baselines: {CEILING} needs reserve images (the phantom source with "
                            "phantom.reserve_positives > 0), and the prepared manifest has none")
    real_train = real[real["split"] == "train"]
    ratio = ceiling_ratio(params)
    rare = params.generate.rare_findings
    drawn, per_finding = draw_per_finding(real_train, reserve, ratio, params.mix.cap_per_finding, params.mix.seed, rare)
    for finding in rare:  # a rare finding the reserve lacks is recorded too, with nothing drawn
        real_count = positives(real_train)[finding]
        per_finding.setdefault(finding, {"real": real_count, "requested": requested_count(ratio, real_count),
                                         "available": 0, "drawn": 0})
    added = drawn.assign(split="train")  # a training image of this variant; the ingest manifest still says reserve
    frame = pd.concat([manifest.conform(real, SCHEMA_STAGE), manifest.conform(added, SCHEMA_STAGE)], ignore_index=True)
    assert_no_synthetic_held_out(frame, f"baseline {CEILING}")
    config = baseline_config(CEILING, params) | {
        "ceiling_ratio": ratio,
        "cap_per_finding": params.mix.cap_per_finding,
        "counts": _split_counts(frame) | {"reserve_train": len(added)},
        "reserve_per_finding": per_finding,
    }
    return frame, config


def build_ratio(real: pd.DataFrame, synthetic: pd.DataFrame, ratio: int | float, params: Params) -> tuple[pd.DataFrame, dict]:
    """A ratio variant: the real train and val rows plus the synthetic rows drawn for ``ratio``."""
    real_train = real[real["split"] == "train"]
    drawn, per_finding = draw_synthetic(real_train, synthetic, ratio, params.mix.cap_per_finding, params.mix.seed)
    frame = pd.concat([manifest.conform(real, SCHEMA_STAGE), manifest.conform(drawn, SCHEMA_STAGE)], ignore_index=True)
    name = variant_name(ratio)
    assert_no_synthetic_held_out(frame, f"variant {name}")
    config = {
        "variant": name,
        "kind": "ratio",
        "ratio": ratio,
        "augmentation": None,
        "class_balance": "none",
        "seed": params.mix.seed,
        "cap_per_finding": params.mix.cap_per_finding,
        "counts": _split_counts(frame),
        "synthetic_per_finding": per_finding,
    }
    return frame, config


def write_variant(frame: pd.DataFrame, config: dict, path: str | Path) -> Path:
    """Write the variant's manifest (validated, atomic) to ``path`` and then its sidecar; return ``path``."""
    path = Path(path)
    manifest.write(frame, path, SCHEMA_STAGE)
    write_json(config_path(path), config | {"manifest": path.name})
    return path


def read_variant(variant: str, path: str | Path) -> tuple[pd.DataFrame, dict]:
    """A variant's manifest and settings, checked again: a hand-edited file cannot leak synthetic rows."""
    path = Path(path)
    frame = manifest.read(path)
    assert_no_synthetic_held_out(frame, str(path))
    sidecar = config_path(path)
    if not sidecar.exists():
        raise ManifestError(f"{sidecar}: variant settings not found (has `mix` written {variant!r}?)")
    config = json.loads(sidecar.read_text())
    if config.get("variant") != variant:
        raise ManifestError(f"{sidecar}: describes variant {config.get('variant')!r}, expected {variant!r}")
    return frame, config
