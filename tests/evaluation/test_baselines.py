"""Designed baselines: hand-computed percentiles and monthly medians, composite, PCA, xy."""

import numpy as np
import pytest
from toy_data import ms, toy_dataset, toy_window_obs

from evaluation import baselines, datasets
from schemas.observations import Observations, SourceFrames


def test_designed_features_hand_computed():
    # Two pixels, five frames: Jan 5, Jan 20, Feb 10, Jun 1, Jun 30 of 2023.
    times = np.array([ms(2023, 1, 5), ms(2023, 1, 20), ms(2023, 2, 10), ms(2023, 6, 1)])
    times = np.append(times, ms(2023, 6, 30))
    s2 = np.full((5, 2, 1, 10), np.nan, np.float32)
    s2[:, 0, 0, 0] = [0.1, 0.3, 0.2, 0.5, 0.9]  # B02 of pixel 0
    s2[:, 1, 0, 0] = [0.4, 0.4, 0.4, 0.4, 0.4]
    valid = np.ones((5, 2, 1), bool)
    valid[4, 1, 0] = False  # a cloudy frame of pixel 1 (its value must be ignored)
    s2[4, 1, 0, 0] = 99.0
    dem = np.array([[[[250.0, 3.0]], [[260.0, 4.0]]]], np.float32)
    obs = Observations(
        {
            "sentinel2_l2a": SourceFrames("sentinel2_l2a", s2, valid, times),
            "cop_dem": SourceFrames("cop_dem", dem, np.ones((1, 2, 1), bool), [0]),
        },
        point_ids=np.array(["a", "b"]),
        lon=np.array([14.5, 14.6]),
        lat=np.array([45.8, 45.9]),
    )
    feats = baselines.designed_features(obs)
    names = baselines.designed_feature_names(obs)
    assert feats.shape == (2, 10 * 15 + 2) and len(names) == feats.shape[1]
    b02 = feats[:, :15]
    assert names[:3] == ["sentinel2_l2a.B02.p10", "sentinel2_l2a.B02.p50", "sentinel2_l2a.B02.p90"]
    # Pixel 0 sorted: 0.1 0.2 0.3 0.5 0.9; p10 at rank 0.4 -> 0.14; p50 0.3; p90 at 3.6 -> 0.74.
    np.testing.assert_allclose(b02[0, :3], [0.14, 0.3, 0.74], rtol=1e-5)
    # Monthly medians: Jan (0.1, 0.3) -> 0.2, Feb 0.2, Jun (0.5, 0.9) -> 0.7, others NaN.
    monthly = b02[0, 3:]
    np.testing.assert_allclose(monthly[[0, 1, 5]], [0.2, 0.2, 0.7], rtol=1e-5)
    assert np.isnan(np.delete(monthly, [0, 1, 5])).all()
    np.testing.assert_allclose(b02[1, :3], [0.4, 0.4, 0.4])
    assert b02[1, 3 + 5] == pytest.approx(0.4)  # June: the cloudy 99 is ignored
    assert np.isnan(feats[:, 15:150]).all()  # the other bands were never observed
    assert names[-2:] == ["cop_dem.elevation", "cop_dem.slope"]
    np.testing.assert_allclose(feats[:, -2:], [[250.0, 3.0], [260.0, 4.0]])
    # The composite: pixel 0 median 0.3, pixel 1 median of the four clear 0.4.
    comp = baselines.median_composite(obs)
    assert comp.shape == (2, 10)
    np.testing.assert_allclose(comp[:, 0], [0.3, 0.4], rtol=1e-6)


def test_designed_features_extra_series_and_window_order():
    label_map = np.array([[1, 2, 3], [3, 2, 1]])
    obs = toy_window_obs(label_map)
    times = np.array([ms(2016, 3, 1), ms(2016, 3, 20), ms(2017, 3, 5)])
    ndvi = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]] * 3, np.float32) * [[1], [2], [3]]
    extra = {"ndvi": datasets.PixelSeries(ndvi, times)}
    feats = baselines.designed_features(obs, extra)
    names = baselines.designed_feature_names(obs, extra)
    assert feats.shape == (6, len(names)) and names[-15] == "ndvi.p10"
    # March across both years: median of (v, 2v, 3v) = 2v, row-major pixel order.
    np.testing.assert_allclose(feats[:, names.index("ndvi.m03")], 2 * ndvi[0], rtol=1e-6)
    # A point set of selected pixels gives the same rows as the window.
    pts = baselines.select_pixels(obs, np.array([4, 0]))
    np.testing.assert_array_equal(
        baselines.designed_features(pts), baselines.designed_features(obs)[[4, 0]]
    )


def test_pca_and_xy_features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 200))
    x[:, 3] = np.nan
    p = baselines.pca_features(x, 64)
    assert p.shape == (100, 64) and np.isfinite(p).all()
    assert baselines.pca_features(x[:10], 64).shape == (10, 10)
    ds = toy_dataset(16, 16)
    feats = baselines.baseline_features(ds.observations, ds.pixel_index)
    lon, lat = baselines.pixel_lonlat(ds.observations, ds.pixel_index)
    np.testing.assert_allclose(feats["xy"], np.stack([lon, lat], 1).astype(np.float32))
    assert 14.0 < lon.min() and lon.max() < 14.6 and 45.8 < lat.min() and lat.max() < 45.9
