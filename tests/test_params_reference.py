from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, Field

from cxrsynth.tasks.params import Params, Section
from cxrsynth.tasks.params_reference import (
    END,
    FIX_COMMAND,
    START,
    default_text,
    entries,
    is_section,
    main,
    render,
    replace_between_markers,
    type_text,
)
from tests.conftest import ROOT, TINY_PARAMS
from tests.test_params import _keys


def _row(key: str) -> str:
    return next(line for line in render().splitlines() if line.startswith(f"| `{key}` |"))


def _fields(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        if is_section(field.annotation):
            yield from _fields(field.annotation, f"{prefix}{name}.")


def test_readme_section_is_what_the_generator_renders():
    readme = (ROOT / "README.md").read_text()
    assert replace_between_markers(readme, render(), "README.md") == readme, (
        f"README.md's params reference is out of date with tasks/params.py: run `{FIX_COMMAND}`"
    )


@pytest.mark.parametrize("path", [ROOT / "params.yaml", TINY_PARAMS])
def test_every_leaf_key_of_the_profiles_is_documented(path):
    documented = {entry.key for entry in entries()}
    missing = set(_keys(yaml.safe_load(path.read_text()))) - documented
    assert not missing, f"keys of {path.name} missing from the reference: {sorted(missing)}"


def test_every_field_has_a_description():
    lacking = [key for key, field in _fields(Params) if not field.description]
    assert not lacking, f"fields without a description in tasks/params.py: {lacking}"


def test_literal_renders_as_its_choices():
    assert type_text(Literal["linear", "cosine"]) == "linear | cosine"
    assert type_text(list[Literal["label", "mask"]]) == "list[label | mask]"
    assert _row("diffusion.schedule").startswith("| `diffusion.schedule` | linear \\| cosine | `cosine` |")


def test_constrained_field_renders_its_bounds():
    fields = dict(_fields(Params))
    closed = fields["diffusion.dropout.label"]
    half_open = fields["diffusion.train.ema_decay"]
    optional = fields["ingest.max_images"]
    assert type_text(closed.annotation, closed.metadata) == "0 ≤ float ≤ 1"
    assert type_text(half_open.annotation, half_open.metadata) == "0 ≤ float < 1"
    assert type_text(optional.annotation, optional.metadata) == "int ≥ 1 or null"
    assert "| int ≥ 1 |" in _row("diffusion.train.batch_size")
    assert "| 0 < float < 1 |" in _row("evaluate.specificity")


def test_types_and_defaults_read_like_yaml():
    rows = {entry.key: entry for entry in entries()}
    assert (rows["mix.ratios"].type, rows["mix.ratios"].default) == ("list[int | float]", "[0.5, 1, 2]")
    assert (rows["generate.mask_scale"].type, rows["generate.mask_scale"].default) == ("[float, float]", "[0.8, 1.25]")
    assert (rows["runtime.dask_address"].type, rows["runtime.dask_address"].default) == ("str or null", "null")
    assert default_text(True) == "true" and default_text("data/phantom") == "data/phantom"


def test_sections_become_tables_with_their_description():
    class Inner(Section):
        size: int = Field(3, gt=0, description="how big")

    class Outer(Section):
        seed: int = Field(0, description="the seed")
        inner: Inner = Field(Inner(), description="The inner part.")

    text = render(Outer)
    assert text.startswith("### General\n\n| key | type | default | meaning |")
    assert "### `inner`\n\nThe inner part.\n\n| key |" in text
    assert "| `inner.size` | int > 0 | `3` | how big |" in text


def test_replace_between_markers_keeps_the_rest_and_needs_both_markers():
    text = f"intro\n{START}\nold\n{END}\noutro\n"
    assert replace_between_markers(text, "new") == f"intro\n{START}\n\nnew\n\n{END}\noutro\n"
    with pytest.raises(ValueError, match="README.md: needs exactly one"):
        replace_between_markers("no markers here", "new", "README.md")
    with pytest.raises(ValueError, match="needs exactly one"):
        replace_between_markers(f"{END}\n{START}", "new")


def test_main_writes_between_the_markers(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{START}\nstale\n{END}\n")
    main(["--write", str(readme)])
    assert readme.read_text() == replace_between_markers(f"# title\n{START}\n{END}\n", render())
    main([])
    assert capsys.readouterr().out == render() + "\n"
