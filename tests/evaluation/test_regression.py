"""Regression probes: metrics by hand, ridge's alpha chosen inside training, paired draws."""

import numpy as np
import pytest

from evaluation import regression


def test_regression_metrics_by_hand():
    m = regression.regression_metrics(np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 3, 5]))
    assert m["mae"] == 0.25
    assert m["r2"] == pytest.approx(1 - 1 / 5)  # SSE 1, SST 5


def _toy(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = 3 * x[:, 0] - 2 * x[:, 1] + rng.normal(0, 0.1, n)
    return x, y


def test_probes_fit_a_linear_target_and_knn_averages_five_neighbours():
    x, y = _toy()
    train, test = np.arange(200), np.arange(200, 300)
    res = regression.run_regression_probes(x, y, train, test)
    assert res["ridge"]["r2"] > 0.99 and res["ridge"]["mae"] < 0.15
    assert 0.5 < res["knn5"]["r2"] < 0.99  # local averaging: good, not exact
    # One feature equal to the target index: the 5 nearest of row 0 are rows 0..4.
    f = np.arange(10.0)[:, None]
    t = np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 90.0])
    res = regression.run_regression_probes(f, t, np.arange(1, 10), np.array([0]), ["knn5"])
    assert res["knn5"]["mae"] == pytest.approx(abs(0 - (10 + 20 + 30 + 40 + 50) / 5))


def test_ridge_alpha_never_sees_the_test_targets():
    x, y = _toy(seed=1)
    train, test = np.arange(30), np.arange(30, 300)
    a = regression.run_regression_probes(x, y, train, test, ["ridge"])["ridge"]
    y2 = y.copy()
    y2[test] = -y2[test] * 5  # the test targets change; nothing chosen may move
    b = regression.run_regression_probes(x, y2, train, test, ["ridge"])["ridge"]
    assert a["alpha"] == b["alpha"]
    assert a["mae"] != b["mae"]


def test_probe_regression_sets_share_draws():
    x, y = _toy(n=120)
    is_test = np.arange(120) >= 80
    out = regression.probe_regression_sets(
        {"a": x, "b": x.copy()}, y, is_test, [10, None], repeats=3, seed=0
    )
    assert out["a"] == out["b"]  # same draws -> identical numbers for identical features
    assert len(out["a"]["10"]["ridge"]["mae"]) == 3 and len(out["a"]["max"]["knn5"]["r2"]) == 1
    # Different draws do differ.
    assert len(set(out["a"]["10"]["knn5"]["mae"])) == 3
    assert list(regression.random_draw(5, None, np.random.default_rng(0))) == [0, 1, 2, 3, 4]
