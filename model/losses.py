"""The AlphaEarth-style training losses: pure functions with keyword-only arguments.

No config reads and no hidden constants: every weight, temperature and reduction is an
argument. Shapes use B for batch, D for the embedding size (64), and `...` for any
per-example leading axes (pixels, frames).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jnp.mean(values)
    mask = jnp.broadcast_to(mask.astype(values.dtype), values.shape)
    # max(., 1) so an all-masked batch gives 0, not NaN.
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def reconstruction_l1(
    *, pred: jax.Array, target: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Mean absolute error over the entries where `mask` is true (continuous sources).

    Args:
      pred: decoded values, any shape.
      target: observed values, same shape; entries under a false mask may hold anything.
      mask: broadcastable to `pred`; true where the observation is valid.

    Returns:
      A scalar: sum |pred - target| over valid entries / number of valid entries.
    """
    diff = jnp.abs(pred - jnp.where(mask if mask is not None else True, target, pred))
    return _masked_mean(diff, mask)


def categorical_xent(
    *, logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Mean cross-entropy of integer labels under `logits` (..., K), over valid entries."""
    safe = jnp.where(labels < 0, 0, labels)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    valid = labels >= 0 if mask is None else jnp.logical_and(mask, labels >= 0)
    return _masked_mean(nll, valid)


def batch_uniformity(*, mu: jax.Array, shift: int = 1, mask: jax.Array | None = None) -> jax.Array:
    """Mean |mu . mu'| between each embedding and the one `shift` places along the batch.

    Minimizing it is a necessary condition for embeddings spread uniformly over the sphere
    (AEF's batch-uniformity term); it compares different examples, never an example with
    itself.

    Args:
      mu: (B, ..., D) unit vectors.
      shift: batch rotation, 1 <= shift < B.
      mask: (B, ...) optional validity of each embedding; a pair counts if both are valid.
    """
    rolled = jnp.roll(mu, shift, axis=0)
    dots = jnp.abs(jnp.sum(mu * rolled, axis=-1))
    pair_mask = None
    if mask is not None:
        pair_mask = jnp.logical_and(mask, jnp.roll(mask, shift, axis=0))
    return _masked_mean(dots, pair_mask)


def consistency(
    *, mu_teacher: jax.Array, mu_student: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Teacher-student agreement (1 - mu_t . mu_s) / 2, in [0, 1]; no gradient to the teacher."""
    teacher = jax.lax.stop_gradient(mu_teacher)
    return _masked_mean((1.0 - jnp.sum(teacher * mu_student, axis=-1)) / 2.0, mask)


def contrastive_alignment(
    *,
    embeddings: jax.Array,
    text_embeddings: jax.Array,
    temperature: float,
    mask: jax.Array | None = None,
) -> jax.Array:
    """CLIP-style symmetric InfoNCE between B embeddings and their B text/label embeddings.

    Args:
      embeddings: (B, D) unit vectors (one per example, e.g. pooled over its pixels).
      text_embeddings: (B, D) unit vectors of each example's text or label.
      temperature: softmax temperature (> 0).
      mask: (B,) which examples have a text; rows and columns of the others are excluded.
    """
    logits = embeddings @ text_embeddings.T / temperature
    b = logits.shape[0]
    if mask is None:
        mask = jnp.ones((b,), bool)
    pair_ok = mask[:, None] & mask[None, :]
    logits = jnp.where(pair_ok, logits, -1e9)
    labels = jnp.arange(b)
    row = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=1), labels[:, None], axis=1)[:, 0]
    col = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=0), labels[None, :], axis=0)[0]
    return 0.5 * (_masked_mean(row, mask) + _masked_mean(col, mask))
