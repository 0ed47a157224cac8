"""The in-memory observation container."""

import numpy as np
import pytest

from schemas.observations import Observations, SourceFrames


def _frames(t=3, h=2, w=2):
    vals = np.arange(t * h * w * 2, dtype=np.float32).reshape(t, h, w, 2)
    return SourceFrames(
        "sentinel1",
        vals,
        np.ones((t, h, w), bool),
        np.array([10, 20, 30]),
        {"incidence_angle": np.array([30.0, 35.0, 40.0])},
    )


def test_defaults_and_validation():
    f = _frames()
    assert f.band_names == ("VV", "VH")
    assert np.isnan(f.geometry["orbit_direction"]).all()  # missing geometry -> NaN
    with pytest.raises(ValueError, match="valid mask shape"):
        SourceFrames("sentinel1", np.zeros((1, 2, 2, 2)), np.ones((1, 3, 2), bool), [0])
    with pytest.raises(ValueError, match="2 channels"):
        SourceFrames(
            "sentinel1", np.zeros((1, 2, 2, 2)), np.ones((1, 2, 2), bool), [0], band_names=("VV",)
        )
    with pytest.raises(KeyError, match="HH"):
        SourceFrames(
            "sentinel1", np.zeros((1, 1, 1, 1)), np.ones((1, 1, 1), bool), [0], band_names=("HH",)
        )


def test_select_time_and_crop():
    f = _frames()
    s = f.select_time(15, 30)
    assert s.times_ms.tolist() == [20]
    assert s.values[0, 0, 0].tolist() == [8.0, 9.0]
    assert s.geometry["incidence_angle"].tolist() == [35.0]
    c = f.crop(slice(1, 2), slice(0, 1))
    assert c.values.shape == (3, 1, 1, 2)
    assert f.band("VH")[0, 0, 1] == 3.0


def test_registry_band_padding_and_masking():
    f = SourceFrames(
        "sentinel2_l2a",
        np.full((1, 1, 1, 2), 0.5, np.float32),
        np.zeros((1, 1, 1), bool),
        [0],
        band_names=("B04", "B02"),
    )
    full = f.with_registry_bands()
    assert full.values.shape == (1, 1, 1, 10)
    assert full.band("B04")[0, 0, 0] == 0.5 and np.isnan(full.band("B8A")[0, 0, 0])
    assert np.isnan(f.masked_values()).all()


def test_static_source_select_time_keeps_frame():
    dem = SourceFrames("cop_dem", np.zeros((1, 2, 2, 2)), np.ones((1, 2, 2), bool), [0])
    obs = Observations({"cop_dem": dem, "sentinel1": _frames()})
    sub = obs.select_time(25, 100)
    assert sub["cop_dem"].num_frames == 1 and sub["sentinel1"].num_frames == 1
    with pytest.raises(KeyError, match="landsat"):
        obs["landsat_c2l2"]


def test_without_drops_sources_and_keeps_the_rest():
    dem = SourceFrames("cop_dem", np.zeros((1, 2, 2, 2)), np.ones((1, 2, 2), bool), [0])
    s1 = _frames()
    obs = Observations({"cop_dem": dem, "sentinel1": s1}, errors=["x: y"])
    sub = obs.without(["cop_dem", "landsat_c2l2"])  # an absent source is ignored
    assert list(sub.sources) == ["sentinel1"] and sub["sentinel1"] is s1
    assert sub.errors == ["x: y"]
    assert list(obs.sources) == ["cop_dem", "sentinel1"]  # the original is untouched
    assert list(obs.without([]).sources) == ["cop_dem", "sentinel1"]
