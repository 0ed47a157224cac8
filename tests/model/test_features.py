"""model/features.py: normalization, frame subsets and pooled statistics on hand values."""

from __future__ import annotations

import numpy as np
import pytest

from model import features
from schemas import examples, sensors

DAY = 86_400_000


def _batch(p=2, t=3):
    layout = examples.feature_layout(patch_size=p, max_frames=t)
    out = {}
    for name in features.example_keys():
        f = layout[name]
        dtype = {"float32": np.float32, "int64": np.int64, "bool": bool}[f.dtype]
        out[name] = np.zeros((1, *f.shape), dtype)
    out["valid_period"][0] = [10 * DAY, 40 * DAY]
    return out


def test_normalizer_floors_std_and_fills_missing_bands():
    stats = {"sentinel1": {"VV": {"mean": -10.0, "std": 2.0}, "VH": {"mean": -17.0, "std": 0.0}}}
    norm = features.normalizer(stats, std_floor=0.01)
    mean, std = norm["sentinel1"]
    assert mean.tolist() == [-10.0, -17.0]
    assert std.tolist() == pytest.approx([2.0, 0.01])
    mean, std = norm["sentinel2_l2a"]
    assert np.all(mean == 0) and np.all(std == 1)


def test_to_model_inputs_normalizes_masks_and_times():
    b = _batch()
    s = "sentinel1"
    b[f"{s}/values"][0, 0, ..., 0] = -6.0  # VV
    b[f"{s}/valid"][0, 0] = [[True, False], [True, True]]
    b[f"{s}/frame_valid"][0, :2] = True
    b[f"{s}/band_valid"][0, :2] = True
    b[f"{s}/times_ms"][0, :2] = [15 * DAY, 25 * DAY]
    norm = features.normalizer({s: {"VV": {"mean": -10.0, "std": 2.0}}})
    x = features.to_model_inputs(b, norm, max_frames=3)
    assert x[f"{s}/x"].shape == (1, 3, 2, 2, 2)
    # (-6 - -10) / 2 = 2 where usable, 0 where the pixel is invalid
    assert x[f"{s}/x"][0, 0, :, :, 0].tolist() == [[2.0, 0.0], [2.0, 2.0]]
    assert x[f"{s}/mask"][0, 0].tolist() == [[1, 0], [1, 1]]
    assert x[f"{s}/mask"][0, 2].sum() == 0  # padding frame
    assert x[f"{s}/t"][0].tolist() == [5.0, 15.0, 0.0]
    assert x["period_days"].tolist() == [30.0]
    assert x["cop_dem/t"].shape == (1, 1)


def test_frame_subset_spreads_valid_frames_and_pads():
    b = _batch(p=1, t=8)
    s = "sentinel2_l2a"
    b[f"{s}/frame_valid"][0, :7] = True
    b[f"{s}/times_ms"][0, :7] = np.arange(7) * DAY + 10 * DAY
    x = features.to_model_inputs(b, features.normalizer({}), max_frames=4)
    # 7 valid frames -> 4 evenly spread: indices 0, 2, 4, 6 -> days 0, 2, 4, 6
    assert x[f"{s}/t"][0].tolist() == [0.0, 2.0, 4.0, 6.0]
    x = features.to_model_inputs(_batch(p=1, t=2), features.normalizer({}), max_frames=4)
    assert x[f"{s}/t"].shape == (1, 4) and x[f"{s}/band_mask"].sum() == 0


def test_pool_stats_weights_by_count():
    a = {"sentinel1": {"VV": {"mean": 0.0, "std": 1.0, "count": 1}}}
    b = {"sentinel1": {"VV": {"mean": 2.0, "std": 1.0, "count": 3}}}
    pooled = features.pool_stats([a, b])["sentinel1"]["VV"]
    # mean 1.5; var = (1*(1 + 2.25) + 3*(1 + 0.25)) / 4 = 1.75
    assert pooled["mean"] == pytest.approx(1.5)
    assert pooled["std"] == pytest.approx(1.75**0.5)
    assert pooled["count"] == 4


def test_empty_inputs_have_every_source():
    x = features.empty_inputs(2, 3, 5)
    for s in sensors.SOURCE_IDS:
        t = 1 if sensors.get_sensor(s).is_static else 5
        assert x[f"{s}/x"].shape[:4] == (2, t, 3, 3)
        assert x[f"{s}/mask"].sum() == 0


def test_drop_padding_frames_keeps_frames_in_use_rounded_up():
    x = features.empty_inputs(3, 1, 24)
    x["sentinel2_l2a/mask"][1, 9] = 1  # the last frame any point uses: 10 -> 12 kept
    x["sentinel2_l2a/t"][1, 9] = 50.0
    x["era5_land/mask"][:, :12] = 1  # monthly: 12 frames in use of 24
    out = features.drop_padding_frames(x)
    assert out["sentinel2_l2a/x"].shape == (3, 12, 1, 1, 10)
    assert out["sentinel2_l2a/band_mask"].shape == (3, 12, 10)
    assert out["sentinel2_l2a/geometry"].shape[:2] == (3, 12)
    assert out["sentinel2_l2a/t"][1, 9] == 50.0 and out["era5_land/mask"].shape == (3, 12, 1, 1)
    # Nothing valid: `multiple` frames left, never one (one frame would read as static).
    assert out["sentinel1/mask"].shape == (3, 4, 1, 1)
    assert out["cop_dem/mask"].shape == (3, 1, 1, 1) and out["period_days"] is x["period_days"]


def test_trim_padding_frames_keeps_used_frames_rounded_up_as_views():
    b = _batch(p=2, t=40)
    s2, s1 = "sentinel2_l2a", "sentinel1"
    b[f"{s2}/frame_valid"][0, :17] = True  # 17 frames -> 32 kept (multiple 16)
    b[f"{s2}/values"][0, :17] = 1.5
    b[f"{s1}/frame_valid"][0, :3] = True  # 3 -> 16
    out = features.trim_padding_frames(b, 16)
    assert out[f"{s2}/values"].shape == (1, 32, 2, 2, 10)
    assert out[f"{s2}/times_ms"].shape == out[f"{s2}/frame_valid"].shape == (1, 32)
    assert out[f"{s2}/band_valid"].shape == (1, 32, 10)
    assert out[f"{s1}/valid"].shape == (1, 16, 2, 2)
    assert out["era5_land/values"].shape[1] == 16  # no frame at all: `multiple`, never one
    assert out["cop_dem/values"].shape[1] == 1 and out["valid_period"] is b["valid_period"]
    assert np.shares_memory(out[f"{s2}/values"], b[f"{s2}/values"])  # a view
    # pad=False keeps each source at its own count; pad=True pads back to max_frames
    x = features.to_model_inputs(out, features.normalizer({}), max_frames=40, pad=False)
    assert x[f"{s2}/x"].shape[1] == 32 and x[f"{s1}/x"].shape[1] == 16
    assert x["cop_dem/x"].shape[1] == 1
    full = features.to_model_inputs(b, features.normalizer({}), max_frames=40)
    np.testing.assert_array_equal(x[f"{s2}/x"], full[f"{s2}/x"][:, :32])
    assert not full[f"{s2}/x"][:, 32:].any()  # what was left out is padding: zeros
    padded = features.to_model_inputs(out, features.normalizer({}), max_frames=40)
    assert padded[f"{s2}/x"].shape[1] == 40 and padded[f"{s1}/x"].shape[1] == 40


def test_host_quantile_summary_equals_the_model_s():
    """features.quantile_summary (numpy, inference) gives modules.quantile_summary's numbers:
    frames invalid at some pixels, padding frames, a band missing in a frame, a pixel with no
    valid frame, a source with none at all, ties and the DEM (static: no quantiles)."""
    from model import modules

    rng = np.random.default_rng(3)
    x = features.empty_inputs(2, 5, 12)
    for s in sensors.SOURCE_IDS:
        xs = x[f"{s}/x"]
        xs[:] = np.round(rng.normal(size=xs.shape), 1).astype(np.float32)  # ties
        m = (rng.random(x[f"{s}/mask"].shape) > 0.4).astype(np.float32)
        if m.shape[1] > 1:
            m[:, -3:] = 0  # padding frames
        x[f"{s}/mask"] = m
        x[f"{s}/band_mask"][:] = 1.0
    x["sentinel2_l2a/band_mask"][0, 2, 4] = 0.0  # a band missing in one frame
    x["landsat_c2l2/mask"][1, :, 2, 3] = 0.0  # a pixel without a valid frame
    x["sentinel1/mask"][0] = 0.0  # a source with no valid frame in one example
    qs = (0.1, 0.5, 0.9)
    want = np.asarray(modules.quantile_summary(x, qs))
    got = features.quantile_summary(x, qs)
    assert got.shape == want.shape == (2, 5, 5, 3 * (10 + 2 + 6 + 2))
    assert got.dtype == np.float32
    # the same float32 steps; the interpolation fused as XLA fuses it (bit-equal where
    # measured; one rounding of slack for a CPU whose XLA does not fuse it)
    np.testing.assert_allclose(got, want, rtol=2e-7, atol=1e-7)
    o = 10 * 3 + 2 * 3  # landsat's block
    assert not got[1, 2, 3, o : o + 18].any()
    assert not got[0, ..., 10 * 3 : 10 * 3 + 6].any()  # sentinel1 of example 0
    # hand check: one pixel's median of Sentinel-2's first band over its valid frames
    valid = x["sentinel2_l2a/mask"][1, :, 0, 0] > 0
    assert got[1, 0, 0, 1] == np.float32(np.median(x["sentinel2_l2a/x"][1, valid, 0, 0, 0]))
