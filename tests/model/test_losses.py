"""Loss values against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import losses


def test_reconstruction_l1_masked():
    pred = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    target = jnp.array([[1.5, 0.0], [2.5, 100.0]])
    mask = jnp.array([[True, True], [True, False]])
    # |1-1.5| + |2-0| + |3-2.5| = 3 over 3 valid entries; the masked 100 is ignored.
    assert float(losses.reconstruction_l1(pred=pred, target=target, mask=mask)) == pytest.approx(
        1.0
    )
    assert (
        float(losses.reconstruction_l1(pred=pred, target=target, mask=jnp.zeros((2, 2), bool)))
        == 0.0
    )
    # Gradient flows only through valid entries.
    g = jax.grad(lambda p: losses.reconstruction_l1(pred=p, target=target, mask=mask))(pred)
    np.testing.assert_allclose(g, [[-1 / 3, 1 / 3], [1 / 3, 0.0]], atol=1e-6)


def test_categorical_xent_ignores_negative_labels():
    logits = jnp.array([[0.0, jnp.log(3.0)], [5.0, 5.0]])
    labels = jnp.array([1, -1])
    # Row 0: p(1) = 3/4 -> -log(0.75); row 1 has no label.
    assert float(losses.categorical_xent(logits=logits, labels=labels)) == pytest.approx(
        -np.log(0.75), rel=1e-6
    )


def test_batch_uniformity_hand_values():
    e1, e2 = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    d = jnp.array([np.sqrt(0.5), np.sqrt(0.5)])
    mu = jnp.stack([e1, e2, d])
    # Pairs (0,2), (1,0), (2,1) after a roll by 1: |e1.d| = .7071, |e2.e1| = 0, |d.e2| = .7071.
    assert float(losses.batch_uniformity(mu=mu)) == pytest.approx(2 * np.sqrt(0.5) / 3, rel=1e-6)
    # Identical embeddings (collapse) give 1, antipodal ones too (absolute value).
    assert float(losses.batch_uniformity(mu=jnp.stack([e1, e1, -e1]))) == pytest.approx(1.0)
    # A mask drops pairs that involve an invalid embedding: only (1,0) is left.
    m = jnp.array([True, True, False])
    assert float(losses.batch_uniformity(mu=mu, mask=m)) == pytest.approx(0.0)


def test_consistency_range_and_stop_gradient():
    t = jnp.array([[1.0, 0.0], [1.0, 0.0]])
    s = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
    assert float(losses.consistency(mu_teacher=t, mu_student=s)) == pytest.approx(
        0.5
    )  # (0 + 1) / 2
    g = jax.grad(lambda tt: losses.consistency(mu_teacher=tt, mu_student=s))(t)
    assert float(jnp.abs(g).sum()) == 0.0


def test_contrastive_alignment_hand_value():
    emb = jnp.eye(2)
    txt = jnp.eye(2)
    t = 0.5
    # logits = I / 0.5 -> each row softmax: p(correct) = e^2 / (e^2 + 1), both directions.
    expected = -np.log(np.e**2 / (np.e**2 + 1))
    assert float(
        losses.contrastive_alignment(embeddings=emb, text_embeddings=txt, temperature=t)
    ) == pytest.approx(expected, rel=1e-6)
    # With a masked-out example only one pair remains: loss 0 (a single candidate).
    val = losses.contrastive_alignment(
        embeddings=emb, text_embeddings=txt, temperature=t, mask=jnp.array([True, False])
    )
    assert float(val) == pytest.approx(0.0, abs=1e-6)
