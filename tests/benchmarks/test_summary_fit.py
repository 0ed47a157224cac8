"""The offline summary-map fit: its pixel samplers and its fit, on hand-built arrays."""

import numpy as np
import pytest

from benchmarks import summary_fit


def _labels(n=20, p=32, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 3, (n, p, p))
    lab[:, :4] = -1  # an unlabelled strip in every example
    return lab


def test_patch_sampling_takes_8_contiguous_16px_patches():
    lab = _labels()
    e, q = summary_fit.PixelSampler(lab, "patch", 0)()
    assert e.shape == q.shape == (8 * 256,)
    assert len(np.unique(e)) == 8
    rows, cols = np.divmod(q[:256], 32)
    assert rows.max() - rows.min() == 15 and cols.max() - cols.min() == 15
    assert len(np.unique(q[:256])) == 256


def test_window_sampling_keeps_8_labelled_pixels_of_each_example_of_32_steps():
    lab = _labels()
    s = summary_fit.PixelSampler(lab, "window", 0)
    e, q = s()
    assert e.shape == (64,)  # one step: 8 examples x 8 pixels
    for _ in range(40):
        e, q = s()
    assert e.shape == q.shape == (2048,)  # the window is full at 32 steps and stays there
    assert np.all(lab.reshape(len(lab), -1)[e, q] >= 0)  # labelled pixels only


def test_random_sampling_and_unknown_mode():
    e, q = summary_fit.PixelSampler(_labels(), "random", 0)()
    assert e.shape == q.shape == (2048,)
    with pytest.raises(ValueError, match="--sampling"):
        summary_fit.PixelSampler(_labels(), "strips", 0)


@pytest.mark.parametrize("sampling", ["patch", "window"])
def test_fit_separates_classes_the_summary_separates(sampling):
    """Three classes at three points of a 6-d feature space, plus noise: the fitted unit map
    classifies held-out pixels by their nearest class row of the table."""
    rng = np.random.default_rng(1)
    lab = _labels(n=12, p=16)
    centers = rng.normal(0, 1, (3, 6))
    x = centers[np.maximum(lab, 0)] + rng.normal(0, 0.3, (*lab.shape, 6))
    params = summary_fit.fit_linear_map(x, lab, sampling=sampling, steps=200, seed=0)
    held = np.repeat(np.arange(3), 50)
    mu = summary_fit.apply_map(params, centers[held] + rng.normal(0, 0.3, (150, 6)))
    np.testing.assert_allclose(np.linalg.norm(mu, axis=1), 1.0, atol=1e-5)
    table = params["table"] / np.linalg.norm(params["table"], axis=1, keepdims=True)
    pred = np.argmax(mu @ table.T, axis=1)
    assert np.mean(pred == held) > 0.95


def test_unknown_column_block():
    with pytest.raises(ValueError, match="--columns"):
        summary_fit.summary_columns({}, ["monthly"], {})
