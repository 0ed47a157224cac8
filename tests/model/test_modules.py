"""model/modules.py: shapes, unit norm, 1 x 1 inputs, masked pooling, source subsets."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model import features, modules

pytestmark = pytest.mark.usefixtures("fast_compile")  # tests/conftest.py


def _inputs(b, p, t, seed=0, drop=()):
    x = features.empty_inputs(b, p, t)
    rng = np.random.default_rng(seed)
    for k in x:
        src = k.split("/")[0]
        if src in drop:
            continue
        if k.endswith("/x"):
            x[k] = rng.normal(size=x[k].shape).astype(np.float32)
        elif k.endswith("mask"):
            x[k] = np.ones_like(x[k])
        elif k.endswith("/t"):
            x[k] = np.sort(rng.uniform(0, 365, size=x[k].shape), axis=1).astype(np.float32)
    x["period_days"][:] = 365.0
    return x


@pytest.fixture(scope="module")
def model_and_params(small_config):
    c = small_config()
    m = modules.create_model(c)
    params = jax.jit(m.init)(jax.random.key(0), _inputs(1, 4, 4), jax.random.key(1))
    return c, m, params


def _encode(m, params, inputs):
    """`m.apply(..., method=m.encode)` jitted: one compile instead of the op-by-op compiles
    of running the model eagerly (about 3x the CPU). A new trace each call, so a test's
    monkeypatched module functions are the ones traced."""
    return jax.jit(lambda p, x: m.apply(p, x, method=m.encode))(params, inputs)


@pytest.mark.parametrize("p", [1, 5, 16])
def test_shapes_and_unit_norm(model_and_params, p):
    c, m, params = model_and_params
    mu, observed, dec = jax.jit(m.apply)(params, _inputs(2, p, 4), jax.random.key(2))
    assert mu.shape == (2, p, p, 64)
    assert observed.shape == (2, p, p) and bool(observed.all())
    np.testing.assert_allclose(jnp.linalg.norm(mu, axis=-1), 1.0, atol=1e-5)
    assert dec["sentinel2_l2a"].shape == (2, 4, p, p, 10)
    assert dec["cop_dem"].shape == (2, 1, p, p, 2)


def test_any_subset_of_sources(model_and_params):
    c, m, params = model_and_params
    only_s1 = _inputs(1, 8, 4, drop=("sentinel2_l2a", "landsat_c2l2", "era5_land", "cop_dem"))
    mu, observed = _encode(m, params, only_s1)
    assert bool(observed.all()) and np.all(np.isfinite(mu))
    nothing = features.empty_inputs(1, 8, 4)
    _, observed = _encode(m, params, nothing)
    assert not bool(observed.any())


def test_unobserved_pixel_does_not_change_others(model_and_params):
    """Masked inputs are ignored: garbage values under a zero mask leave mu unchanged."""
    c, m, params = model_and_params
    x = _inputs(1, 8, 4)
    y = {k: v.copy() for k, v in x.items()}
    y["sentinel2_l2a/mask"][0, 1] = 0
    z = {k: v.copy() for k, v in y.items()}
    z["sentinel2_l2a/x"][0, 1] = 1e3
    a = _encode(m, params, y)[0]
    b = _encode(m, params, z)[0]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_masked_pool_means_valid_pixels_and_rounds_up():
    x = jnp.arange(9.0).reshape(1, 1, 3, 3, 1)
    m = jnp.array([[[[1, 0, 1], [1, 1, 1], [0, 0, 1]]]], jnp.float32)
    pooled, pm = modules.masked_pool(x, m, 2)
    assert pooled.shape == (1, 1, 2, 2, 1)
    # block (0,0): values 0, 3, 4 valid -> 7/3; block (1,1): 8 -> 8; block (1,0): none -> 0
    np.testing.assert_allclose(pooled[0, 0, :, :, 0], [[7 / 3, (2 + 5) / 2], [0.0, 8.0]])
    assert pm[0, 0].tolist() == [[1, 1], [0, 1]]
    up = modules.upsample(pooled, 2, 3, 3)
    assert up.shape == (1, 1, 3, 3, 1) and float(up[0, 0, 2, 2, 0]) == 8.0


def test_point_shortcuts_equal_the_padded_computations(model_and_params, monkeypatch):
    """A 1 x 1 input (a point) skips padding to the pooling blocks, the 3 x 3 conv's zero
    taps and the single-token attention; each shortcut equals the general computation."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, 3, 1, 1, 4)), jnp.float32)
    m = jnp.asarray([[1, 0, 1], [0, 1, 1]], jnp.float32)[..., None, None]
    for factor in (2, 8, 16):
        pooled, pm = modules.masked_pool(x, m, factor)
        np.testing.assert_array_equal(pooled, x * m[..., None])  # mean over the one pixel
        np.testing.assert_array_equal(pm, m)
        np.testing.assert_array_equal(modules.upsample(pooled, factor, 1, 1), pooled)
    rhs = jnp.asarray(rng.normal(size=(3, 3, 8, 6)), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    for shape in ((5, 1, 1, 8), (2, 3, 4, 8)):
        lhs = jnp.asarray(rng.normal(size=shape), jnp.float32)
        got = modules._conv_or_center_tap(lhs, rhs, (1, 1), "SAME", dimension_numbers=dn)
        want = jax.lax.conv_general_dilated(lhs, rhs, (1, 1), "SAME", dimension_numbers=dn)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    q, k, v = (jnp.asarray(rng.normal(size=(3, 1, 4, 8)), jnp.float32) for _ in range(3))
    for valid in (True, False):  # a masked single key still gets softmax weight 1
        mask = jnp.full((3, 4, 1, 1), valid)
        np.testing.assert_array_equal(
            modules._single_key_attention(q, k, v, mask=mask),
            nn.dot_product_attention(q, k, v, mask=mask),
        )

    # The whole encoder on points, against the general paths (a point padded to 2 x 2 with
    # missing pixels pools to itself; the conv and attention without shortcuts).
    c, model, params = model_and_params
    inputs = _inputs(3, 1, 4, seed=4)
    inputs["sentinel2_l2a/mask"][0, 1:] = 0
    fast = _encode(model, params, inputs)[0]
    pool = modules.masked_pool

    def padded_pool(x, mask, factor):
        if factor == 1 or x.shape[2:4] != (1, 1):
            return pool(x, mask, factor)
        xp = jnp.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1), (0, 0)))
        out, om = pool(xp, jnp.pad(mask, ((0, 0), (0, 0), (0, 1), (0, 1))), factor)
        return out[:, :, :1, :1], om[:, :, :1, :1]

    monkeypatch.setattr(modules, "masked_pool", padded_pool)
    monkeypatch.setattr(modules, "_conv_or_center_tap", jax.lax.conv_general_dilated)
    monkeypatch.setattr(modules, "_single_key_attention", nn.dot_product_attention)
    slow = _encode(model, params, inputs)[0]
    np.testing.assert_allclose(fast, slow, atol=1e-6)


def test_heads_first_attention_equals_flax_attention():
    """The time and space paths' attention (heads moved in front of the tokens) gives
    flax's dot-product attention: with a key mask (a query whose keys are all masked gets
    the mean of the values, as in flax), with the full (q, k) mask, and without a mask."""
    rng = np.random.default_rng(7)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 3, 5, 4, 8)), jnp.float32) for _ in range(3))
    valid = rng.random((2, 3, 5)) > 0.4
    valid[0, 1] = False  # no valid key at all
    key_mask = jnp.asarray(valid)[..., None, None, :]
    full_mask = jnp.broadcast_to(key_mask, (2, 3, 4, 5, 5))
    for mask in (key_mask, full_mask, None):
        got = modules._heads_first_attention(q, k, v, mask=mask)
        want = nn.dot_product_attention(q, k, v, mask=mask)
        assert got.shape == want.shape == (2, 3, 5, 4, 8)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        modules._heads_first_attention(q, k, v, mask=key_mask)[0, 1],
        jnp.broadcast_to(v[0, 1].mean(0), (5, 4, 8)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_dropping_padding_frames_keeps_mu(model_and_params):
    """Frames that are padding in every example (features.drop_padding_frames, used for
    points) do not change mu beyond float rounding."""
    c, model, params = model_and_params
    inputs = _inputs(3, 1, 8, seed=5)
    for s in ("sentinel2_l2a", "era5_land"):
        inputs[f"{s}/mask"][:, 3:] = 0
        inputs[f"{s}/x"][:, 3:] = 0
    inputs["sentinel2_l2a/mask"][2, 1:] = 0
    trimmed = features.drop_padding_frames(inputs)
    assert trimmed["era5_land/mask"].shape[1] == 4 and trimmed["sentinel1/mask"].shape[1] == 8
    full = _encode(model, params, inputs)[0]
    np.testing.assert_allclose(_encode(model, params, trimmed)[0], full, atol=1e-6)


def test_harmonic_summary_hand_computed():
    """Mean, annual cos/sin coefficients over valid frames only; static sources as is."""
    x = features.empty_inputs(1, 1, 4)
    s2 = "sentinel2_l2a"
    x[f"{s2}/t"][0] = [0.0, 91.3125, 182.625, 300.0]  # 0, 1/4, 1/2 year; the last is masked
    x[f"{s2}/x"][0, :, 0, 0, 0] = [1.0, 2.0, 3.0, 99.0]
    x[f"{s2}/mask"][0, :3] = 1.0
    x[f"{s2}/band_mask"][:] = 1.0
    x["cop_dem/x"][0, 0, 0, 0] = [0.5, -0.25]
    x["cop_dem/mask"][:] = 1.0
    x["cop_dem/band_mask"][:] = 1.0
    f = np.asarray(modules.harmonic_summary(x, 1))[0, 0, 0]
    # S2 band 0: mean (1 + 2 + 3) / 3; cos: (1 - 3) / 3; sin: 2 / 3; the other bands 0
    offsets, start = {}, 0
    for s in modules.SOURCES:
        n = x[f"{s}/x"].shape[-1] * (1 if x[f"{s}/x"].shape[1] == 1 else 3)
        offsets[s], start = start, start + n
    assert f.shape == (start,)
    o = offsets[s2]
    np.testing.assert_allclose(f[o : o + 3], [2.0, -2 / 3, 2 / 3], atol=1e-5)
    np.testing.assert_allclose(f[o + 3 : o + 30], 0.0, atol=1e-6)
    np.testing.assert_allclose(f[offsets["cop_dem"] : offsets["cop_dem"] + 2], [0.5, -0.25])


def test_quantile_summary_hand_computed():
    """Per band, numpy-style interpolated quantiles of the valid frames; none valid -> 0;
    static sources give nothing."""
    x = features.empty_inputs(1, 2, 5)
    s2 = "sentinel2_l2a"
    # pixel (0, 0): valid 4, 1, 3 (a masked 99 between them); pixel (0, 1): nothing valid
    x[f"{s2}/x"][0, :4, 0, 0, 2] = [4.0, 99.0, 1.0, 3.0]
    x[f"{s2}/mask"][0, [0, 2, 3], 0, 0] = 1.0
    x[f"{s2}/x"][0, :, 0, 1, 2] = 7.0
    # pixel (1, 0): one valid frame, 2.0; pixel (1, 1): all five valid, 4 0 3 1 2
    x[f"{s2}/x"][0, 1, 1, 0, 2] = 2.0
    x[f"{s2}/mask"][0, 1, 1, 0] = 1.0
    x[f"{s2}/x"][0, :, 1, 1, 2] = [4.0, 0.0, 3.0, 1.0, 2.0]
    x[f"{s2}/mask"][0, :, 1, 1] = 1.0
    x[f"{s2}/band_mask"][:] = 1.0
    x["cop_dem/x"][0, 0, 0, 0] = [0.5, -0.25]
    x["cop_dem/mask"][0, 0, 0, 0] = 1.0
    x["cop_dem/band_mask"][:] = 1.0
    f = np.asarray(modules.quantile_summary(x, (0.1, 0.5, 0.9)))
    varying = [s for s in modules.SOURCES if x[f"{s}/x"].shape[1] > 1]
    assert f.shape == (1, 2, 2, 3 * sum(x[f"{s}/x"].shape[-1] for s in varying))
    o = 3 * sum(x[f"{s}/x"].shape[-1] for s in varying[: varying.index(s2)]) + 3 * 2
    # sorted 1, 3, 4: q at positions 0.2, 1.0, 1.8 -> 1.4, 3.0, 3.8
    np.testing.assert_allclose(f[0, 0, 0, o : o + 3], [1.4, 3.0, 3.8], atol=1e-5)
    np.testing.assert_allclose(f[0, 0, 1], 0.0)  # no valid frame
    np.testing.assert_allclose(f[0, 1, 0, o : o + 3], [2.0, 2.0, 2.0])
    # all valid, sorted 0..4: positions 0.4, 2.0, 3.6 (the last order statistic is the top)
    np.testing.assert_allclose(f[0, 1, 1, o : o + 3], [0.4, 2.0, 3.6], atol=1e-5)
    np.testing.assert_allclose(f[0, 1, 1, o : o + 3], np.quantile(np.arange(5.0), [0.1, 0.5, 0.9]))
    assert np.count_nonzero(f) == 9


def test_pixel_summary_follows_the_config():
    """harmonics and quantiles each add their block, in that order; neither -> None."""
    x = _inputs(1, 2, 4)
    h = np.asarray(modules.harmonic_summary(x, 2))
    q = np.asarray(modules.quantile_summary(x, (0.2, 0.8)))
    both = modules.pixel_summary(x, {"harmonics": 2, "quantiles": (0.2, 0.8)})
    np.testing.assert_array_equal(both, np.concatenate([h, q], -1))
    np.testing.assert_array_equal(modules.pixel_summary(x, {"quantiles": [0.2, 0.8]}), q)
    np.testing.assert_array_equal(modules.pixel_summary(x, {"harmonics": 2}), h)
    assert modules.pixel_summary(x, {"harmonics": 0, "quantiles": ()}) is None


def test_mu_starts_as_a_linear_map_of_the_pixel_summary(model_and_params):
    """The deep path's gate starts at 0: at init mu is the normalized linear skip alone."""
    c, m, params = model_and_params
    x = _inputs(1, 3, 4)
    mu, _ = _encode(m, params, x)
    p = params["params"]["summarizer"]
    assert float(p["deep_gate"]) == 0.0
    h = modules.pixel_summary(x, c.model)
    lin = h @ p["precision"]["kernel"] + p["precision"]["bias"]
    np.testing.assert_allclose(mu, lin / jnp.linalg.norm(lin, axis=-1, keepdims=True), atol=1e-5)


def test_timecode_is_periodic_in_two_years():
    t = jnp.array([0.0, 730.0])
    tc = modules.timecode(t, 8)
    np.testing.assert_allclose(tc[0], tc[1], atol=1e-4)
    assert tc.shape == (2, 16)


def test_large_config_has_about_480m_parameters():
    from model import configs

    c = configs.get("large")
    m = modules.create_model(c)
    shapes = jax.eval_shape(
        lambda: m.init(jax.random.key(0), features.empty_inputs(1, 1, 2), jax.random.key(1))
    )
    n = modules.count_params(shapes)
    assert 450e6 < n < 510e6, n


def test_normal_init_gives_the_eager_bits_inside_a_jit():
    """train.init_state is jitted; its normal(0.02) parameters must be the bits an eager
    init gave (the shipped bundle's start). Without the barrier XLA folds the scale into the
    sampler (1,091 of these 4,096 values moved by an ulp, checked)."""
    key, shape = jax.random.key(2), (64, 64)
    init = modules.normal_init(0.02)
    eager = np.asarray(jax.random.normal(key, shape) * jnp.asarray(0.02, jnp.float32))
    np.testing.assert_array_equal(np.asarray(init(key, shape)), eager)
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda k: init(k, shape))(key)), eager)
