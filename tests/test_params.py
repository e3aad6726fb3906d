import copy

import pytest
import yaml

from cxrsynth.tasks.params import Params, ParamsError, load_params, parse_params, variant_name
from tests.conftest import ROOT, TINY_PARAMS, _merge


def _items(mapping, prefix=""):
    """(dotted key, value) of every knob; ``prevalence`` is one knob, a finding -> share mapping."""
    for key, value in mapping.items():
        if isinstance(value, dict) and key != "prevalence":
            yield from _items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _keys(mapping):
    return (key for key, _ in _items(mapping))


def _values(params: Params) -> dict:
    return dict(_items(params.model_dump(mode="json")))


@pytest.mark.parametrize("path", [ROOT / "params.yaml", TINY_PARAMS])
def test_profiles_load_and_name_every_knob(path):
    load_params(path)
    written = set(_keys(yaml.safe_load(path.read_text())))
    model = set(_keys(Params().model_dump(mode="json")))
    assert written == model, f"keys missing from {path.name}: {sorted(model - written)}"


# The tiny profile is the default profile made small enough to run the whole DAG in minutes: fewer
# and smaller images, a smaller and shorter-trained model, fewer samples and bootstrap rounds, and
# rare findings common enough that 80 patients hold some. Every other value is the default's, so a
# knob changed in one profile and forgotten in the other shows up here.
TINY_DIFFERENCES = {
    "phantom.n_patients", "phantom.size", "phantom.prevalence", "ingest.image_size",
    "phantom.test_collection.min_positives_rare", "phantom.test_collection.min_positives_other",
    "phantom.reserve_positives",
    "diffusion.timesteps", "diffusion.unet.channels", "diffusion.unet.attention_levels",
    "diffusion.unet.num_head_channels", "diffusion.unet.norm_num_groups", "diffusion.label_dim",
    "diffusion.text_encoder.max_tokens", "diffusion.text_encoder.dim", "diffusion.text_encoder.layers",
    "diffusion.train.steps", "diffusion.train.batch_size", "diffusion.train.checkpoint_every",
    "diffusion.train.sample_every", "diffusion.train.sample_steps", "diffusion.controlnet.steps",
    "generate.target_share", "generate.max_per_finding", "generate.steps", "generate.batch_size",
    "classifier.epochs", "classifier.batch_size", "classifier.patience", "classifier.seeds",
    "evaluate.bootstrap", "evaluate.prdc_k", "evaluate.segmenter_epochs", "evaluate.reader_study_images",
    "autoencoder.base_channels", "autoencoder.steps", "autoencoder.batch_size", "autoencoder.checkpoint_every",
    "runtime.torch_threads",  # the test machine's cores are shared
    "runtime.adaptive_threads",  # smoke runs keep one thread count
    # float32: at the tiny sizes bf16 autocast costs more than it saves, and the runs match on every CPU
    "diffusion.train.mixed_precision", "classifier.mixed_precision", "autoencoder.mixed_precision",
}


def test_default_profile_holds_the_models_defaults():
    written, defaults = _values(load_params(ROOT / "params.yaml")), _values(Params())
    differing = {key: (written[key], defaults[key]) for key in defaults if written[key] != defaults[key]}
    assert not differing, f"params.yaml differs from the defaults in tasks/params.py (written, default): {differing}"


def test_tiny_profile_differs_from_the_defaults_only_in_scale():
    written, defaults = _values(load_params(TINY_PARAMS)), _values(Params())
    differing = {key for key in defaults if written[key] != defaults[key]}
    assert not differing - TINY_DIFFERENCES, (
        f"{TINY_PARAMS.name} differs from the defaults beyond its scale: "
        f"{ {key: (written[key], defaults[key]) for key in sorted(differing - TINY_DIFFERENCES)} }"
    )
    assert not TINY_DIFFERENCES - differing, f"listed as tiny-only but equal to the default: {TINY_DIFFERENCES - differing}"


def test_adaptive_threads_is_a_yes_or_no():
    assert Params().runtime.adaptive_threads is True
    assert parse_params({"runtime": {"adaptive_threads": False}}).runtime.adaptive_threads is False
    with pytest.raises(ParamsError, match=r"runtime\.adaptive_threads: .*bool"):
        parse_params({"runtime": {"adaptive_threads": "sometimes"}})


def test_unknown_key_is_named():
    with pytest.raises(ParamsError, match=r"diffusion\.train\.stepz: unknown key"):
        parse_params({"diffusion": {"train": {"stepz": 3}}})


def test_ill_typed_key_is_named_with_expectation():
    with pytest.raises(ParamsError, match=r"ingest\.image_size: .*integer"):
        parse_params({"ingest": {"image_size": "big"}})


def test_unknown_classifier_architecture_is_named():
    with pytest.raises(ParamsError, match=r"classifier\.architecture: .*densenet_small_stride2"):
        parse_params({"classifier": {"architecture": "resnet"}})


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


@pytest.mark.parametrize("raw, message", [
    ({"ingest": {"image_size": "32"}}, r"ingest\.image_size: Input should be a valid integer"),
    ({"mix": {"ratios": ["1"]}}, r"mix\.ratios\.0\.int: Input should be a valid integer"),
    ({"generate": {"guidance_scale": "2.0"}}, r"generate\.guidance_scale: Input should be a valid number"),
    ({"ingest": {"path": 5}}, r"ingest\.path: Input should be a valid string"),
    ({"diffusion": {"train": {"cache_images": "yes"}}}, r"diffusion\.train\.cache_images: Input should be a valid boolean"),
    ({"seed": 1.0}, r"seed: Input should be a valid integer"),
])
def test_strings_and_floats_are_not_coerced(raw, message):
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_strict_params_still_read_yaml_lists_as_tuples_and_ints_as_floats():
    params = parse_params({"mix": {"augmentation": {"gamma": [0.9, 1.1]}}, "generate": {"guidance_scale": 2}})
    assert params.mix.augmentation.gamma == (0.9, 1.1) and params.generate.guidance_scale == 2.0


def test_a_yaml_date_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(TINY_PARAMS.read_text().replace("seed: 0\n", "seed: 2024-01-01\n", 1))
    with pytest.raises(ParamsError, match="not a plain number"):
        load_params(path)


@pytest.mark.parametrize("text, message", [
    ("", r"params\.yaml: the params file is empty"),
    ("# nothing but a comment\n", r"params\.yaml: the params file is empty"),
    ("{}", r"params\.yaml: the params file is empty"),
])
def test_an_empty_file_is_an_error(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ParamsError, match=message):
        load_params(tmp_path / "params.yaml")


def _profile_without(tmp_path, edit):
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    edit(raw)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "params.yaml"


def test_missing_and_empty_sections_are_named(tmp_path):
    with pytest.raises(ParamsError, match=r"params\.yaml: missing sections ingest, runtime$"):
        load_params(_profile_without(tmp_path, lambda raw: [raw.pop("ingest"), raw.pop("runtime")]))
    with pytest.raises(ParamsError, match=r"params\.yaml: empty section mix$"):
        load_params(_profile_without(tmp_path, lambda raw: raw.update(mix=None)))
    with pytest.raises(ParamsError, match=r"params\.yaml: empty sections ingest\.split, diffusion\.unet$"):
        load_params(_profile_without(tmp_path, lambda raw: [raw["ingest"].update(split={}), raw["diffusion"].update(unet={})]))


def test_a_bare_no_read_as_false_is_no_precision(tmp_path):
    """YAML 1.1 reads `mixed_precision: no` as false; `dvc exp run -S` writes it back unquoted."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["diffusion"]["train"]["mixed_precision"] = False
    data["classifier"]["mixed_precision"] = False
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    params = load_params(path)
    assert params.diffusion.train.mixed_precision == "no" and params.classifier.mixed_precision == "no"


def test_classifier_seeds_are_distinct_and_an_old_single_seed_still_reads():
    assert parse_params({"classifier": {"seed": 3}}).classifier.seeds == [3]
    assert parse_params({}).classifier.seeds == [0, 1, 2]
    with pytest.raises(ParamsError, match=r"classifier\.seeds: .*distinct"):
        parse_params({"classifier": {"seeds": [1, 1]}})
    with pytest.raises(ParamsError, match=r"classifier\.seeds"):
        parse_params({"classifier": {"seeds": []}})


def _readme_profile(heading: str) -> dict:
    """The YAML block that follows the README's profile bullet starting with ``heading``."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(heading):]
    return yaml.safe_load(after[after.index("```yaml") + len("```yaml"):after.index("```\n", after.index("```yaml") + 7)])


def test_readme_gpu_profiles_are_valid_params_with_a_64_px_latent_grid():
    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    _merge(full, _readme_profile("- **full** (GPU)"), "")
    at_512 = copy.deepcopy(full)
    _merge(at_512, _readme_profile("- **full at 512 px**"), "")
    for raw, size in ((full, 256), (at_512, 512)):
        params = parse_params(raw, "README")
        assert params.ingest.image_size == size and params.diffusion.space == "latent"
        assert size // params.autoencoder.downsampling == 64
