"""benchmarks/deep_share.py: the explained and nonlinear shares on constructed vectors."""

from __future__ import annotations

import numpy as np
import pytest

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


def _points(realdata_dir, n=48):
    """The first n fuel-moisture points as a LabelledPixels point set."""
    from beam_jobs.io import realdata
    from evaluation.baselines import select_pixels
    from evaluation.datasets import LabelledPixels

    obs = realdata.read_fuel_moisture(realdata_dir / "presto_fuel_moisture").observations
    pts = select_pixels(obs, np.arange(n))
    z = np.zeros(n, np.int64)
    return LabelledPixels("pts", pts, np.arange(n), z, z.astype(bool), {})


def test_summary_and_knockout_are_the_shipped_models_own(shipped_bundle, realdata_dir):
    """With the deep gate at 0 the shipped mu is normalize(W s + b) of exactly the summary
    `pixel_summaries` computes; with W, b at 0 and the gate at 1 it is the knockout's vectors."""
    import jax

    from evaluation.evaluate import embed_pixels
    from model import load_bundle

    ds = _points(realdata_dir)
    b = load_bundle(str(shipped_bundle))
    b.params = jax.tree_util.tree_map(np.array, b.params)
    head = b.params["summarizer"]
    head["deep_gate"] = np.float32(0.0)
    mu = embed_pixels(b.embed, ds)
    s = deep_share.pixel_summaries(b, ds.observations)
    lin = s @ head["precision"]["kernel"] + head["precision"]["bias"]
    lin /= np.linalg.norm(lin, axis=1, keepdims=True)
    np.testing.assert_allclose(mu, lin, atol=2e-5)
    assert deep_share.nonlinear_share(mu, s) < 0.05  # the normalization's curvature alone
    head["deep_gate"] = np.float32(1.0)
    head["precision"]["kernel"][:] = 0.0
    head["precision"]["bias"][:] = 0.0
    mu = embed_pixels(b.embed, ds)
    ko = embed_pixels(deep_share.knockout(b).embed, ds)
    np.testing.assert_allclose(mu, ko, atol=2e-5)
    assert deep_share.explained(mu, ko) > 1 - 1e-6


def test_ablation_pairs_each_version_with_the_baseline_and_with_both(realdata_dir):
    """A regression target that `both` and `deep_only` carry exactly and `summary_only` not at
    all: on the same draws, deep_only differs from both by 0 on every draw and summary_only
    is worse; the baseline is the designed features' best entry."""
    n = 60
    ds = _points(realdata_dir, n)
    rng = np.random.default_rng(3)
    y = rng.uniform(0.0, 100.0, n)
    ds.targets, ds.is_test = y, np.arange(n) % 3 == 0
    exact = np.stack([y / 100.0, np.zeros(n)], 1)
    vectors = {"both": exact, "deep_only": exact.copy(), "summary_only": rng.normal(size=(n, 2))}
    table = deep_share.ablation(ds, vectors, repeats=4)
    assert list(table) == ["10", "100", "max"]
    for bk, row in table.items():
        d = row["deep_only"]["vs_both"]
        assert d["diff_mean"] == 0.0 and d["diff_ci95"] == [0.0, 0.0]
        assert d["n"] == (1 if bk == "max" else 4)
        worse = row["summary_only"]["vs_both"]
        assert worse["diff_mean"] > 5.0 and worse["embedding_better"] == 0.0  # MAE up
        assert row["best_baseline"]["name"] not in deep_share.VERSIONS
        # MAE is its own error: the paired mean is the difference of the two mean errors
        for v in deep_share.VERSIONS:
            d = row[v]["vs_baseline"]["diff_mean"]
            assert d == pytest.approx(row[v]["error"] - row["best_baseline"]["error"])
    # with the whole pool, kNN (k=5) on the exact target's line misses by under the spacing
    assert table["max"]["both"]["error"] < 10.0 < table["max"]["summary_only"]["error"]
    text = deep_share.ablation_markdown("pts", table, regression=True)
    assert text.count("| summary_only |") == 3 and "MAE" in text
