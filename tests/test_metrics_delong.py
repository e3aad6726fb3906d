"""DeLong against pROC's own expected numbers on its aSAH data, plus the bootstrap.

Reference: the R package pROC (github.com/xrobin/pROC), tests/testthat/test-roc.test.R
("roc.test statistic and p are as expected with defaults") and tests/testthat/test-ci.auc.R
(``expected.ci.auc``), with pROC's AUCs from tests/testthat/helper-deLongPlacementsCpp-expected.R
(``theta``). The aSAH rows are in tests/data/asah.csv (provenance in its header).
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrsynth.tasks.metrics.delong import bootstrap_auc_ci, delong, delong_ci, delong_test

ASAH = Path(__file__).parent / "data" / "asah.csv"


@pytest.fixture(scope="module")
def asah():
    data = pd.read_csv(ASAH, comment="#")
    return data, (data["outcome"] == "Poor").astype(int).to_numpy()


def test_asah_aucs_match_proc(asah):
    data, poor = asah
    expected = {"ndka": 0.611957994579946, "wfns": 0.823678861788618, "s100b": 0.731368563685637}
    for marker, theta in expected.items():
        assert delong(poor, data[marker].to_numpy()).auc[0] == pytest.approx(theta, abs=1e-12)
        assert theta == pytest.approx(roc_auc_score(poor, data[marker]), abs=1e-12)


def test_ci_matches_proc_ci_auc(asah):
    data, poor = asah
    # ci.auc(r.ndka): c(0.501244999271703, 0.611957994579946, 0.722670989888189)
    assert delong_ci(poor, data["ndka"].to_numpy()) == pytest.approx(
        (0.611957994579946, 0.501244999271703, 0.722670989888189), abs=1e-12)
    female = (data["gender"] == "Female").to_numpy()
    # ci.auc(outcome ~ ndka, data = aSAH, subset = (gender == "Female"))
    assert delong_ci(poor[female], data["ndka"].to_numpy()[female]) == pytest.approx(
        (0.6671428571, 0.5261398281, 0.8081458862), abs=1e-9)
    # pROC's documented print of roc(aSAH$outcome, aSAH$s100b, ci=TRUE): "95% CI: 0.6301-0.8326 (DeLong)"
    auc, low, high = delong_ci(poor, data["s100b"].to_numpy())
    assert (round(low, 4), round(high, 4)) == (0.6301, 0.8326)


@pytest.mark.parametrize("first, second, z, p, low, high", [
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
])
def test_paired_test_matches_proc_roc_test(asah, first, second, z, p, low, high):
    data, poor = asah
    result = delong_test(poor, data[first].to_numpy(), data[second].to_numpy())
    assert result.z == pytest.approx(z, abs=1e-10)
    assert result.p_value == pytest.approx(p, abs=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high), abs=1e-12)
    swapped = delong_test(poor, data[second].to_numpy(), data[first].to_numpy())
    assert swapped.z == pytest.approx(-z, abs=1e-10) and swapped.p_value == pytest.approx(p, abs=1e-12)


def test_identical_curves_give_p_one(asah):
    data, poor = asah
    result = delong_test(poor, data["wfns"].to_numpy(), data["wfns"].to_numpy())
    assert result.z == 0 and result.p_value == 1


def test_one_class_is_refused():
    with pytest.raises(ValueError, match="one positive and one negative"):
        delong(np.ones(5), np.arange(5.0))


def test_bootstrap_is_seeded_and_brackets_the_auc(asah):
    data, poor = asah
    scores = data["s100b"].to_numpy()
    low, high = bootstrap_auc_ci(poor, scores, n_boot=500, seed=3)
    assert (low, high) == bootstrap_auc_ci(poor, scores, n_boot=500, seed=3)
    assert low < 0.7314 < high
    # The bootstrap interval is close to DeLong's on 113 cases (both about +-0.10 wide).
    _, delong_low, delong_high = delong_ci(poor, scores)
    assert abs(low - delong_low) < 0.03 and abs(high - delong_high) < 0.03
    assert np.isnan(bootstrap_auc_ci(poor, scores, n_boot=0, seed=0)).all()
