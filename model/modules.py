"""The Space-Time-Precision (STP) embedding model in Flax (linen).

Inputs are the dict of `model.features.to_model_inputs` (every registry source, padded to a
fixed number of frames, with masks); outputs are per-pixel unit vectors mu (B, H, W, D).

    inputs --per-source projector (values, masks, geometry, timecode, source id)--> frames
           (B, T_all, H, W, d): the frames of all sources side by side along time
    STP blocks, three paths in parallel, each at its own resolution:
      precision  3x3 convolutions per frame          at L/2
      time       self-attention along time per place at L/8
      space      self-attention across places        at L/16
      then every path adds the others resampled to its resolution (exchange)
    summarizer: at L, the frames plus the three paths upsampled; K learned queries,
      conditioned on the valid period's timecodes (enc(0), enc(t_e - t_s)), pool over time;
      an MLP maps the K pooled vectors to D dims; added to a linear map of the pixel's
      per-pixel summary (per band: masked mean and seasonal harmonics of its frames, and
      quantiles over its valid frames), the deep part through a gate that starts at 0;
      L2-normalized: the vMF mean direction mu
    decoders (one per source): MLP(z ~ vMF(mu, kappa), timecode, geometry) -> the values of
      that source's frame at that pixel (implicit: queried at any time)

Pooling to coarser resolutions is masked (means over valid pixels), sizes round up, so any
H x W down to 1 x 1 works, and a missing source is only a zero mask.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax.linen.dtypes import promote_dtype

from model import vmf
from schemas import sensors


def normal_init(stddev: float):
    """`nn.initializers.normal(stddev)`, giving the same bits inside a jit as run eagerly.

    Eagerly the sampler and the scaling are two XLA programs; traced into one (a jitted
    `train.init_state`), XLA folds the scale into the sampler's own constant (sqrt 2) and a
    few values move by an ulp. The barrier keeps them apart, so the jitted init (seconds)
    gives the parameters the eager one (a minute of op-by-op compiles) gave, and training
    from the same data stays bit for bit the same.
    """

    def init(key, shape, dtype=jnp.float32):
        sample = jax.lax.optimization_barrier(jax.random.normal(key, shape, dtype))
        return sample * jnp.asarray(stddev, dtype)

    return init


SOURCES = sensors.SOURCE_IDS
# Pooling factors of the precision, time and space paths; a strip of rows starting at a
# multiple of CONTEXT_ROWS pools exactly as the whole chip does over those rows.
CONTEXT_FACTORS = (2, 8, 16)
CONTEXT_ROWS = 16
# Periods (days) of the sinusoidal timecode: a day to two years, the year and its harmonics.
_MAX_PERIOD_DAYS = 730.0


def timecode(t: jax.Array, num_freqs: int) -> jax.Array:
    """Sinusoidal features (..., 2 * num_freqs) of times in days."""
    periods = _MAX_PERIOD_DAYS / (2.0 ** jnp.arange(num_freqs, dtype=jnp.float32))
    angles = 2.0 * jnp.pi * t[..., None].astype(jnp.float32) / periods
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def harmonic_summary(inputs: Mapping[str, jax.Array], harmonics: int) -> jax.Array:
    """Each pixel's year as a few numbers per band: (B, H, W, F), F = sum over sources.

    For a time-varying source, the masked means over the valid frames of x * phi(t) for
    phi in (1, cos, sin of the year and its first `harmonics` - 1 overtones): the mean value
    and the phase and amplitude of its seasonal cycle per band, as in harmonic (CCDC-style)
    regression. A static source contributes its value. Missing frames, bands and sources
    give 0 (the normalized mean). Fixed, parameter-free, and defined for 1 x 1 inputs.
    """
    cols = []
    for s in SOURCES:
        x, m = inputs[f"{s}/x"], inputs[f"{s}/mask"]  # (B, T, H, W, C), (B, T, H, W)
        x = x * inputs[f"{s}/band_mask"][:, :, None, None, :]
        if x.shape[1] == 1:
            cols.append(x[:, 0] * m[:, 0, ..., None])
            continue
        angle = 2.0 * jnp.pi * inputs[f"{s}/t"].astype(jnp.float32) / 365.25  # (B, T)
        basis = [jnp.ones_like(angle)]
        for k in range(1, harmonics + 1):
            basis += [jnp.cos(k * angle), jnp.sin(k * angle)]
        phi = jnp.stack(basis, -1)  # (B, T, K)
        n = jnp.maximum(m.sum(1), 1.0)[..., None, None]  # (B, H, W, 1, 1)
        coef = jnp.einsum("bthwc,bthw,btk->bhwck", x, m.astype(x.dtype), phi) / n
        cols.append(coef.reshape(*coef.shape[:3], -1))
    return jnp.concatenate(cols, -1)


def _order_statistic(srt: jax.Array, idx: jax.Array) -> jax.Array:
    """srt (B, T, H, W, C) sorted along T, idx (Q, B, H, W) -> (Q, B, H, W, C)."""
    idx = jnp.moveaxis(idx, 0, 1)[..., None]  # (B, Q, H, W, 1)
    return jnp.moveaxis(jnp.take_along_axis(srt, idx, axis=1), 1, 0)


def quantile_summary(inputs: Mapping[str, jax.Array], quantiles: tuple[float, ...]) -> jax.Array:
    """Each pixel's per-band quantiles over its valid frames: (B, H, W, F), F = sum over sources.

    For a time-varying source with C bands, the `quantiles` (e.g. 0.1, 0.5, 0.9) of each
    band's valid values, linearly interpolated between order statistics as numpy's default
    percentile: F = C * len(quantiles), band-major. Order statistics do not depend on when
    the frames fall in the year, unlike the harmonic means, and are robust to a residual
    cloud; they are the percentile part of the designed features of benchmarks/quality.py.
    A pixel with no valid frame gives 0 (the normalized mean). Static sources give nothing
    here (their value is in `harmonic_summary`). Fixed and parameter-free.
    """
    qs = jnp.asarray(quantiles, jnp.float32)
    cols = []
    for s in SOURCES:
        x, m = inputs[f"{s}/x"], inputs[f"{s}/mask"]  # (B, T, H, W, C), (B, T, H, W)
        if x.shape[1] == 1:
            continue
        x = (x * inputs[f"{s}/band_mask"][:, :, None, None, :]).astype(jnp.float32)
        valid = (m > 0)[..., None]
        srt = jnp.sort(jnp.where(valid, x, jnp.inf), axis=1)  # valid values first, ascending
        n = jnp.sum(m > 0, axis=1)  # (B, H, W)
        pos = qs[:, None, None, None] * jnp.maximum(n - 1, 0)[None].astype(jnp.float32)
        lo = jnp.floor(pos)
        frac = (pos - lo)[..., None]  # (Q, B, H, W, 1)
        lo_i = lo.astype(jnp.int32)
        hi_i = jnp.minimum(lo_i + 1, jnp.maximum(n - 1, 0)[None])
        a, b = _order_statistic(srt, lo_i), _order_statistic(srt, hi_i)
        # with no valid frame a and b are inf (q NaN): replaced by 0 (inputs carry no gradient)
        q = jnp.where((n > 0)[None, ..., None], a + frac * (b - a), 0.0)  # (Q, B, H, W, C)
        cols.append(jnp.moveaxis(q, 0, -1).reshape(*q.shape[1:4], -1))
    if not cols:
        b, _, h, w = inputs[f"{SOURCES[0]}/mask"].shape
        return jnp.zeros((b, h, w, 0), jnp.float32)
    return jnp.concatenate(cols, -1)


def pixel_summary(inputs: Mapping[str, jax.Array], model_config) -> jax.Array | None:
    """The fixed per-pixel summary that reaches mu linearly, as `model_config` asks: the
    harmonic summary (`harmonics` > 0), then the quantile summary (`quantiles` not empty);
    None when neither is on."""
    harmonics = model_config.get("harmonics", 0)
    quantiles = tuple(model_config.get("quantiles", ()))
    parts = [harmonic_summary(inputs, harmonics)] if harmonics > 0 else []
    if quantiles:
        parts.append(quantile_summary(inputs, quantiles))
    return jnp.concatenate(parts, -1) if parts else None


def masked_pool(x: jax.Array, mask: jax.Array, factor: int) -> tuple[jax.Array, jax.Array]:
    """Mean over valid pixels of factor x factor blocks of x (B, T, H, W, d); sizes round up.

    Returns the pooled features and the pooled mask (1 where a block had a valid pixel).
    """
    if factor == 1:
        return x, mask
    b, t, h, w, d = x.shape
    if h == w == 1:  # a point (P = 1): its own value, without padding it to factor x factor
        return x * mask[..., None], (mask > 0).astype(x.dtype)
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    pad = ((0, 0), (0, 0), (0, hp - h), (0, wp - w))
    m = jnp.pad(mask, pad)
    xs = jnp.pad(x * mask[..., None], pad + ((0, 0),))
    xs = xs.reshape(b, t, hp // factor, factor, wp // factor, factor, d).sum((3, 5))
    ms = m.reshape(b, t, hp // factor, factor, wp // factor, factor).sum((3, 5))
    return xs / jnp.maximum(ms, 1.0)[..., None], (ms > 0).astype(x.dtype)


def upsample(x: jax.Array, factor: int, h: int, w: int) -> jax.Array:
    """Nearest-neighbour upsampling of (B, T, h', w', d) by `factor`, cropped to (h, w)."""
    if factor == 1 or h == w == 1:  # a point (P = 1) needs no repeats
        return x[:, :, :h, :w]
    x = jnp.repeat(jnp.repeat(x, factor, axis=2), factor, axis=3)
    return x[:, :, :h, :w]


def _conv_or_center_tap(lhs, rhs, window_strides, padding, **kwargs):
    """`lax.conv_general_dilated` (NHWC, HWIO kernels), but for a 1 x 1 input with "SAME"
    padding and stride 1 only the kernel's centre tap meets a value (the rest meets the zero
    padding), so a point (P = 1) gets one matrix product instead of a padded 3 x 3 conv."""
    kh, kw = rhs.shape[:2]
    dilated = any(d != 1 for d in (kwargs.get("lhs_dilation") or (1,)))
    dilated = dilated or any(d != 1 for d in (kwargs.get("rhs_dilation") or (1,)))
    if (
        lhs.shape[1:3] == (1, 1)
        and padding == "SAME"
        and tuple(window_strides) == (1, 1)
        and kh % 2 == kw % 2 == 1
        and kwargs.get("feature_group_count", 1) == 1
        and not dilated
    ):
        return jnp.einsum(
            "bhwc,cf->bhwf", lhs, rhs[kh // 2, kw // 2], precision=kwargs.get("precision")
        )
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


def _heads_first_attention(query, key, value, mask=None, dtype=None, precision=None):
    """`nn.dot_product_attention` without bias or dropout (`Attention` uses neither), the
    same arithmetic in the same order, with the heads moved in front of the tokens before
    the two products: XLA on CPU runs `...hqd,...hkd->...hqk` as one batched matrix product,
    while flax's `...qhd,...khd->...hqk` ran about 2-3x slower on the time path's (points or
    places, ~85 frames, 4 heads of 8) shapes (docs/experiments/2026-12-06-points-and-peak.md).
    """
    query, key, value = promote_dtype(query, key, value, dtype=dtype)
    dtype = query.dtype
    depth = query.shape[-1]
    q = jnp.swapaxes(query / jnp.sqrt(depth).astype(dtype), -3, -2)  # (..., h, q, d)
    k, v = jnp.swapaxes(key, -3, -2), jnp.swapaxes(value, -3, -2)
    weights = jnp.einsum("...hqd,...hkd->...hqk", q, k, precision=precision)
    if mask is not None:
        weights = jnp.where(mask, weights, jnp.finfo(dtype).min)
    weights = jax.nn.softmax(weights).astype(dtype)
    out = jnp.einsum("...hqk,...hkd->...hqd", weights, v, precision=precision)
    return jnp.swapaxes(out, -3, -2)  # (..., q, h, d)


# Training traces the attention in flax's own layout (`reference_attention`, entered by
# train.train_step): the heads-first layout gives the same forward values, but its gradients
# differ in the last bits (1,130 of 203,354 parameters by up to 1.9e-9 after 3 steps of
# tiny_shipped), and `make pretrain` reproduces the shipped bundle byte for byte only with
# the gradients it was trained with. Inference (bundles, embed, embed-points) uses heads-first.
_REFERENCE_ATTENTION = [False]


@contextlib.contextmanager
def reference_attention():
    """Attention modules traced inside use flax's `dot_product_attention` layout."""
    before = _REFERENCE_ATTENTION[0]
    _REFERENCE_ATTENTION[0] = True
    try:
        yield
    finally:
        _REFERENCE_ATTENTION[0] = before


def _single_key_attention(query, key, value, **kwargs):
    """Attention over one token: its softmax weight is 1 (masked or not), so the output is
    the value; the query and key projections go unused (and compiled out)."""
    del query, key, kwargs
    return value


class Mlp(nn.Module):
    hidden: int
    out: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype)(x))
        return nn.Dense(self.out, dtype=self.dtype)(x)


class SourceProjector(nn.Module):
    """One source's frames -> features (B, T, H, W, d), zero where the pixel is not valid."""

    source: str
    width: int
    num_freqs: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, inputs: Mapping[str, jax.Array]) -> jax.Array:
        s = self.source
        x, mask, band_mask = inputs[f"{s}/x"], inputs[f"{s}/mask"], inputs[f"{s}/band_mask"]
        bm = jnp.broadcast_to(band_mask[:, :, None, None, :], x.shape)
        h = nn.Dense(self.width, dtype=self.dtype, name="values")(jnp.concatenate([x, bm], -1))
        per_frame = nn.Dense(self.width, dtype=self.dtype, name="time")(
            timecode(inputs[f"{s}/t"], self.num_freqs)
        )
        if f"{s}/geometry" in inputs:
            per_frame = per_frame + nn.Dense(self.width, dtype=self.dtype, name="geometry")(
                inputs[f"{s}/geometry"]
            )
        source_id = self.param("source", normal_init(0.02), (self.width,))
        h = h + (per_frame + source_id)[:, :, None, None, :]
        h = Mlp(2 * self.width, self.width, self.dtype)(nn.gelu(h)) + h
        return nn.LayerNorm(dtype=self.dtype)(h) * mask[..., None].astype(h.dtype)


class Attention(nn.Module):
    """Pre-norm self-attention + MLP over the tokens of axis -2, keys masked."""

    heads: int
    mlp_ratio: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array) -> jax.Array:
        d = x.shape[-1]
        h = nn.LayerNorm(dtype=self.dtype)(x)
        if x.shape[-2] == 1:
            attention_fn, mask = _single_key_attention, None
        elif _REFERENCE_ATTENTION[0]:  # training: the mask and layout the bundle was trained with
            attention_fn = nn.dot_product_attention
            mask = (valid[..., None, None, :] > 0) & (valid[..., None, :, None] >= 0)
        else:
            attention_fn = _heads_first_attention
            mask = (valid > 0)[..., None, None, :]  # (..., 1 head, 1 query, keys)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, dtype=self.dtype, deterministic=True, attention_fn=attention_fn
        )(h, h, mask=mask)
        x = x + h
        x = x + Mlp(self.mlp_ratio * d, d, self.dtype)(nn.LayerNorm(dtype=self.dtype)(x))
        return x * valid[..., None].astype(x.dtype)


class STPBlock(nn.Module):
    """Space (L/16), time (L/8) and precision (L/2) paths, then an exchange between them."""

    width: int
    heads: int
    mlp_ratio: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, p, tt, ss, mp, mt, ms):
        b, t, h2, w2, d = p.shape
        # precision: 3x3 convolutions per frame
        y = nn.LayerNorm(dtype=self.dtype)(p).reshape(b * t, h2, w2, d)
        conv = functools.partial(
            nn.Conv,
            d,
            (3, 3),
            padding="SAME",
            dtype=self.dtype,
            conv_general_dilated=_conv_or_center_tap,
        )
        y = nn.gelu(conv()(y))
        y = conv()(y)
        p = (p + y.reshape(p.shape)) * mp[..., None]
        # time: attention along the frames at each place
        _, _, h8, w8, _ = tt.shape
        seq = tt.transpose(0, 2, 3, 1, 4).reshape(b * h8 * w8, t, d)
        valid_t = mt.transpose(0, 2, 3, 1).reshape(b * h8 * w8, t)
        seq = Attention(self.heads, self.mlp_ratio, self.dtype, name="time")(seq, valid_t)
        tt = seq.reshape(b, h8, w8, t, d).transpose(0, 3, 1, 2, 4)
        # space: attention across the places of each frame
        _, _, h16, w16, _ = ss.shape
        seq = ss.reshape(b * t, h16 * w16, d)
        seq = Attention(self.heads, self.mlp_ratio, self.dtype, name="space")(
            seq, ms.reshape(b * t, h16 * w16)
        )
        ss = seq.reshape(ss.shape)
        # exchange between resolutions
        dense = functools.partial(nn.Dense, d, dtype=self.dtype)
        p_new = p + dense(name="t_to_p")(upsample(tt, 4, h2, w2))
        p_new = p_new + dense(name="s_to_p")(upsample(ss, 8, h2, w2))
        tt_new = tt + dense(name="p_to_t")(masked_pool(p, mp, 4)[0])
        tt_new = tt_new + dense(name="s_to_t")(upsample(ss, 2, h8, w8))
        ss_new = ss + dense(name="t_to_s")(masked_pool(tt, mt, 2)[0])
        return p_new * mp[..., None], tt_new * mt[..., None], ss_new * ms[..., None]


class Summarizer(nn.Module):
    """Attention pooling over time per pixel, queried by the valid period -> mu (B, H, W, D)."""

    width: int
    queries: int
    embedding_dim: int
    num_freqs: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        frames: jax.Array,
        mask: jax.Array,
        period_days: jax.Array,
        precision: jax.Array | None = None,
    ):
        d = self.width
        period = jnp.stack([jnp.zeros_like(period_days), period_days, period_days], -1)
        cond = timecode(period, self.num_freqs).reshape(period.shape[0], -1)
        q = Mlp(2 * d, d, self.dtype, name="period")(cond)  # (B, d)
        q = q[:, None, :] + self.param("queries", normal_init(0.02), (self.queries, d))  # (B, K, d)
        k = nn.Dense(d, dtype=self.dtype, name="keys")(frames)  # (B, T, H, W, d)
        v = nn.Dense(d, dtype=self.dtype, name="values")(frames)
        logits = jnp.einsum("bthwd,bkd->bhwkt", k, q) / math.sqrt(d)
        valid = mask.transpose(0, 2, 3, 1)[:, :, :, None, :] > 0  # (B, H, W, 1, T)
        logits = jnp.where(valid, logits.astype(jnp.float32), -1e9)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        pooled = jnp.einsum("bhwkt,bthwd->bhwkd", weights, v)
        pooled = pooled.reshape(*pooled.shape[:3], self.queries * d)
        h = nn.LayerNorm(dtype=self.dtype)(pooled)
        h = Mlp(2 * d, d, self.dtype, name="head")(h)
        out = nn.Dense(self.embedding_dim, dtype=jnp.float32, name="out")(h).astype(jnp.float32)
        if precision is not None:
            # The pixel's harmonic summary reaches mu through one linear map; the deep path
            # joins it through a gate that starts at 0 (ReZero), as the context paths do.
            gate = self.param("deep_gate", nn.initializers.zeros, ())
            skip = nn.Dense(self.embedding_dim, dtype=jnp.float32, name="precision")
            out = skip(precision.astype(jnp.float32)) + gate * out
        return vmf.l2_normalize(out)


class Decoder(nn.Module):
    """Implicit decoder of one source: (z, timecode, geometry) -> the frame's values."""

    source: str
    width: int
    depth: int
    num_freqs: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, inputs: Mapping[str, jax.Array]) -> jax.Array:
        s = self.source
        channels = inputs[f"{s}/x"].shape[-1]
        per_pixel = nn.Dense(self.width, dtype=self.dtype, name="z")(z)  # (B, H, W, w)
        per_frame = nn.Dense(self.width, dtype=self.dtype, name="time")(
            timecode(inputs[f"{s}/t"], self.num_freqs)
        )
        if f"{s}/geometry" in inputs:
            per_frame = per_frame + nn.Dense(self.width, dtype=self.dtype, name="geometry")(
                inputs[f"{s}/geometry"]
            )
        h = nn.gelu(per_pixel[:, None] + per_frame[:, :, None, None, :])
        for i in range(self.depth - 1):
            h = nn.gelu(nn.Dense(self.width, dtype=self.dtype, name=f"hidden{i}")(h))
        return nn.Dense(channels, dtype=jnp.float32, name="out")(h).astype(jnp.float32)


class EmbeddingModel(nn.Module):
    """The STP encoder and the per-source implicit decoders."""

    config: ml_collections.ConfigDict

    def setup(self):
        c = self.config
        dtype = jnp.dtype(c.dtype)
        self.projectors = {
            s: SourceProjector(s, c.width, c.timecode_freqs, dtype, name=f"project_{s}")
            for s in SOURCES
        }
        self.blocks = [
            STPBlock(c.width, c.heads, c.mlp_ratio, dtype, name=f"stp{i}") for i in range(c.depth)
        ]
        self.skip = [nn.Dense(c.width, dtype=dtype, name=f"skip_{n}") for n in ("p", "t", "s")]
        self.context_gates = self.param("context_gates", nn.initializers.zeros, (3,))
        self.summarizer = Summarizer(
            c.width, c.queries, c.embedding_dim, c.timecode_freqs, dtype, name="summarizer"
        )
        self.decoders = {
            s: Decoder(
                s, c.decoder_width, c.decoder_depth, c.timecode_freqs, dtype, name=f"decode_{s}"
            )
            for s in SOURCES
        }

    def encode(self, inputs: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """inputs -> (mu (B, H, W, D) unit vectors, observed (B, H, W) bool).

        `inputs["pixel_summary"]` (B, H, W, F), when given, is the per-pixel summary that
        reaches mu linearly, computed by the caller over more frames than the deep path sees
        (`model.bundle`: `summary_max_frames`); otherwise it is computed from `inputs`.

        The three stages below are the whole encoder; inference runs them on row strips of
        one chip at a time (`model.bundle`), which bounds its memory: only the context
        paths need the whole chip, and they work at L/2 and coarser.
        """
        frames, mask, pooled = self.encode_frames(inputs)
        context = self.encode_context(*pooled)
        return self.encode_pixels(inputs, frames, mask, context)

    def encode_frames(self, inputs: Mapping[str, jax.Array]):
        """inputs over rows [r0, r1) of a chip, r0 a multiple of `CONTEXT_ROWS` -> the
        per-pixel frames (B, T_all, h, W, d), their mask (B, T_all, h, W), and the masked
        pools of the frames at L/2, L/8 and L/16 as (features, mask) pairs: those rows of
        the whole chip's pools (a pool never mixes pixels across such a strip boundary)."""
        frames = jnp.concatenate([self.projectors[s](inputs) for s in SOURCES], axis=1)
        mask = jnp.concatenate([inputs[f"{s}/mask"] for s in SOURCES], axis=1).astype(frames.dtype)
        pooled = [masked_pool(frames, mask, f) for f in CONTEXT_FACTORS]
        return frames, mask, pooled

    def encode_context(self, p_pool, t_pool, s_pool):
        """The masked pools of a whole chip's frames -> the precision, time and space paths
        after the STP blocks (B, T_all, h_f, w_f, d) at L/2, L/8, L/16."""
        (p, mp), (tt, mt), (ss, ms) = p_pool, t_pool, s_pool
        for block in self.blocks:
            p, tt, ss = block(p, tt, ss, mp, mt, ms)
        return p, tt, ss

    def encode_pixels(self, inputs, frames, mask, context) -> tuple[jax.Array, jax.Array]:
        """Per-pixel read-out of rows [r0, r1) (r0 a multiple of `CONTEXT_ROWS`): `inputs`,
        `frames` and `mask` over those rows, `context` the paths' rows that cover them
        (rows r0 / f .. ceil(r1 / f) at factor f) -> (mu, observed) of those rows."""
        _, _, h, w, _ = frames.shape
        p, tt, ss = context
        # The coarse paths join the per-pixel frames through gates that start at 0 (ReZero):
        # at initialization mu depends on each pixel's own observations only, and context is
        # let in as training finds it useful. Without the gates the L/8 and L/16 paths
        # dominated and the embedding came out blocky (few-shot accuracy 0.51 at init).
        gates = self.context_gates
        if not self.config.get("context", True):  # ablation: each pixel's own frames only
            gates = jnp.zeros_like(gates)
        full = (
            frames
            + gates[0] * self.skip[0](upsample(p, 2, h, w))
            + gates[1] * self.skip[1](upsample(tt, 8, h, w))
            + gates[2] * self.skip[2](upsample(ss, 16, h, w))
        ) * mask[..., None]
        summary = inputs.get("pixel_summary")
        if summary is None:
            summary = pixel_summary(inputs, self.config)
        mu = self.summarizer(full, mask, inputs["period_days"], summary)
        observed = mask.sum(axis=1) > 0
        return mu, observed

    def decode(self, z: jax.Array, inputs: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """z (B, H, W, D) -> {source: predicted normalized values (B, T, H, W, C)}."""
        return {s: self.decoders[s](z, inputs) for s in SOURCES}

    def __call__(self, inputs: Mapping[str, jax.Array], key: jax.Array | None = None):
        """Encode, then decode a vMF sample (mu itself when `key` is None)."""
        mu, observed = self.encode(inputs)
        z = mu if key is None else vmf.sample_vmf(key, mu, self.config.kappa)
        return mu, observed, self.decode(z, inputs)


def create_model(config: ml_collections.ConfigDict) -> EmbeddingModel:
    """The model for a full config (its `model` section)."""
    return EmbeddingModel(config.model)


def count_params(params) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
