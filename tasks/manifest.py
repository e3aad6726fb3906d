"""The manifest: one row per image, one schema, owned column by column by the stages.

Every stage reads and writes Parquet manifests through this module. A stage adds the columns it
owns (``COLUMNS[stage]``) and never rewrites what an earlier stage wrote; ``extend`` enforces that.
Paths are relative to the project root. Writes are atomic.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cxrsynth.tasks.findings import FINDINGS
from cxrsynth.tasks.io import write_parquet

SPLITS = ("train", "val", "test", "reserve")  # reserve: the phantom's extra real positives, only the ceiling variant trains on
SOURCES = ("real", "synthetic")

STRING = pa.string()
LABEL = pa.int8()  # 1 present, 0 absent, -1 uncertain, null not mentioned


def _finding_columns(template: str, dtype: pa.DataType) -> dict[str, pa.DataType]:
    return {template.format(finding=finding): dtype for finding in FINDINGS}


# Owner stage -> the columns it writes, in order. Later stages see every earlier stage's columns.
COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "ingest": {
        "image_id": STRING,
        "patient_id": STRING,  # a pseudonym made in ingest, never the source's identifier
        "study_id": STRING,
        "split": STRING,
        "source": STRING,
        "dataset": STRING,
        "site": STRING,
        "path": STRING,
        "view": STRING,
        "orig_height": pa.int32(),
        "orig_width": pa.int32(),
        "scale": pa.float32(),  # working pixels per source pixel
        "pad_top": pa.int32(),
        "pad_left": pa.int32(),
        "pixel_spacing_mm": pa.float32(),  # at working resolution; null where unknown
        **_finding_columns("structured_{finding}", LABEL),  # the source's own label file
        "report": STRING,
    },
    "parse_reports": {
        **_finding_columns("report_{finding}", LABEL),  # as the report states it
        **_finding_columns("{finding}", LABEL),  # final state after the uncertain-label policy
        **_finding_columns("{finding}_laterality", STRING),
        **_finding_columns("{finding}_location", STRING),
        **_finding_columns("{finding}_severity", STRING),
        "prompt": STRING,
    },
    "prepare_masks": {
        "mask_path": STRING,  # bit-coded label map: bit i set where FINDINGS[i] is; null if none
        "n_lesions": pa.int16(),
    },
    "generate": {
        "condition_type": STRING,
        "seed": pa.int64(),
        "sampler": STRING,
        "steps": pa.int32(),
        "guidance_scale": pa.float32(),
        "checkpoint_digest": STRING,
        "template_image_id": STRING,  # the real training image whose mask was moved, if any
    },
}
STAGE_ORDER = tuple(COLUMNS)
KEY = "image_id"


class ManifestError(ValueError):
    """A manifest that breaks the contract; the message names the column and rows."""


def schema_for(stage: str) -> pa.Schema:
    """The Arrow schema of a manifest as written by ``stage`` (its columns and all earlier ones)."""
    fields: list[pa.Field] = []
    for owner in STAGE_ORDER[: STAGE_ORDER.index(stage) + 1]:
        fields += [pa.field(name, dtype) for name, dtype in COLUMNS[owner].items()]
    return pa.schema(fields)


def owner_of(column: str) -> str | None:
    return next((stage for stage, columns in COLUMNS.items() if column in columns), None)


def empty(stage: str = "ingest") -> pd.DataFrame:
    return from_arrow(schema_for(stage).empty_table())


_PANDAS_TYPES = {
    pa.string(): pd.StringDtype(),
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.float32(): pd.Float32Dtype(),
    pa.float64(): pd.Float64Dtype(),
}


def _pandas_type(dtype: pa.DataType):
    return _PANDAS_TYPES.get(dtype)


def from_arrow(table: pa.Table) -> pd.DataFrame:
    """Arrow to pandas with nullable dtypes, so an int8 label with nulls stays int8."""
    return table.to_pandas(types_mapper=_pandas_type)


def conform(frame: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Order and type ``frame``'s columns as ``stage`` writes them; missing stage columns become null."""
    schema = schema_for(stage)
    extra = [c for c in frame.columns if c not in schema.names]
    if extra:
        raise ManifestError(f"columns not in the manifest schema at stage {stage!r}: {', '.join(extra)}")
    out = pd.DataFrame(index=frame.index)
    for field in schema:
        dtype = _pandas_type(field.type)
        if field.name in frame.columns:
            column = frame[field.name]
            try:
                out[field.name] = column.astype(dtype) if dtype is not None else column
            except (TypeError, ValueError) as exc:
                raise ManifestError(f"column {field.name!r} cannot be {field.type}: {exc}") from None
        else:
            out[field.name] = pd.Series(pd.NA, index=frame.index, dtype=dtype)
    return out.reset_index(drop=True)


def validate(frame: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Check the contract: schema, unique ids, known splits and sources, label values, no leaks."""
    frame = conform(frame, stage)
    required = ("image_id", "split", "source", "dataset", "path")
    for column in required:
        missing = frame.index[frame[column].isna()].tolist()
        if missing:
            raise ManifestError(f"column {column!r} is null in rows {missing[:10]}")
    duplicated = frame.loc[frame[KEY].duplicated(), KEY].tolist()
    if duplicated:
        raise ManifestError(f"image_id not unique: {duplicated[:10]}")
    _check_values(frame, "split", SPLITS)
    _check_values(frame, "source", SOURCES)
    for column in frame.columns:
        if frame[column].dtype == pd.Int8Dtype():
            bad = frame.index[frame[column].notna() & ~frame[column].isin([-1, 0, 1])].tolist()
            if bad:
                raise ManifestError(f"column {column!r} holds values outside -1/0/1/null in rows {bad[:10]}")
    synthetic_held_out = frame.index[(frame["source"] == "synthetic") & (frame["split"] != "train")].tolist()
    if synthetic_held_out:
        raise ManifestError(f"synthetic images outside the train split in rows {synthetic_held_out[:10]}")
    check_patient_splits(frame)
    return frame


def _check_values(frame: pd.DataFrame, column: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    bad = frame.index[~frame[column].isin(allowed)].tolist()
    if bad:
        raise ManifestError(f"column {column!r} must be one of {allowed}; rows {bad[:10]} are not")


def check_patient_splits(frame: pd.DataFrame) -> None:
    """No patient may appear in two splits."""
    real = frame[frame["patient_id"].notna()]
    splits_per_patient = real.groupby("patient_id")["split"].nunique()
    leaking = splits_per_patient[splits_per_patient > 1].index.tolist()
    if leaking:
        raise ManifestError(f"patients in more than one split: {leaking[:10]}")


def write(frame: pd.DataFrame, path: str | Path, stage: str) -> pd.DataFrame:
    """Validate and atomically write a manifest as ``stage`` owns it; return what was written."""
    frame = validate(frame, stage)
    write_parquet(path, frame, schema_for(stage))
    return frame


def read(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found (has the stage that writes it run?)")
    return from_arrow(pq.read_table(path))


def extend(base: pd.DataFrame, additions: pd.DataFrame, stage: str) -> pd.DataFrame:
    """Join ``stage``'s own columns onto ``base`` by image_id, refusing to touch any other column."""
    own = set(COLUMNS[stage])
    foreign = [c for c in additions.columns if c != KEY and c not in own]
    if foreign:
        owners = {c: owner_of(c) for c in foreign}
        raise ManifestError(f"stage {stage!r} may not write columns owned elsewhere: {owners}")
    if KEY not in additions.columns:
        raise ManifestError(f"stage {stage!r} additions lack the {KEY!r} column")
    unknown = sorted(set(additions[KEY]) - set(base[KEY]))
    if unknown:
        raise ManifestError(f"stage {stage!r} adds rows for images not in the manifest: {unknown[:10]}")
    kept = base.drop(columns=[c for c in base.columns if c in own])
    return kept.merge(additions, on=KEY, how="left", validate="one_to_one")


def label_matrix(frame: pd.DataFrame, prefix: str = "") -> np.ndarray:
    """Finding states as a float array (n, len(FINDINGS)) with NaN for not mentioned."""
    columns = [f"{prefix}{finding}" for finding in FINDINGS]
    return frame[columns].astype("Float32").to_numpy(dtype=np.float32, na_value=np.nan)


def resolve(root: str | Path, relative: str) -> Path:
    return Path(root) / relative
