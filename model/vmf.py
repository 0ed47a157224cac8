"""von Mises-Fisher distributions on the unit sphere S^(D-1).

The encoder's output is the mean direction mu of a vMF distribution; decoders see a sample
around it with concentration kappa (AEF used about 8,000), which makes the embedding space
smooth: nearby directions must decode to similar observations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """x / |x| along `axis` (zero vectors stay zero)."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps))


def sample_vmf(key: jax.Array, mu: jax.Array, kappa: float, *, tries: int = 8) -> jax.Array:
    """Samples of vMF(mu, kappa), one per vector in `mu` (..., D), by Wood's (1994) method.

    The component w along mu comes from rejection sampling a Beta proposal; `tries`
    candidates are drawn at once and the first accepted is kept (acceptance is above 0.9
    for the kappas used here, so the fallback to the last candidate is practically never
    taken). The rest of the sample is uniform on the sphere orthogonal to mu.
    """
    d = mu.shape[-1]
    batch = mu.shape[:-1]
    k_beta, k_u, k_v = jax.random.split(key, 3)
    dm1 = d - 1.0
    # b = (-2k + sqrt(4k^2 + (d-1)^2)) / (d-1), written without cancellation for large k.
    b = dm1 / (2.0 * kappa + jnp.sqrt(4.0 * kappa**2 + dm1**2))
    x0 = (1.0 - b) / (1.0 + b)
    c = kappa * x0 + dm1 * jnp.log(1.0 - x0**2)
    z = jax.random.beta(k_beta, dm1 / 2.0, dm1 / 2.0, shape=(tries, *batch))
    w = (1.0 - (1.0 + b) * z) / (1.0 - (1.0 - b) * z)
    u = jax.random.uniform(k_u, shape=(tries, *batch), minval=1e-12)
    accept = kappa * w + dm1 * jnp.log(1.0 - x0 * w) - c >= jnp.log(u)
    first = jnp.argmax(accept, axis=0)  # 0 if none accepted -> also fine, see docstring
    first = jnp.where(jnp.any(accept, axis=0), first, tries - 1)
    w = jnp.take_along_axis(w, first[None], axis=0)[0]
    v = jax.random.normal(k_v, mu.shape, dtype=mu.dtype)
    v = l2_normalize(v - jnp.sum(v * mu, axis=-1, keepdims=True) * mu)
    return (
        w[..., None].astype(mu.dtype) * mu
        + jnp.sqrt(jnp.maximum(1.0 - w**2, 0.0))[..., None].astype(mu.dtype) * v
    )


def mean_resultant_length(kappa: float, d: int) -> float:
    """E[mu . x] for x ~ vMF(mu, kappa) on S^(d-1): A_d(k) = I_{d/2}(k) / I_{d/2-1}(k).

    Computed with the continued fraction of Bessel-function ratios (stable for large kappa),
    used by tests to check `sample_vmf`.
    """
    nu = d / 2.0
    # A = I_nu / I_{nu-1} = 1 / (2(nu)/k + 1 / (2(nu+1)/k + 1 / (...))) (Gauss continued fraction).
    frac = 0.0
    for n in range(400, -1, -1):
        frac = 1.0 / (2.0 * (nu + n) / kappa + frac)
    return float(frac)
