import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from cxrsynth.tasks.reader_study import Candidate, build_study, candidates, pick_real, render_page, write_study
from cxrsynth.tasks.reader_study.page import environment


def make_candidates(source: str, n: int, seed: int) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    return [Candidate(rng.random((16, 16)).astype(np.float32), source, ("nodule", "pneumothorax")[i % 2],
                      f"{source[0]}{i:02d}", ("label+mask", "text")[i % 3 == 0] if source == "synthetic" else None)
            for i in range(n)]


@pytest.fixture
def study():
    return build_study(make_candidates("real", 30, 0), make_candidates("synthetic", 25, 1), per_source=20, seed=7)


def test_study_is_balanced_blinded_and_seeded(study, tmp_path):
    items, key = study
    assert len(items) == 40
    truths = [key["items"][item["item"]]["truth"] for item in items]
    assert truths.count("real") == 20 and truths.count("synthetic") == 20
    assert truths != sorted(truths)  # interleaved, not real-then-synthetic
    assert all(set(item) == {"item", "finding", "png"} for item in items)  # no truth, no image id
    again = build_study(make_candidates("real", 30, 0), make_candidates("synthetic", 25, 1), 20, seed=7)
    assert again == study
    assert build_study(make_candidates("real", 30, 0), make_candidates("synthetic", 25, 1), 20, seed=8) != study
    write_study(items, key, tmp_path / "study" / "index.html", tmp_path / "key.json")
    page = (tmp_path / "study" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 40 and key["study"] in page
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "r00" not in text and "s00" not in text and "truth" not in text and "label+mask" not in text
    assert json.loads((tmp_path / "key.json").read_text()) == key
    assert not (tmp_path / "study" / "key.json").exists()
    with pytest.raises(ValueError, match="must not sit beside the page"):
        write_study(items, key, tmp_path / "study" / "index.html", tmp_path / "study" / "key.json")


def test_key_records_condition_types_and_keeps_the_study_id(study):
    _, key = study
    synthetic = [entry for entry in key["items"].values() if entry["truth"] == "synthetic"]
    assert {entry["condition_type"] for entry in synthetic} == {"label+mask", "text"}
    assert all(entry["condition_type"] is None for entry in key["items"].values() if entry["truth"] == "real")
    # the id is the hash of (truth, finding, image id) per item, as it was before condition types
    core = {item: {k: v for k, v in entry.items() if k != "condition_type"} for item, entry in key["items"].items()}
    assert key["study"] == hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]


def test_page_follows_its_dom_contract(study):
    items, key = study
    page = render_page(items, key["study"])
    assert f'data-study="{key["study"]}"' in page and 'data-n-items="40"' in page
    for element in ('id="reader"', 'id="progress"', 'id="position"', 'id="prev"', 'id="next"', 'id="export"',
                    'id="status" role="status"'):
        assert element in page
    sections = re.findall(r'<section class="item" id="(item-\d{3})" data-item="\1" data-index="(\d+)"', page)
    assert [s[0] for s in sections] == [item["item"] for item in items]  # the study's order
    assert [int(s[1]) for s in sections] == list(range(40))
    assert page.count(" hidden>") == 39  # only the first image shows at first
    for item in items[:3]:
        for value in ("real", "synthetic", "1", "5"):
            field = "source" if value in ("real", "synthetic") else "likert"
            assert f'name="{item["item"]}-{field}" data-field="{field}" value="{value}"' in page
    assert '"cxrsynth-reader-study-" + STUDY' in page and "window.confirm" in page
    assert "{#" not in page and "DOM contract" not in page  # the template's comment stays out of the page
    assert "<script src" not in page and "<link" not in page  # self-contained: works from file://


def test_page_escapes_finding_names():
    page = render_page([{"item": "item-001", "finding": "<b>x</b>", "png": "AAAA"}], "abc")
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_template_loads_from_the_installed_package():
    source, filename, _ = environment().loader.get_source(environment(), "index.html.j2")
    assert filename.endswith("index.html.j2") and "DOM contract" in source


def test_candidates_from_a_manifest_and_the_real_pick():
    frame = pd.DataFrame({"image_id": ["a", "b", "c"], "condition_type": ["text", None, "label+mask"]})
    images = np.zeros((3, 4, 4))
    synthetic = candidates(images, frame, ["nodule", "nodule", "pneumothorax"], "synthetic")
    assert [c.condition_type for c in synthetic] == ["text", None, "label+mask"]
    real = candidates(images, frame, ["nodule", "no finding", "cardiomegaly"], "real")
    assert [c.condition_type for c in real] == [None, None, None] and [c.image_id for c in real] == ["a", "b", "c"]
    assert [c.image_id for c in pick_real(real, ["nodule", "cardiomegaly"], 2)] == ["a", "c"]
    assert [c.image_id for c in pick_real(real, ["nodule"], 2)] == ["a", "b", "c"]  # too few: every real image
    with pytest.raises(ValueError, match="neither of"):
        candidates(images, frame, ["nodule"] * 3, "fake")
