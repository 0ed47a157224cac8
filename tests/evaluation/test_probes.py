"""Probes: class-balanced draws, kNN and logistic regression, balanced accuracy, recall."""

import numpy as np
import pytest

import evaluation
from evaluation import probes


def test_probes_separable_toy_set_are_perfect():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    # No pure-noise columns: standardizing on 1 sample per class would blow them up to the
    # signal's scale, which is the probe's documented behaviour, not what this test is about.
    feats = np.eye(4)[labels] * 10 + rng.normal(0, 0.1, (200, 4))
    is_test = np.tile(np.arange(50) >= 25, 4)
    train_pool, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    for budget in (1, 10, None):
        train = train_pool[probes.balanced_draw(labels[train_pool], budget, rng)]
        res = probes.run_probes(feats, labels, train, test_idx)
        assert res == {"knn1": 1.0, "knn3": 1.0, "logreg": 1.0}, (budget, res)


def test_probes_on_shuffled_labels_are_at_chance():
    # 4 classes: chance is 0.25. Averaged over 20 draws of 10 per class against 400 test
    # pixels, the mean's std is about 0.01; the tolerance of 0.05 is five of those.
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 200)
    feats = np.eye(4)[labels] * 10 + rng.normal(0, 0.1, (800, 4))
    shuffled = rng.permutation(labels)
    is_test = np.tile(np.arange(200) >= 100, 4)
    train_pool, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    acc = {p: [] for p in evaluation.PROBES}
    for _ in range(20):
        train = train_pool[probes.balanced_draw(shuffled[train_pool], 10, rng)]
        for p, v in probes.run_probes(feats, shuffled, train, test_idx).items():
            acc[p].append(v)
    for p, v in acc.items():
        assert abs(np.mean(v) - 0.25) < 0.05, (p, np.mean(v))


def test_probes_standardize_on_train_and_impute_nan():
    # Column 0 separates the classes but sits on a huge offset; column 1 is all NaN in the
    # training draw and garbage in the test set: it must be neutralized, not crash.
    labels = np.array([0, 1, 0, 1, 0, 1])
    feats = np.array(
        [[1e6, np.nan], [1e6 + 1, np.nan], [1e6, 5.0], [1e6 + 1, -5.0], [1e6, np.nan], [1e6 + 1, 0]]
    )
    res = probes.run_probes(feats, labels, np.array([0, 1]), np.array([2, 3, 4, 5]))
    assert res == {"knn1": 1.0, "knn3": 1.0, "logreg": 1.0}


def test_run_probes_recall_per_class_hand_computed():
    # 1-NN on one feature: train 0 -> class 0, 10 -> class 1. Test class 0 at 1, 2, 9 (the
    # last nearer class 1): recall 2/3; class 1 at 8, 11: recall 1. Balanced: (2/3 + 1) / 2.
    feats = np.array([[0.0], [10.0], [1.0], [2.0], [9.0], [8.0], [11.0]])
    labels = np.array([0, 1, 0, 0, 0, 1, 1])
    recall: dict = {}
    res = probes.run_probes(
        feats, labels, np.array([0, 1]), np.arange(2, 7), ("knn1",), recall_out=recall
    )
    assert recall == {"knn1": {0: pytest.approx(2 / 3), 1: 1.0}}
    assert res["knn1"] == pytest.approx(np.mean(list(recall["knn1"].values())))


def test_knn3_breaks_ties_by_the_nearest_neighbour():
    # One sample per class: the 3 neighbours are 3 classes; the nearest decides, as for k=1.
    feats = np.array([[0.0], [1.0], [2.0], [1.9], [0.1]])
    labels = np.array([5, 3, 4, 4, 5])
    res = probes.run_probes(feats, labels, np.array([0, 1, 2]), np.array([3, 4]), ("knn3",))
    assert res == {"knn3": 1.0}


def test_balanced_draw_takes_min_of_budget_and_class_size():
    labels = np.array([0] * 5 + [1] * 30 + [2] * 12)
    rng = np.random.default_rng(0)
    for budget, want in ((1, [1, 1, 1]), (10, [5, 10, 10]), (None, [5, 30, 12])):
        idx = probes.balanced_draw(labels, budget, rng)
        assert len(set(idx.tolist())) == len(idx)
        assert np.bincount(labels[idx], minlength=3).tolist() == want


def test_parse_budgets():
    assert probes.parse_budgets("1,10,max") == [1, 10, None]
    with pytest.raises(ValueError, match="budgets"):
        probes.parse_budgets("0,max")


def test_error_reduction_on_hand_numbers():
    assert probes.error_reduction(0.9, 0.8) == pytest.approx(0.5)  # err 0.1 vs 0.2
    assert probes.error_reduction(0.7, 0.8) == pytest.approx(-0.5)  # err 0.3 vs 0.2
    assert probes.error_reduction(1.0, 0.75) == pytest.approx(1.0)
    assert probes.error_reduction(1.0, 1.0) == 0.0
    assert probes.error_reduction(0.9, 1.0) is None
