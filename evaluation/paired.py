"""Paired statistics: the embedding against the best baseline on the same draws.

Every feature set is probed on the same training draws, so the per-draw difference
(embedding - best baseline) removes the variance the two share (which pixels were drawn).
Its mean, sample standard deviation (ddof 1) and a 95% t interval of the mean are what a
comparison should quote; the interval covers the draw-to-draw variation only (the test set
is fixed), so it is narrower than a test-set bootstrap would be.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np


def paired_stats(
    embedding: Sequence[float],
    baseline: Sequence[float],
    *,
    error: Callable[[np.ndarray], np.ndarray],
) -> dict:
    """Per-draw differences of one metric, and the per-draw error reduction.

    Args:
        embedding: the embedding's metric on each draw.
        baseline: the best baseline's metric on the same draws.
        error: metric -> an error (lower is better), e.g. 1 - accuracy, or MAE itself.

    Returns:
        {"n", "diff_mean", "diff_sd", "diff_ci95": [lo, hi], "error_reduction_mean",
        "error_reduction_sd", "embedding_better"}: the difference is embedding - baseline
        in the metric's own sign; error reduction per draw is 1 - err_emb / err_base (NaN
        where the baseline makes no error, left out of its mean); `embedding_better` is the
        share of draws where the embedding's error is lower.
    """
    e = np.asarray(embedding, np.float64)
    b = np.asarray(baseline, np.float64)
    if e.shape != b.shape or e.ndim != 1 or len(e) == 0:
        raise ValueError(f"paired draws must be two equal 1-d sequences; got {e.shape} {b.shape}")
    d = e - b
    n = len(d)
    sd = float(np.std(d, ddof=1)) if n > 1 else 0.0
    half = _t975(n - 1) * sd / math.sqrt(n) if n > 1 else 0.0
    err_e, err_b = error(e), error(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        er = np.where(err_b > 0, 1.0 - err_e / err_b, np.nan)
    ok = er[np.isfinite(er)]
    return {
        "n": n,
        "diff_mean": float(d.mean()),
        "diff_sd": sd,
        "diff_ci95": [float(d.mean() - half), float(d.mean() + half)],
        "error_reduction_mean": float(ok.mean()) if len(ok) else None,
        "error_reduction_sd": float(np.std(ok, ddof=1)) if len(ok) > 1 else 0.0,
        "embedding_better": float(np.mean(err_e < err_b)),
    }


def _t975(dof: int) -> float:
    """The 97.5% quantile of Student's t with `dof` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.975, dof))


def best_entry(
    per_draw: Mapping[str, Mapping[str, Sequence[float]]], *, error: Callable
) -> tuple[str, str, float]:
    """(feature set, probe, mean error) with the lowest mean error.

    Args:
        per_draw: {feature set: {probe: per-draw metric}}.
        error: metric -> error.
    """
    ranked = [
        (float(np.mean(error(np.asarray(v, np.float64)))), name, probe)
        for name, probes in per_draw.items()
        for probe, v in probes.items()
    ]
    err, name, probe = min(ranked)
    return name, probe, err


def accuracy_error(v: np.ndarray) -> np.ndarray:
    """Balanced accuracy (or AUC) -> its error, 1 - v."""
    return 1.0 - np.asarray(v, np.float64)


def identity_error(v: np.ndarray) -> np.ndarray:
    """A metric that is already an error (MAE)."""
    return np.asarray(v, np.float64)
