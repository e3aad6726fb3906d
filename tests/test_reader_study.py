import json
import re

import numpy as np
import pytest
from scipy.stats import binomtest

from cxrsynth.tasks.reader_study import Candidate, build_study, main, render_page, score, write_study


def candidates(source: str, n: int, seed: int) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    return [Candidate(rng.random((16, 16)).astype(np.float32), source, ("nodule", "pneumothorax")[i % 2],
                      f"{source[0]}{i:02d}") for i in range(n)]


@pytest.fixture
def study():
    return build_study(candidates("real", 30, 0), candidates("synthetic", 25, 1), per_source=20, seed=7)


def test_study_is_balanced_blinded_and_seeded(study, tmp_path):
    items, key = study
    assert len(items) == 40
    truths = [key["items"][item["item"]]["truth"] for item in items]
    assert truths.count("real") == 20 and truths.count("synthetic") == 20
    assert truths != sorted(truths)  # interleaved, not real-then-synthetic
    assert all(set(item) == {"item", "finding", "png"} for item in items)  # no truth, no image id
    assert build_study(candidates("real", 30, 0), candidates("synthetic", 25, 1), 20, seed=7) == study
    write_study(items, key, tmp_path / "study" / "index.html", tmp_path / "key.json")
    page = (tmp_path / "study" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 40 and key["study"] in page
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert "r00" not in text and "s00" not in text and "truth" not in text
    assert json.loads((tmp_path / "key.json").read_text()) == key
    assert not (tmp_path / "study" / "key.json").exists()
    assert "Download answers" in render_page(items[:1], key["study"])


def test_scoring_made_up_answers(study, tmp_path):
    items, key = study
    answers = {}
    for number, item in enumerate(items):  # right on 30 of 40 calls
        truth = key["items"][item["item"]]["truth"]
        wrong = "real" if truth == "synthetic" else "synthetic"
        answers[item["item"]] = {"source": truth if number < 30 else wrong, "likert": 5 if truth == "real" else 3}
    answers_path = tmp_path / "answers.json"
    answers_path.write_text(json.dumps({"study": key["study"], "reader": "A", "answers": answers}))
    result = score([json.loads(answers_path.read_text())], key)
    assert result["n_calls"] == 40 and result["n_correct"] == 30 and result["accuracy"] == 0.75
    assert result["p_value_vs_chance"] == pytest.approx(binomtest(30, 40, 0.5).pvalue)
    assert result["p_value_vs_chance"] < 0.01
    assert result["likert"]["nodule"]["real"]["mean"] == 5 and result["likert"]["nodule"]["synthetic"]["mean"] == 3
    key_path = tmp_path / "key.json"
    key_path.write_text(json.dumps(key))
    assert main([str(key_path), str(answers_path)]) == 0


def test_chance_level_and_bad_answers(study):
    items, key = study
    half = {item["item"]: {"source": "real"} for item in items}  # always "real": right half the time
    result = score([{"study": key["study"], "answers": half}], key)
    assert result["accuracy"] == 0.5 and result["p_value_vs_chance"] == 1.0 and result["likert"] == {}
    with pytest.raises(ValueError, match="answers are for study"):
        score([{"study": "other", "answers": {}}], key)
    with pytest.raises(ValueError, match="not in study"):
        score([{"study": key["study"], "answers": {"item-999": {"source": "real"}}}], key)
    assert score([{"study": key["study"], "answers": {}}], key)["accuracy"] is None
