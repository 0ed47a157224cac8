"""vMF sampling against the analytic mean resultant length."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import vmf


@pytest.mark.parametrize(("kappa", "d"), [(8000.0, 64), (50.0, 64), (5.0, 3)])
def test_sample_mean_dot_matches_bessel_ratio(kappa, d):
    mu = vmf.l2_normalize(jax.random.normal(jax.random.PRNGKey(1), (4096, d)))
    x = vmf.sample_vmf(jax.random.PRNGKey(2), mu, kappa)
    np.testing.assert_allclose(jnp.linalg.norm(x, axis=-1), 1.0, atol=1e-5)
    dots = jnp.sum(x * mu, axis=-1)
    expected = vmf.mean_resultant_length(kappa, d)
    # Standard error of the mean is tiny at 4096 samples; 3e-3 relative covers it.
    assert float(dots.mean()) == pytest.approx(expected, rel=3e-3)


def test_mean_resultant_length_known_values():
    # d = 3: A = coth(k) - 1/k.
    k = 5.0
    assert vmf.mean_resultant_length(k, 3) == pytest.approx(1 / np.tanh(k) - 1 / k, rel=1e-9)
    # Large kappa: A ~ 1 - (d - 1) / (2 k).
    assert vmf.mean_resultant_length(8000.0, 64) == pytest.approx(1 - 63 / 16000, abs=1e-5)


def test_l2_normalize():
    x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(vmf.l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)
