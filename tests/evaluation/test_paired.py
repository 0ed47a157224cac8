"""Paired statistics on hand-computed examples."""

import numpy as np
import pytest

from evaluation import paired


def test_paired_stats_by_hand():
    # Balanced accuracy on three draws: differences 0.1, 0.0, 0.1.
    p = paired.paired_stats([0.8, 0.7, 0.9], [0.7, 0.7, 0.8], error=paired.accuracy_error)
    assert p["n"] == 3
    assert p["diff_mean"] == pytest.approx(0.2 / 3)
    # Sample sd: sqrt(((1/30)^2 * 2 + (2/30)^2) / 2) = sqrt(1/300) = 0.057735.
    assert p["diff_sd"] == pytest.approx(np.sqrt(1 / 300))
    # 95% t interval, 2 dof: t = 4.302653; half width = 4.302653 * 0.057735 / sqrt(3).
    half = 4.302653 * np.sqrt(1 / 300) / np.sqrt(3)
    assert p["diff_ci95"] == pytest.approx([0.2 / 3 - half, 0.2 / 3 + half], abs=1e-6)
    # Errors 0.2/0.3, 0.3/0.3, 0.1/0.2 -> reductions 1/3, 0, 1/2.
    assert p["error_reduction_mean"] == pytest.approx((1 / 3 + 0 + 0.5) / 3)
    assert p["error_reduction_sd"] == pytest.approx(np.std([1 / 3, 0, 0.5], ddof=1))
    assert p["embedding_better"] == pytest.approx(2 / 3)


def test_paired_stats_for_an_error_metric_and_one_draw():
    # MAE: lower is better; the embedding 2 below the baseline on the single draw.
    p = paired.paired_stats([8.0], [10.0], error=paired.identity_error)
    assert (p["diff_mean"], p["diff_sd"], p["diff_ci95"]) == (-2.0, 0.0, [-2.0, -2.0])
    assert p["error_reduction_mean"] == pytest.approx(0.2)
    assert p["embedding_better"] == 1.0
    # A perfect baseline leaves nothing to reduce.
    assert (
        paired.paired_stats([0.9], [1.0], error=paired.accuracy_error)["error_reduction_mean"]
        is None
    )
    with pytest.raises(ValueError, match="equal"):
        paired.paired_stats([1.0, 2.0], [1.0], error=paired.identity_error)


def test_best_entry_picks_the_lowest_mean_error():
    draws = {"a": {"knn": [0.6, 0.7], "lr": [0.8, 0.8]}, "b": {"knn": [0.9, 0.7]}}
    assert paired.best_entry(draws, error=paired.accuracy_error) == (
        "a",
        "lr",
        pytest.approx(0.2),
    )
    assert paired.best_entry(draws, error=paired.identity_error)[:2] == ("a", "knn")
