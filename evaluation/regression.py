"""Regression probes on frozen features: random draws of the training pool, kNN (k=5) and
ridge (alpha by leave-one-out inside the training draw), MAE and R^2 on the test rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from evaluation import REGRESSION_PROBES, RIDGE_ALPHAS
from evaluation.probes import budget_key, standardize


def random_draw(n_pool: int, budget: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of min(budget, n_pool) random members of a pool of n_pool (None: all)."""
    if budget is None or budget >= n_pool:
        return np.arange(n_pool)
    return np.sort(rng.choice(n_pool, budget, replace=False))


def _knn_regress(x_train, y_train, x_test, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(x_train))
    _, idx = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x_train).kneighbors(x_test)
    return y_train[idx].mean(axis=1)


def _ridge(x_train, y_train, x_test) -> tuple[np.ndarray, float]:
    """Ridge with alpha from RIDGE_ALPHAS by efficient leave-one-out on the training rows."""
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=RIDGE_ALPHAS).fit(x_train, y_train)
    return model.predict(x_test), float(model.alpha_)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """{"mae": mean absolute error, "r2": 1 - SSE / SST (SST about the test mean)}."""
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    sse = float(np.sum((y_true - y_pred) ** 2))
    sst = float(np.sum((y_true - y_true.mean()) ** 2))
    return {
        "mae": float(np.mean(np.abs(y_true - y_pred))),
        "r2": 1.0 - sse / sst if sst > 0 else float("nan"),
    }


def run_regression_probes(
    features: np.ndarray,
    targets: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    probes: Sequence[str] = REGRESSION_PROBES,
) -> dict[str, dict[str, float]]:
    """Fit each probe on the train rows, score on the test rows.

    Features are standardized with the training rows' statistics, NaN then 0 (run_probes
    does the same). `knn5`: mean target of the k = min(5, n_train) nearest (Euclidean).
    `ridge`: alpha chosen among RIDGE_ALPHAS by leave-one-out error on the training rows
    only (the test rows never choose anything), intercept fitted.

    Returns:
        {probe: {"mae", "r2"}} (`ridge` also has "alpha").
    """
    x_train = standardize(features[train_idx], features[train_idx])
    x_test = standardize(features[train_idx], features[test_idx])
    y_train = np.asarray(targets, np.float64)[train_idx]
    y_test = np.asarray(targets, np.float64)[test_idx]
    out = {}
    for probe in probes:
        if probe == "knn5":
            out[probe] = regression_metrics(y_test, _knn_regress(x_train, y_train, x_test, 5))
        elif probe == "ridge":
            pred, alpha = _ridge(x_train, y_train, x_test)
            out[probe] = {**regression_metrics(y_test, pred), "alpha": alpha}
        else:
            raise ValueError(f"unknown regression probe {probe!r}; known: {REGRESSION_PROBES}")
    return out


def probe_regression_sets(
    feature_sets: Mapping[str, np.ndarray],
    targets: np.ndarray,
    is_test: np.ndarray,
    budgets: Sequence[int | None],
    repeats: int,
    seed: int,
    probes: Sequence[str] = REGRESSION_PROBES,
) -> dict[str, dict[str, dict[str, dict[str, list[float]]]]]:
    """Every probe on every feature set over the same random draws of the training pool.

    A budget b draws min(b, pool) training rows, `repeats` times (None: the whole pool,
    once); all feature sets share each draw, so comparisons are paired.

    Returns:
        {feature set: {budget key: {probe: {"mae": [per draw], "r2": [per draw]}}}}.
    """
    train_pool = np.flatnonzero(~np.asarray(is_test))
    test_idx = np.flatnonzero(np.asarray(is_test))
    out = {
        name: {budget_key(b): {p: {"mae": [], "r2": []} for p in probes} for b in budgets}
        for name in feature_sets
    }
    for b in budgets:
        for r in range(1 if b is None else repeats):
            rng = np.random.default_rng([seed, r, 0 if b is None else b, 1])
            train_idx = train_pool[random_draw(len(train_pool), b, rng)]
            for name, feats in feature_sets.items():
                res = run_regression_probes(np.asarray(feats), targets, train_idx, test_idx, probes)
                for p, m in res.items():
                    out[name][budget_key(b)][p]["mae"].append(m["mae"])
                    out[name][budget_key(b)][p]["r2"].append(m["r2"])
    return out
