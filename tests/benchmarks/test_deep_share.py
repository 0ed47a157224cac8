"""benchmarks/deep_share.py: the explained and nonlinear shares on constructed vectors."""

from __future__ import annotations

import numpy as np

from benchmarks import deep_share


def test_nonlinear_share_is_zero_for_a_linear_read_out_and_the_noise_share_otherwise():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(4000, 6))
    linear = s @ rng.normal(size=(6, 3)) + 0.5
    assert deep_share.nonlinear_share(linear, s) < 1e-12
    # half the variance of each dimension from s, half independent of it
    noise = rng.normal(size=(4000, 3)) * np.std(linear, axis=0)
    assert abs(deep_share.nonlinear_share(linear + noise, s) - 0.5) < 0.03
    # rows with a non-finite value are left out
    bad = linear.copy()
    bad[:10] = np.nan
    assert deep_share.nonlinear_share(bad, s) < 1e-12


def test_a_nonlinear_function_of_the_summary_counts_as_not_linear():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(4000, 2))
    mu = np.stack([s[:, 0] * s[:, 1], np.abs(s[:, 0])], 1)  # uncorrelated with s linearly
    assert deep_share.nonlinear_share(mu, s) > 0.95


def test_explained_is_one_for_an_affine_copy_and_near_chance_for_independent_vectors():
    rng = np.random.default_rng(2)
    ko = rng.normal(size=(3000, 8))
    mu = ko @ rng.normal(size=(8, 4)) - 2.0
    assert deep_share.explained(mu, ko) > 1 - 1e-12
    other = rng.normal(size=(3000, 4))
    assert deep_share.explained(other, ko) < 9 / 3000 * 3  # chance ~ (F + 1) / N
