"""The real samples read into registry units (values checked against physical expectations)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_jobs.io import points, realdata
from schemas import sensors
from schemas.grid import GridWindow


@pytest.fixture(scope="module")
def worldcereal(realdata_dir):
    return realdata.read_worldcereal(realdata_dir / "worldcereal_belgium_2021" / "inputs.nc")


@pytest.fixture(scope="module")
def eolearn(realdata_dir):
    return realdata.read_eolearn(realdata_dir / "eolearn_slovenia")


def _ms(y: int, m: int, d: int = 1) -> int:
    return int(dt.datetime(y, m, d, tzinfo=dt.UTC).timestamp() * 1000)


def test_worldcereal_grid_and_times(worldcereal):
    assert worldcereal.window == GridWindow(32631, 664000.0, 5612120.0, 100, 100)
    x, y = worldcereal.window.pixel_centers()
    assert (x[0, 0], x[0, -1], y[0, 0], y[-1, 0]) == (664005, 664995, 5612115, 5611125)
    expect = [_ms(2020, 11), _ms(2020, 12)] + [_ms(2021, m) for m in range(1, 11)]
    for sid in ("sentinel2_l2a", "sentinel1", "era5_land"):
        np.testing.assert_array_equal(worldcereal[sid].times_ms, expect)
        assert worldcereal[sid].values.shape[1:3] == (100, 100)
    assert worldcereal["cop_dem"].times_ms.tolist() == [sensors.STATIC_TIME_MS]


def test_worldcereal_sentinel2(worldcereal):
    sf = worldcereal["sentinel2_l2a"]
    assert np.isnan(sf.band("B8A")).all()
    # December and January composites are all no data (65535); the rest is complete.
    np.testing.assert_array_equal(sf.valid.mean(axis=(1, 2)), [1, 0, 0] + [1] * 9)
    assert np.isnan(sf.values[1, ..., 0]).all()
    b04 = sf.band("B04")[sf.valid]
    assert 0.04 < np.median(b04) < 0.10  # red reflectance of farmland: 0.0677
    b08 = sf.band("B08")[sf.valid]
    assert 0.2 < np.median(b08) < 0.4  # near infrared of vegetation: 0.29
    assert np.min(b04) >= 0.0  # DN / 10000, no L2A offset (DN 0 occurs)


def test_worldcereal_sentinel1_db(worldcereal):
    vv = worldcereal["sentinel1"].band("VV")
    vh = worldcereal["sentinel1"].band("VH")
    assert -14 <= np.median(vv) <= -6  # -9.9 dB
    assert -22 <= np.median(vh) <= -13  # -16.6 dB
    assert np.median(vv - vh) == pytest.approx(6.7, abs=1.5)  # VV above VH on farmland
    assert worldcereal["sentinel1"].valid.all()


def test_worldcereal_era5_units(worldcereal):
    sf = worldcereal["era5_land"]
    temp = sf.band("temperature_2m")[:, 0, 0]
    assert temp.min() >= 260 and temp.max() <= 305
    assert np.argmin(temp) == 2 and np.argmax(temp) == 7  # January coldest, June warmest
    np.testing.assert_allclose(temp[[2, 7]], [275.54, 291.52], atol=1e-3)
    # Monthly totals in 0.01 mm -> m/day: July 2021 (the floods), 160.72 mm over 31 days.
    precip = sf.band("total_precipitation")[:, 0, 0]
    np.testing.assert_allclose(precip[8], 160.72 / 31 / 1000, rtol=1e-5)
    year_mm = np.sum(precip * 1000 * [30, 31, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31])
    assert 800 < year_mm < 1400  # 1188 mm: a wet year in Belgium


def test_worldcereal_dem(worldcereal):
    sf = worldcereal["cop_dem"]
    assert sf.values.shape == (1, 100, 100, 2)
    elev, slope = sf.band("elevation")[0], sf.band("slope")[0]
    assert 140 <= elev.min() and elev.max() <= 175
    assert 0 <= slope.min() and slope.max() <= 10


def test_worldcereal_point_table(worldcereal, tmp_path):
    table = realdata.observations_to_point_table(worldcereal, sample=50, seed=0)
    assert set(table.column("source").to_pylist()) == set(worldcereal.sources)
    path = tmp_path / "wc.parquet"
    pq.write_table(table, path)
    back = points.read_point_table(path)
    assert len(back.point_ids) == 50
    # 10 valid S2 months per point, 12 S1, 12 ERA5, one DEM.
    counts = table.group_by("source").aggregate([("point_id", "count")]).to_pylist()
    assert {r["source"]: r["point_id_count"] for r in counts} == {
        "sentinel2_l2a": 500, "sentinel1": 600, "era5_land": 600, "cop_dem": 50,
    }  # fmt: skip
    assert table.schema.field("time").type == pa.timestamp("ms", tz="UTC")
    np.testing.assert_allclose(np.nanmedian(back["sentinel1"].band("VV")), -9.9, atol=1.0)


def test_eolearn_window_and_series(eolearn):
    w = eolearn.window
    assert (w.epsg, w.height, w.width, w.pixel_size) == (32633, 101, 100, 10.0)
    assert w.x0 == pytest.approx(465181.05, abs=0.01)
    assert w.y0 == pytest.approx(5080254.63, abs=0.01)
    assert eolearn.ndvi.shape == (68, 101, 100) and eolearn.ndvi.dtype == np.float32
    assert eolearn.ndvi_times_ms[0] == _ms(2015, 7, 11) + (10 * 3600 + 8) * 1000
    assert np.all(np.diff(eolearn.ndvi_times_ms) > 0)
    assert eolearn.ndvi_valid.shape == (68, 101, 100) and 0.3 < eolearn.ndvi_valid.mean() < 0.9
    ndvi = eolearn.ndvi[eolearn.ndvi_valid]
    assert 0.5 < np.median(ndvi) < 0.9  # mostly forest


def test_eolearn_observations(eolearn):
    obs = eolearn.observations
    s2 = obs["sentinel2_l2a"]
    assert s2.values.shape == (5, 101, 100, 10)
    # The scenes are the first five dates, though not stored in date order.
    np.testing.assert_array_equal(s2.times_ms, eolearn.ndvi_times_ms[:5])
    np.testing.assert_array_equal(s2.valid, eolearn.ndvi_valid[:5])
    # Bands and dates map right: NDVI from B04/B08 is the patch's NDVI, frame by frame.
    b4, b8 = s2.band("B04"), s2.band("B08")
    np.testing.assert_allclose((b8 - b4) / (b8 + b4), eolearn.ndvi[:5], atol=1e-5)
    dem = obs["cop_dem"]
    assert 660 <= np.min(dem.band("elevation")) and np.max(dem.band("elevation")) <= 805
    assert 0 <= np.nanmin(dem.band("slope")) and np.nanmax(dem.band("slope")) < 60


def test_eolearn_lulc(eolearn):
    assert eolearn.lulc.shape == (101, 100) and eolearn.lulc.dtype == np.uint16
    counts = dict(zip(*np.unique(eolearn.lulc, return_counts=True), strict=True))
    assert counts[2] == pytest.approx(7600, rel=0.1)  # forest
    assert counts[3] == pytest.approx(1800, rel=0.1)  # grassland
    assert counts[4] == pytest.approx(360, rel=0.1)  # shrubland
    assert eolearn.lulc_classes[2] == "forest" and eolearn.lulc_classes[3] == "grassland"
