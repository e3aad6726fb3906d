import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxrsynth.tasks import manifest, mixing, stages
from cxrsynth.tasks.manifest import ManifestError
from cxrsynth.tasks.params import ParamsError, parse_params
from tests.blob_project import real_frame, synthetic_frame
from tests.conftest import ROOT


def _params(**mix):
    return parse_params({"mix": mix})


def _real(nodules: int, pneumothoraces: int, val: int = 3, test: int = 3):
    """Real rows whose train split has exactly the given positives of the two rare findings."""
    frame = real_frame({"train": 12, "val": val, "test": test}, prevalence=0.0)
    frame["nodule"] = frame["pneumothorax"] = 0
    train = frame.index[frame["split"] == "train"]
    frame.loc[train[:nodules], "nodule"] = 1
    frame.loc[train[nodules:nodules + pneumothoraces], "pneumothorax"] = 1
    frame.loc[frame.index[frame["split"] == "test"], "nodule"] = 1  # test positives must not count
    return mixing.real_rows(manifest.validate(frame, "prepare_masks"), "prepare_masks/manifest.parquet")


@pytest.mark.parametrize("ratio, cap, expected", [
    (1, 100, {"nodule": 4, "pneumothorax": 2}),
    (2, 100, {"nodule": 8, "pneumothorax": 4}),
    (0.5, 100, {"nodule": 2, "pneumothorax": 1}),
    (2, 3, {"nodule": 3, "pneumothorax": 3}),
    (5, 100, {"nodule": 10, "pneumothorax": 10}),  # only 10 generated per finding
])
def test_synthetic_counts_follow_ratio_cap_and_supply(ratio, cap, expected):
    real = _real(nodules=4, pneumothoraces=2)
    synthetic = synthetic_frame({"nodule": 10, "pneumothorax": 10})
    frame, config = mixing.build_ratio(real, synthetic, ratio, _params(cap_per_finding=cap))
    drawn = frame[frame["source"] == "synthetic"]
    assert {f: int(drawn[f].eq(1).sum()) for f in expected} == expected
    assert {f: c["drawn"] for f, c in config["synthetic_per_finding"].items()} == expected
    assert config["synthetic_per_finding"]["nodule"]["real"] == 4


def test_draw_is_reproducible_in_seed_and_nested_across_ratios():
    real = _real(nodules=4, pneumothoraces=2)
    synthetic = synthetic_frame({"nodule": 10, "pneumothorax": 10})
    draw = lambda ratio, seed: set(mixing.draw_synthetic(real[real.split == "train"], synthetic, ratio, 100, seed)[0]["image_id"])
    assert draw(1, 0) == draw(1, 0)
    assert draw(1, 0) == set(mixing.draw_synthetic(real[real.split == "train"], synthetic.iloc[::-1], 1, 100, 0)[0]["image_id"])
    assert draw(1, 0) != draw(1, 1)
    assert draw(0.5, 0) < draw(1, 0) < draw(2, 0)


def test_image_showing_two_findings_counts_for_the_rarer_once():
    real = _real(nodules=4, pneumothoraces=2)
    synthetic = synthetic_frame({"nodule": 3})
    synthetic["pneumothorax"] = synthetic["pneumothorax"].where(synthetic.index != 0, 1)
    targets = mixing.target_findings(synthetic, real[real.split == "train"])
    assert targets.tolist() == ["pneumothorax", "nodule", "nodule"]


def test_variants_hold_real_train_and_val_but_no_test_and_synthetic_only_in_train():
    real = _real(nodules=4, pneumothoraces=2)
    frame, config = mixing.build_ratio(real, synthetic_frame({"nodule": 10}), 2, _params())
    assert set(frame.loc[frame.source == "real", "split"]) == {"train", "val"}
    assert set(frame.loc[frame.source == "synthetic", "split"]) == {"train"}
    assert config["counts"] == {"real_train": 12, "real_val": 3, "synthetic_train": 8}
    leaky = frame.copy()
    leaky.loc[leaky.index[leaky.source == "synthetic"][0], "split"] = "val"
    with pytest.raises(ManifestError, match="synthetic rows .* outside the train split"):
        mixing.assert_no_synthetic_held_out(leaky, "variant x")


def _write_raw(frame, path):
    """Write a manifest bypassing manifest.write's validation, as a broken upstream stage might."""
    frame = manifest.conform(frame, "generate")
    pq.write_table(pa.Table.from_pandas(frame, schema=manifest.schema_for("generate"), preserve_index=False), path)


def test_malformed_synthetic_manifest_with_a_val_row_is_refused(tmp_path):
    synthetic = synthetic_frame({"nodule": 3})
    synthetic.loc[1, "split"] = "val"
    _write_raw(synthetic, tmp_path / "synthetic.parquet")
    with pytest.raises(ManifestError, match=r"synthetic.parquet: .*synthetic images outside the train split in rows \[1\]"):
        mixing.check_synthetic(manifest.read(tmp_path / "synthetic.parquet"), tmp_path / "synthetic.parquet")


def test_real_rows_in_the_synthetic_manifest_and_synthetic_rows_in_the_real_one_are_refused():
    synthetic = synthetic_frame({"nodule": 3})
    synthetic.loc[2, "source"] = "real"
    with pytest.raises(ManifestError, match=r"rows \[2\] are not synthetic"):
        mixing.check_synthetic(synthetic, "gen.parquet")
    with pytest.raises(ManifestError, match=r"rows \[0, 1, 2\] are not real"):
        mixing.real_rows(synthetic_frame({"nodule": 3}), "prep.parquet")


def test_baseline_configs():
    params = _params()
    configs = {name: mixing.build_baseline(_real(1, 1), name, params)[1] for name in params.mix.baselines
               if name != mixing.CEILING}
    assert configs["real_only"]["augmentation"] is None and configs["real_only"]["class_balance"] == "none"
    assert configs["classical_aug"]["augmentation"]["rotate_degrees"] == params.mix.augmentation.rotate_degrees
    assert configs["classical_aug"]["class_balance"] == "none"
    assert configs["class_weighted"]["augmentation"] is None and configs["class_weighted"]["class_balance"] == "pos_weight"
    assert mixing.baseline_config("class_weighted", _params(class_balance="oversample"))["class_balance"] == "oversample"
    assert all(c["counts"] == {"real_train": 12, "real_val": 3} and c["ratio"] is None for c in configs.values())


def test_variant_names_and_paths():
    params = _params(ratios=[0.5, 1, 2])
    assert mixing.variants(params) == ["real_only", "classical_aug", "class_weighted", "ceiling",
                                       "ratio_0.5", "ratio_1", "ratio_2"]
    assert mixing.ratio_of("ratio_0.5", params) == 0.5 and mixing.ratio_of("real_only", params) is None
    dag = stages.load(ROOT)
    assert mixing.variant_path(dag, "ratio_1", params).as_posix() == "data/mix/ratio_1.parquet"
    baseline = mixing.variant_path(dag, "classical_aug", params, reader="train_baseline@classical_aug")
    assert mixing.config_path(baseline).as_posix() == "data/mix/baselines/classical_aug.json"
    with pytest.raises(ValueError, match="unknown variant 'ratio_3'; params define .*ratio_0.5"):
        mixing.ratio_of("ratio_3", params)


def test_variant_roundtrip_and_hand_edited_leak_is_caught_on_read(tmp_path):
    params = _params()
    frame, config = mixing.build_ratio(_real(4, 2), synthetic_frame({"nodule": 10}), 1, params)
    path = mixing.write_variant(frame, config, tmp_path / "ratio_1.parquet")
    back, sidecar = mixing.read_variant("ratio_1", path)
    assert len(back) == len(frame) and sidecar["manifest"] == "ratio_1.parquet" and sidecar["ratio"] == 1
    assert json.loads(path.with_suffix(".json").read_text())["synthetic_per_finding"]["nodule"]["drawn"] == 4
    back.loc[back.index[back.source == "synthetic"][0], "split"] = "test"
    _write_raw(back, path)
    with pytest.raises(ManifestError, match="ratio_1.parquet: synthetic rows"):
        mixing.read_variant("ratio_1", path)


@pytest.mark.slow
def test_mix_flow_writes_baselines_and_a_ratio(tmp_path, blob_project):
    from cxrsynth.flows.mix import mix_flow

    real = real_frame({"train": 20, "val": 6, "test": 6, "reserve": 12})
    blob_project(real, synthetic_frame({"nodule": 8, "pneumothorax": 8}))
    mix_flow("params.yaml", variant="baselines")
    mix_flow("params.yaml", variant="ratio_1")
    baselines = sorted(p.name for p in (tmp_path / "data/mix/baselines").iterdir())
    names = ("real_only", "classical_aug", "class_weighted", "ceiling")
    assert baselines == sorted(f"{b}.{ext}" for b in names for ext in ("parquet", "json"))
    ceiling = manifest.read(tmp_path / "data/mix/baselines/ceiling.parquet")
    reserve = set(real.loc[real.split == "reserve", "image_id"])
    added = ceiling[ceiling.image_id.isin(reserve)]
    assert len(added) > 0 and set(added.split) == {"train"}
    assert not reserve & set(mixed_ids(tmp_path / "data/mix/baselines/real_only.parquet"))
    mixed = manifest.read(tmp_path / "data/mix/ratio_1.parquet")
    train = real[real.split == "train"]
    expected = sum(min(int(train[f].eq(1).sum()), 8) for f in ("nodule", "pneumothorax"))
    assert (mixed.source == "synthetic").sum() == expected
    assert "test" not in set(mixed.split) and not reserve & set(mixed.image_id)
    with pytest.raises(ValueError, match="pass --variant baselines"):
        mix_flow("params.yaml", variant="real_only")


def mixed_ids(path) -> set[str]:
    return set(manifest.read(path)["image_id"])


def _prepared(reserve: dict[str, int], nodules: int = 4, pneumothoraces: int = 2):
    """A prepared manifest whose train split holds the given rare positives, and a reserve with ``reserve[f]``
    images of finding f only, plus two images of neither."""
    frame = real_frame({"train": 12, "val": 3, "test": 3, "reserve": sum(reserve.values()) + 2}, prevalence=0.0)
    frame["nodule"] = frame["pneumothorax"] = 0
    train, spare = frame.index[frame["split"] == "train"], frame.index[frame["split"] == "reserve"]
    frame.loc[train[:nodules], "nodule"] = 1
    frame.loc[train[nodules:nodules + pneumothoraces], "pneumothorax"] = 1
    start = 0
    for finding, count in reserve.items():
        frame.loc[spare[start:start + count], finding] = 1
        start += count
    frame = manifest.validate(frame, "prepare_masks")
    source = "prepare_masks/manifest.parquet"
    return mixing.real_rows(frame, source), mixing.reserve_rows(frame, source)


@pytest.mark.parametrize("mix, expected", [
    ({"ratios": [0.5, 1, 2]}, {"nodule": 8, "pneumothorax": 4}),  # null: the largest ratio
    ({"ratios": [0.5, 1, 2], "ceiling_ratio": 1}, {"nodule": 4, "pneumothorax": 2}),
    ({"ratios": [0.5], "ceiling_ratio": 2, "cap_per_finding": 3}, {"nodule": 3, "pneumothorax": 3}),
    ({"ratios": [4]}, {"nodule": 10, "pneumothorax": 8}),  # only 10 nodules in the reserve
])
def test_ceiling_adds_as_many_reserve_positives_as_the_ratio_asks_synthetic_ones(mix, expected):
    real, reserve = _prepared({"nodule": 10, "pneumothorax": 10})
    params = _params(**mix)
    frame, config = mixing.build_ceiling(real, reserve, params)
    added = frame[frame.image_id.isin(reserve.image_id)]
    assert {f: int(added[f].eq(1).sum()) for f in expected} == expected == {
        f: c["drawn"] for f, c in config["reserve_per_finding"].items()}
    # the same count the ratio variant asks for synthetic images, where the synthetic set has enough
    ratio = mixing.ceiling_ratio(params)
    _, synthetic = mixing.build_ratio(real, synthetic_frame({"nodule": 20, "pneumothorax": 20}), ratio, params)
    assert {f: min(c["drawn"], 10) for f, c in synthetic["synthetic_per_finding"].items()} == expected
    assert config["ceiling_ratio"] == ratio and config["counts"]["reserve_train"] == sum(expected.values())


def test_ceiling_reserve_rows_only_train_it_and_held_out_rows_stay_as_real_only():
    real, reserve = _prepared({"nodule": 10, "pneumothorax": 10})
    params = _params()
    ceiling, config = mixing.build_ceiling(real, reserve, params)
    real_only, _ = mixing.build_baseline(real, "real_only", params)
    added = ceiling[ceiling.image_id.isin(reserve.image_id)]
    assert set(added.split) == {"train"} and len(added) == len(ceiling) - len(real_only)
    assert ceiling[ceiling.split != "train"].equals(real_only[real_only.split != "train"])
    assert not set(ceiling.split) & {"test", "reserve"} and set(ceiling.source) == {"real"}
    ratio, _ = mixing.build_ratio(real, synthetic_frame({"nodule": 10}), 2, params)
    for frame in (real_only, ratio):
        assert not set(frame.image_id) & set(reserve.image_id)
    assert config["kind"] == "baseline" and config["augmentation"] is None and config["class_balance"] == "none"


def test_ceiling_records_a_short_reserve_and_needs_one():
    real, reserve = _prepared({"nodule": 10, "pneumothorax": 1})
    _, config = mixing.build_ceiling(real, reserve, _params(ratios=[2]))
    assert config["reserve_per_finding"]["pneumothorax"] == {"real": 2, "requested": 4, "available": 1, "drawn": 1}
    real, reserve = _prepared({"nodule": 10})
    _, config = mixing.build_ceiling(real, reserve, _params(ratios=[2]))
    assert config["reserve_per_finding"]["pneumothorax"] == {"real": 2, "requested": 4, "available": 0, "drawn": 0}
    with pytest.raises(ManifestError, match="mix.baselines: ceiling needs reserve images"):
        mixing.build_ceiling(real, reserve.iloc[:0], _params())
    with pytest.raises(ValueError, match="build_ceiling"):
        mixing.build_baseline(real, "ceiling", _params())


def test_ceiling_is_a_params_error_without_a_reserve():
    with pytest.raises(ParamsError, match=r"mix\.baselines: ceiling needs the phantom source's reserve.*'nih'"):
        parse_params({"ingest": {"source": "nih"}})
    with pytest.raises(ParamsError, match=r"mix\.baselines: ceiling needs a reserve; phantom\.reserve_positives is 0"):
        parse_params({"phantom": {"reserve_positives": 0}})
    parse_params({"ingest": {"source": "nih"}, "mix": {"baselines": ["real_only"]}})  # without it: fine
    with pytest.raises(ParamsError, match=r"mix\.ceiling_ratio: null means the largest of mix\.ratios"):
        _params(ratios=[])
    assert mixing.ceiling_ratio(_params(ratios=[], ceiling_ratio=3)) == 3
