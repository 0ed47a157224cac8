"""presto's fuel moisture set: step times, unit conversions on hand-picked rows, the point
table round trip and the data set the evaluation probes."""

import datetime as dt

import numpy as np
import pytest

from beam_jobs.io import realdata
from evaluation import datasets


def _day(ms) -> str:
    return str(np.datetime64(int(ms), "ms").astype("datetime64[D]"))


def test_step_times_by_hand():
    months = np.array([[3, 4, 4], [10, 11, 0], [0, 0, 2], [3, 4, 4]])
    t = realdata.fuel_moisture_step_times(months, 2021)
    # April 1 is the only start whose +30 and +60 days land in May (May 1, May 31).
    assert [_day(v) for v in t[0]] == ["2021-04-01", "2021-05-01", "2021-05-31"]
    assert (t[3] == t[0]).all()
    # Nov -> Dec -> Jan: the January step is folded into the same year (day of year kept).
    assert [_day(v) for v in t[1]] == ["2021-11-16", "2021-12-16", "2021-01-15"]
    # Jan, Jan, Mar: only Jan 1 (+30 = Jan 31, +60 = Mar 2 in a non-leap year).
    assert [_day(v) for v in t[2]] == ["2021-01-01", "2021-01-31", "2021-03-02"]
    with pytest.raises(ValueError, match=r"months \[0 5 6\]"):
        realdata.fuel_moisture_step_times(np.array([[0, 5, 6]]))


@pytest.fixture(scope="module")
def sample(realdata_dir):
    return realdata.read_fuel_moisture(realdata_dir / "presto_fuel_moisture")


def _at(sample, sid, row, step):
    sf = sample.observations[sid]
    t = list(sf.times_ms).index(sample.step_times_ms[row, step])
    return sf.values[t, row, 0], sf.valid[t, row, 0]


def test_units_on_hand_picked_rows(sample):
    obs = sample.observations
    assert obs.point_ids[0] == "fm0000" and len(obs.point_ids) == 2313
    assert (obs.lat[0], obs.lon[0]) == pytest.approx((43.748628, -110.62335))
    assert sample.target[0] == 161.5 and sample.is_test.sum() == 735
    # Row 0, step 0 in the file: VV -15.061701 dB, B04 930, B12 1850, t2m 274.096207 K,
    # precipitation 0.00425 m/day, elevation 2107 m, slope 1.854334 deg.
    s2, ok = _at(sample, "sentinel2_l2a", 0, 0)
    names = obs["sentinel2_l2a"].band_names
    assert ok and "B09" not in names
    assert s2[names.index("B04")] == pytest.approx(0.0930)
    assert s2[names.index("B12")] == pytest.approx(0.1850)
    s1, _ = _at(sample, "sentinel1", 0, 0)
    assert s1 == pytest.approx([-15.061701, -23.776629])
    era, _ = _at(sample, "era5_land", 0, 0)
    assert era == pytest.approx([274.096207, 0.00425], rel=1e-4)
    dem = obs["cop_dem"]
    assert dem.values[0, 0, 0] == pytest.approx([2107.0, 1.854334])
    assert dem.times_ms.tolist() == [0]
    # Row 791, step 1: VV and VH at the -49.94 dB floor, below the registry's range: missing.
    s1, ok = _at(sample, "sentinel1", 791, 1)
    assert np.isnan(s1).all() and not ok
    # Each point is valid on exactly its three steps.
    assert (obs["sentinel2_l2a"].valid.sum(axis=0) == 3).all()
    assert _day(sample.step_times_ms[0, 0]).startswith("2021-04")


def test_dataset_goes_through_the_point_table(realdata_dir, tmp_path):
    ds = datasets.load_dataset(
        "fuel_moisture", cache_dir=tmp_path, data_dir=realdata_dir / "presto_fuel_moisture"
    )
    assert ds.is_regression and ds.name == "fuel_moisture"
    assert (tmp_path / "fuel_moisture_points_2021.parquet").exists()
    obs = ds.observations
    assert obs.point_ids[ds.pixel_index[0]] == "fm0000"
    assert obs.point_ids[ds.pixel_index[791]] == "fm0791"
    s2 = obs["sentinel2_l2a"]
    t = list(s2.times_ms).index(int(dt.datetime(2021, 4, 1, tzinfo=dt.UTC).timestamp() * 1000))
    assert s2.band("B04")[t, ds.pixel_index[0], 0] == pytest.approx(0.0930)
    # raw_series: 3 steps x (10 S2 + 2 S1 + 2 ERA5), then elevation and slope.
    raw = ds.extra_features["raw_series"]
    assert raw.shape == (2313, 3 * 14 + 2)
    assert raw[0, 2] == pytest.approx(0.0930)  # step 0: B02, B03, B04 ...
    assert raw[0, 10:14] == pytest.approx([-15.061701, -23.776629, 274.096207, 0.00425], rel=1e-4)
    assert raw[0, -2:] == pytest.approx([2107.0, 1.854334])
    assert raw[0, 14 + 2] == pytest.approx(0.0944)  # step 1's B04
    assert ds.info["sites"]["train"] > 0 and ds.info["sites"]["test"] > 0
    with pytest.raises(ValueError, match="takes no argument but :val"):
        datasets.load_dataset("fuel_moisture:x")


def test_validation_split_holds_out_training_sites_and_never_reads_a_test_site(
    realdata_dir, tmp_path
):
    full = datasets.load_dataset(
        "fuel_moisture", cache_dir=tmp_path, data_dir=realdata_dir / "presto_fuel_moisture"
    )
    val = datasets.load_dataset(
        "fuel_moisture:val", cache_dir=tmp_path, data_dir=realdata_dir / "presto_fuel_moisture"
    )
    sample = realdata.read_fuel_moisture(realdata_dir / "presto_fuel_moisture")
    assert val.name == "fuel_moisture:val" and val.is_regression
    # the training pool of the full set, nothing else: its rows, targets and raw features
    train = ~full.is_test
    assert len(val.pixel_index) == int(train.sum()) == 1578
    np.testing.assert_array_equal(val.pixel_index, full.pixel_index[train])
    np.testing.assert_array_equal(val.targets, full.targets[train])
    np.testing.assert_array_equal(
        val.extra_features["raw_series"], full.extra_features["raw_series"][train]
    )
    # split by site: no site on both sides; about FUEL_VAL_FRACTION of the sites held out
    site = sample.site[train]
    assert not set(site[val.is_test]) & set(site[~val.is_test])
    n_val, n_train = val.info["sites"]["test"], val.info["sites"]["train"]
    assert n_val + n_train == full.info["sites"]["train"]
    assert 0.15 < n_val / (n_val + n_train) < 0.45
    # seeded: another seed holds out other sites, the same seed the same ones
    again = datasets.fuel_validation_sites(site, 0)
    np.testing.assert_array_equal(again, val.is_test)
    assert (datasets.fuel_validation_sites(site, 1) != again).any()
