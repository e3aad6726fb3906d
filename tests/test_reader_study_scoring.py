"""Reader-study scoring on planted answer files whose figures are known in advance: a perfect reader,
a reader who calls everything real, a coin-flip reader, readers who always agree or always disagree."""

import json

import mlflow
import numpy as np
import pytest
import yaml
from scipy.stats import binomtest, mannwhitneyu

from cxrsynth.tasks.reader_study import score
from cxrsynth.tasks.reader_study.cli import main
from cxrsynth.tasks.reader_study.scoring import agreement, answer_table
from cxrsynth.tasks.reader_study.summary import render_summary
from tests.conftest import TINY_PARAMS

STUDY = "abc123def456"


@pytest.fixture
def key() -> dict:
    """40 items: odd items real, even synthetic; findings alternate in pairs; every third synthetic is text."""
    items = {}
    for number in range(1, 41):
        truth = "real" if number % 2 else "synthetic"
        condition = None if truth == "real" else ("text" if number % 3 == 0 else "label+mask")
        items[f"item-{number:03d}"] = {"truth": truth, "finding": ("nodule", "pneumothorax")[(number // 2) % 2],
                                       "image_id": f"img-{number:06d}", "condition_type": condition}
    return {"study": STUDY, "items": items}


def reader(name: str, calls: dict[str, str], likert: dict[str, int] | None = None) -> dict:
    answers = {item: {"source": call} for item, call in calls.items()}
    for item, value in (likert or {}).items():
        answers.setdefault(item, {})["likert"] = value
    return {"study": STUDY, "reader": name, "answers": answers}


def perfect(key: dict, name: str = "perfect") -> dict:
    truths = {item: entry["truth"] for item, entry in key["items"].items()}
    return reader(name, truths, {item: 5 if truth == "real" else 2 for item, truth in truths.items()})


def test_perfect_reader(key):
    result = score([perfect(key)], key)
    turing = result["pooled"]["turing"]
    assert turing["n_calls"] == 40 and turing["n_correct"] == 40 and turing["accuracy"]["value"] == 1.0
    # Clopper-Pearson for 40 of 40: the lower bound solves p^40 = 0.025
    assert turing["accuracy"]["ci_low"] == pytest.approx(0.025 ** (1 / 40)) and turing["accuracy"]["ci_high"] == 1.0
    assert turing["p_value_vs_chance"] == pytest.approx(2 * 0.5 ** 40)
    assert turing["sensitivity"] == {"n": 20, "value": 1.0, "ci_low": pytest.approx(0.025 ** (1 / 20)), "ci_high": 1.0}
    assert turing["specificity"]["value"] == 1.0
    likert = result["pooled"]["likert"]
    assert likert["real"] == {"n": 20, "mean": 5.0, "median": 5.0, "counts": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 20}}
    assert likert["synthetic"]["counts"]["2"] == 20
    expected = mannwhitneyu([5] * 20, [2] * 20, alternative="two-sided")
    assert likert["mann_whitney"] == {"u": 400.0, "p_value": pytest.approx(expected.pvalue)}
    assert result["pooled"]["agreement"]["call"]["kappa"] is None  # one reader: no agreement to measure
    for finding in ("nodule", "pneumothorax"):
        assert result["per_finding"][finding]["turing"]["n_calls"] == 20
        assert result["per_finding"][finding]["turing"]["accuracy"]["value"] == 1.0
    assert set(result["per_condition_type"]) == {"label+mask", "text"}
    text = result["per_condition_type"]["text"]["turing"]
    n_text = sum(e["condition_type"] == "text" for e in key["items"].values())
    assert text["n_calls"] == 20 + n_text and text["sensitivity"]["n"] == n_text  # every real image plus the type's
    assert result["readers"] == ["perfect"] and result["per_reader"]["perfect"]["turing"] == turing


def test_reader_who_calls_everything_real_is_at_chance(key):
    result = score([reader("lazy", {item: "real" for item in key["items"]})], key)
    turing = result["pooled"]["turing"]
    assert turing["accuracy"]["value"] == 0.5 and turing["p_value_vs_chance"] == 1.0
    assert turing["sensitivity"]["value"] == 0.0 and turing["specificity"]["value"] == 1.0
    assert result["pooled"]["likert"]["real"]["n"] == 0 and result["pooled"]["likert"]["mann_whitney"]["p_value"] is None


def test_coin_flip_reader_and_pooling(key):
    rng = np.random.default_rng(3)
    calls = {item: ("real", "synthetic")[rng.integers(2)] for item in key["items"]}
    n_correct = sum(calls[item] == entry["truth"] for item, entry in key["items"].items())
    result = score([reader("coin", calls), perfect(key)], key)
    coin = result["per_reader"]["coin"]["turing"]
    assert coin["n_correct"] == n_correct
    assert coin["p_value_vs_chance"] == pytest.approx(binomtest(n_correct, 40).pvalue)
    assert coin["p_value_vs_chance"] > 0.05  # cannot tell: not distinguishable from chance
    pooled = result["pooled"]["turing"]
    assert pooled["n_calls"] == 80 and pooled["n_correct"] == n_correct + 40
    assert pooled["p_value_vs_chance"] == pytest.approx(binomtest(n_correct + 40, 80).pvalue)
    assert result["readers"] == ["coin", "perfect"]


def test_agreement(key):
    items = list(key["items"])
    calls = {item: ("real", "synthetic")[i % 3 == 0] for i, item in enumerate(items)}
    ratings = {item: 1 + i % 5 for i, item in enumerate(items)}
    same = score([reader("A", calls, ratings), reader("B", calls, ratings)], key)["pooled"]["agreement"]
    assert same["n_readers"] == 2 and same["call"] == {"n_items": 40, "kappa": pytest.approx(1.0)}
    assert same["likert"]["kappa"] == pytest.approx(1.0)
    flipped = {item: "synthetic" if call == "real" else "real" for item, call in calls.items()}
    balanced = {item: ("real", "synthetic")[i % 2] for i, item in enumerate(items)}
    opposite = {item: "synthetic" if call == "real" else "real" for item, call in balanced.items()}
    assert score([reader("A", balanced), reader("B", opposite)], key)["pooled"]["agreement"]["call"]["kappa"] == \
        pytest.approx(-1.0)  # always disagreeing, categories balanced: P = 0, Pe = 0.5
    assert score([reader("A", calls), reader("B", flipped)], key)["pooled"]["agreement"]["call"]["kappa"] < 0
    # by hand: 3 readers on 4 images (RRR, SSS, RRS, SSR): P = 2/3, Pe = 1/2, kappa = 1/3
    table = answer_table([(name, reader(name, dict(zip(items[:4], answers))))
                          for name, answers in (("A", ["real", "synthetic", "real", "synthetic"]),
                                                ("B", ["real", "synthetic", "real", "synthetic"]),
                                                ("C", ["real", "synthetic", "synthetic", "real"]))], key)
    assert agreement(table)["call"] == {"n_items": 4, "kappa": pytest.approx(1 / 3)}
    partial = answer_table([("A", reader("A", calls)), ("B", reader("B", dict(list(calls.items())[:10])))], key)
    assert agreement(partial)["call"]["n_items"] == 10  # only images both readers answered
    alike = score([reader("A", {i: "real" for i in items}), reader("B", {i: "real" for i in items})], key)
    assert alike["pooled"]["agreement"]["call"]["kappa"] is None  # one category only: kappa undefined


def test_bad_answers_are_named(key):
    with pytest.raises(ValueError, match="answers #1: answers are for study 'other'"):
        score([{"study": "other", "answers": {}}], key)
    with pytest.raises(ValueError, match="'item-999', which is not in study"):
        score([reader("A", {"item-999": "real"})], key)
    with pytest.raises(ValueError, match=r"answers #1, item-001: likert is 7"):
        score([reader("A", {}, {"item-001": 7})], key)
    with pytest.raises(ValueError, match=r"answers #1, item-002: source is 'fake'"):
        score([reader("A", {"item-002": "fake"})], key)
    with pytest.raises(ValueError, match=r"answers #1, item-001: likert is True"):
        score([reader("A", {}, {"item-001": True})], key)
    with pytest.raises(ValueError, match="answers #1: 'answers' must map each item to an object"):
        score([{"study": STUDY, "answers": {"item-001": "real"}}], key)
    with pytest.raises(ValueError, match="answers #2: reader 'A' answers twice"):
        score([reader("A", {}), reader("A", {})], key)
    assert score([reader("", {"item-001": "real"})], key)["readers"] == ["answers #1"]  # unnamed: the file names it
    empty = score([reader("A", {})], key)
    assert empty["readers"] == [] and empty["pooled"]["turing"]["accuracy"]["value"] is None


def test_command_line_writes_json_html_and_an_mlflow_run(key, tmp_path, capsys):
    (tmp_path / "key.json").write_text(json.dumps(key))
    paths = []
    for answers in (perfect(key, "Dr A"), reader("Dr B", {item: "real" for item in key["items"]})):
        paths.append(tmp_path / f"{answers['reader']}.json")
        paths[-1].write_text(json.dumps(answers))
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["tracking"]["mlflow_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main([str(tmp_path / "key.json"), *map(str, paths), "--json", str(tmp_path / "out/score.json"),
                 "--html", str(tmp_path / "out/score.html"), "--mlflow", "--params", str(tmp_path / "params.yaml")]) == 0
    result = json.loads((tmp_path / "out/score.json").read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert result["per_reader"]["Dr A"]["turing"]["accuracy"]["value"] == 1.0
    page = (tmp_path / "out/score.html").read_text()
    for fragment in ('id="turing"', 'id="likert"', 'id="agreement"', "Dr A", "Dr B", "label+mask", "pneumothorax",
                     "data:image/png;base64,", "1.000 <small>(0.912–1.000)</small>"):
        assert fragment in page
    mlflow.set_tracking_uri(params["tracking"]["mlflow_uri"])
    runs = mlflow.search_runs(experiment_names=[params["tracking"]["experiment"]])
    assert list(runs["tags.mlflow.runName"]) == [f"reader_study:{STUDY}"]
    run = runs.iloc[0]
    assert run["metrics.per_reader.Dr A.turing.accuracy.value"] == 1.0
    assert run["metrics.pooled.turing.n_calls"] == 80 and run["params.n_readers"] == "2"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run["run_id"], "reader_study")}
    assert artifacts == {"reader_study/score.json", "reader_study/score.html"}


def test_command_line_refuses_unreadable_files(key, tmp_path):
    (tmp_path / "key.json").write_text(json.dumps(key))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read the answers file .*broken.json"):
        main([str(tmp_path / "key.json"), str(tmp_path / "broken.json")])
    (tmp_path / "wrong.json").write_text(json.dumps({"study": "zzz", "answers": {}}))
    with pytest.raises(SystemExit, match="wrong.json: answers are for study 'zzz'"):
        main([str(tmp_path / "key.json"), str(tmp_path / "wrong.json")])


def test_summary_renders_without_ratings(key):
    page = render_summary(score([reader("A", {"item-001": "real"})], key))
    assert "—" in page and 'id="turing"' in page
