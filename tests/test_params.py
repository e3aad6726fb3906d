import pytest
import yaml

from cxrsynth.tasks.params import Params, ParamsError, load_params, parse_params, variant_name
from tests.conftest import ROOT, TINY_PARAMS


def _keys(mapping, prefix=""):
    for key, value in mapping.items():
        if isinstance(value, dict) and key != "prevalence":
            yield from _keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


@pytest.mark.parametrize("path", [ROOT / "params.yaml", TINY_PARAMS])
def test_profiles_load_and_name_every_knob(path):
    load_params(path)
    written = set(_keys(yaml.safe_load(path.read_text())))
    model = set(_keys(Params().model_dump(mode="json")))
    assert written == model, f"keys missing from {path.name}: {sorted(model - written)}"


def test_unknown_key_is_named():
    with pytest.raises(ParamsError, match=r"diffusion\.train\.stepz: unknown key"):
        parse_params({"diffusion": {"train": {"stepz": 3}}})


def test_ill_typed_key_is_named_with_expectation():
    with pytest.raises(ParamsError, match=r"ingest\.image_size: .*integer"):
        parse_params({"ingest": {"image_size": "big"}})


def test_unknown_finding_in_prevalence_is_named():
    with pytest.raises(ParamsError, match="unknown finding 'pneumonia'"):
        parse_params({"phantom": {"prevalence": {"pneumonia": 0.1}}})


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ParamsError, match="ingest.split"):
        parse_params({"ingest": {"split": {"train": 0.5, "val": 0.1, "test": 0.1}}})


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ParamsError, match="nope.yaml: params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_variant_names_match_dvc_rendering():
    params = parse_params({"mix": {"ratios": [0.5, 1, 2.0]}})
    assert [variant_name(r) for r in params.mix.ratios] == ["ratio_0.5", "ratio_1", "ratio_2.0"]
