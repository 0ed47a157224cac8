"""Probes on frozen features: class-balanced draws, kNN (k=1, 3) and logistic regression,
balanced accuracy and recall per class, best probe and error reduction."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from evaluation import MAX_BUDGET, PROBES


def balanced_draw(labels: np.ndarray, budget: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of min(budget, n_c) random members of each class c (budget None: all).

    Args:
        labels: (N,) class ids.
        budget: samples per class, or None for every member.
        rng: the draw's random generator.

    Returns:
        Sorted indices into `labels`.
    """
    labels = np.asarray(labels)
    out = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if budget is not None and len(members) > budget:
            members = rng.choice(members, budget, replace=False)
        out.append(members)
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def standardize(train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Standardize x with train's mean/std (std 0 -> 1), then NaN -> 0 (the train mean)."""
    train = np.asarray(train, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        mean = np.nanmean(train, axis=0)
        std = np.nanstd(train, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    z = (np.asarray(x, np.float64) - mean) / std
    z[~np.isfinite(z)] = 0.0
    return z


def _knn_predict(x_train, y_train, x_test, k: int) -> np.ndarray:
    """Majority vote of the k = min(k, n_train) nearest; ties go to the nearest tied class.

    The tie rule matters at 1 sample per class, where 3 neighbours are 3 different classes:
    sklearn would pick the smallest label, this picks the nearest, as kNN with k=1 does.
    """
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(x_train))
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x_train)
    _, idx = nn.kneighbors(x_test)  # (M, k), nearest first
    classes, neigh = np.unique(y_train, return_inverse=True)
    neigh = neigh[idx]
    votes = np.zeros((len(x_test), len(classes)))
    np.add.at(votes, (np.arange(len(x_test))[:, None], neigh), 1.0)
    # Break ties by rank: a class's first rank r costs r / (k + 1) < 1 vote.
    first = np.full(votes.shape, float(k))
    for r in range(k - 1, -1, -1):
        first[np.arange(len(x_test)), neigh[:, r]] = r
    return classes[np.argmax(votes - first / (k + 1), axis=1)]


def run_probes(
    features: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    probes: Sequence[str] = PROBES,
    *,
    max_iter: int = 1000,
    recall_out: dict | None = None,
) -> dict[str, float]:
    """Fit each probe on the train rows, score balanced accuracy on the test rows.

    Features are standardized with the training rows' statistics and NaN is imputed with the
    training mean (0 after standardization). Probes: `knn1`, `knn3` (k = min(3, n_train),
    uniform votes, ties to the nearest tied class), `logreg` (multinomial, lbfgs, C=1,
    balanced class weights).

    Args:
        features: (N, F) frozen features.
        labels: (N,) class ids.
        train_idx: rows to fit on.
        test_idx: rows to score on.
        probes: which probes to run.
        max_iter: lbfgs iteration cap.
        recall_out: if given, filled with {probe: {class id: recall on the test rows}}
            (balanced accuracy is their mean; a class with no test row is left out).

    Returns:
        {probe: balanced accuracy}.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    features = np.asarray(features)
    labels = np.asarray(labels)
    x_train = standardize(features[train_idx], features[train_idx])
    x_test = standardize(features[train_idx], features[test_idx])
    y_train, y_test = labels[train_idx], labels[test_idx]
    out = {}
    for probe in probes:
        if probe not in PROBES:
            raise ValueError(f"unknown probe {probe!r}; known: {PROBES}")
        if len(np.unique(y_train)) < 2:
            pred = np.full_like(y_test, y_train[0])
        elif probe in ("knn1", "knn3"):
            pred = _knn_predict(x_train, y_train, x_test, int(probe[-1]))
        else:
            model = LogisticRegression(C=1.0, max_iter=max_iter, class_weight="balanced")
            with warnings.catch_warnings():
                # A capped lbfgs is still a fine probe; the warning would flood the log.
                warnings.simplefilter("ignore", ConvergenceWarning)
                pred = model.fit(x_train, y_train).predict(x_test)
        out[probe] = float(balanced_accuracy_score(y_test, pred))
        if recall_out is not None:
            recall_out[probe] = {
                int(c): float(np.mean(pred[y_test == c] == c)) for c in np.unique(y_test)
            }
    return out


def parse_budgets(text: str) -> list[int | None]:
    """'1,10,max' -> [1, 10, None] (None = the whole train pool)."""
    out: list[int | None] = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if part == MAX_BUDGET:
            out.append(None)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise ValueError(
                f"--budgets must be positive integers or 'max', e.g. 1,10,max; got {text!r}"
            )
    if not out:
        raise ValueError("--budgets is empty")
    return out


def budget_key(budget: int | None) -> str:
    return MAX_BUDGET if budget is None else str(budget)


def probe_feature_sets(
    feature_sets: Mapping[str, np.ndarray],
    labels: np.ndarray,
    is_test: np.ndarray,
    budgets: Sequence[int | None],
    repeats: int,
    seed: int,
    probes: Sequence[str] = PROBES,
    recall_out: dict | None = None,
    draws_out: dict | None = None,
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Run every probe on every feature set over the same class-balanced draws.

    `recall_out`, if given, is filled with {feature set: {budget key: {probe: {class id:
    recall}}}}, the mean over the draws: which classes a feature set gets wrong.
    `draws_out`, if given, is filled with {feature set: {budget key: {probe: [balanced
    accuracy of each draw]}}} (the same draws for every feature set: paired).

    Returns:
        {feature set: {budget key: {probe: [mean, std]}}} of balanced accuracy (std over
        repeats, population std; 0 for `max`, which is drawn once).
    """
    labels = np.asarray(labels)
    train_pool = np.flatnonzero(~np.asarray(is_test))
    test_idx = np.flatnonzero(np.asarray(is_test))
    scores = {
        name: {budget_key(b): {p: [] for p in probes} for b in budgets} for name in feature_sets
    }
    recalls = {name: {budget_key(b): {p: [] for p in probes} for b in budgets} for name in scores}
    for b in budgets:
        n_draws = 1 if b is None else repeats
        for r in range(n_draws):
            rng = np.random.default_rng([seed, r, 0 if b is None else b])
            train_idx = train_pool[balanced_draw(labels[train_pool], b, rng)]
            for name, feats in feature_sets.items():
                per_class: dict = {}
                res = run_probes(feats, labels, train_idx, test_idx, probes, recall_out=per_class)
                for p, v in res.items():
                    scores[name][budget_key(b)][p].append(v)
                    recalls[name][budget_key(b)][p].append(per_class[p])
    if draws_out is not None:
        draws_out.update({n: {bk: dict(v) for bk, v in pb.items()} for n, pb in scores.items()})
    if recall_out is not None:
        for name, per_budget in recalls.items():
            recall_out[name] = {
                bk: {
                    p: {c: float(np.mean([d[c] for d in draws])) for c in draws[0]}
                    for p, draws in per_probe.items()
                }
                for bk, per_probe in per_budget.items()
            }
    return {
        name: {
            bk: {p: [float(np.mean(v)), float(np.std(v))] for p, v in per_probe.items()}
            for bk, per_probe in per_budget.items()
        }
        for name, per_budget in scores.items()
    }


def best_probe(entry: Mapping[str, Sequence[float]]) -> tuple[str, float]:
    """(probe, mean) of the best probe in one {probe: [mean, std]} entry."""
    probe = max(entry, key=lambda p: entry[p][0])
    return probe, float(entry[probe][0])


def error_reduction(acc_embedding: float, acc_baseline: float) -> float | None:
    """1 - err_embedding / err_baseline with err = 1 - balanced accuracy.

    None when the baseline makes no error (nothing left to reduce) unless the embedding
    makes none either (0.0).
    """
    err_e, err_b = 1.0 - acc_embedding, 1.0 - acc_baseline
    if err_b <= 0.0:
        return 0.0 if err_e <= 0.0 else None
    return 1.0 - err_e / err_b
