"""The point observation table: schema, round trip, errors."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_jobs.io import points
from schemas import sensors
from schemas.grid import GridWindow
from schemas.observations import Observations, SourceFrames

T1 = 1_620_000_000_000
T2 = T1 + 5 * 86_400_000


def _point_obs() -> Observations:
    """Three points; S2 at two times (one point cloudy at T2, one band NaN), DEM static."""
    s2 = sensors.get_sensor("sentinel2_l2a")
    v = np.arange(2 * 3 * 10, dtype=np.float32).reshape(2, 3, 1, 10) / 100
    v[0, 1, 0, s2.band_index("B8A")] = np.nan  # a missing band on a valid row
    valid = np.ones((2, 3, 1), bool)
    valid[1, 2, 0] = False
    v[1, 2] = np.nan
    dem = np.array([[[[100.0, 2.5]], [[120.0, np.nan]], [[90.0, 0.0]]]], np.float32)
    return Observations(
        sources={
            "sentinel2_l2a": SourceFrames("sentinel2_l2a", v, valid, [T1, T2]),
            "cop_dem": SourceFrames("cop_dem", dem, np.ones((1, 3, 1), bool), [0]),
        },
        point_ids=np.array(["a", "b", "c"], object),
        lon=np.array([4.1, 4.2, 4.3]),
        lat=np.array([50.1, 50.2, 50.3]),
    )


def test_schema():
    schema = points.point_table_schema()
    assert schema.names[:5] == ["point_id", "lon", "lat", "source", "time"]
    assert schema.field("time").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("lon").type == pa.float64()
    assert schema.field("B02").type == pa.float32()
    assert "SR_B7" in schema.names and "total_precipitation" in schema.names
    assert points.band_columns(["cop_dem"]) == ("elevation", "slope")


def test_round_trip(tmp_path):
    obs = _point_obs()
    path = tmp_path / "points.parquet"
    points.write_point_table(obs, path)
    table = pq.read_table(path)
    # 3 + 2 S2 rows (one invalid pair has no row) + 3 DEM rows.
    assert table.num_rows == 8
    assert table.schema.field("time").type == pa.timestamp("ms", tz="UTC")
    dem_rows = table.filter(pa.compute.equal(table["source"], "cop_dem"))
    assert dem_rows["time"].null_count == 3

    back = points.read_point_table(path)
    assert list(back.point_ids) == ["a", "b", "c"]
    np.testing.assert_array_equal(back.lon, obs.lon)
    np.testing.assert_array_equal(back.lat, obs.lat)
    for sid in ("sentinel2_l2a", "cop_dem"):
        a, b = obs[sid], back[sid]
        np.testing.assert_array_equal(b.times_ms, a.times_ms)
        np.testing.assert_array_equal(b.valid, a.valid)
        np.testing.assert_array_equal(b.masked_values(), a.masked_values())  # NaNs too
    assert np.isnan(back["sentinel2_l2a"].band("B8A")[0, 1, 0])
    assert back["cop_dem"].times_ms[0] == sensors.STATIC_TIME_MS


def test_time_filter_keeps_points_and_static(tmp_path):
    path = tmp_path / "p.parquet"
    points.write_point_table(_point_obs(), path)
    back = points.read_point_table(path, start_ms=T2, end_ms=T2 + 1)
    np.testing.assert_array_equal(back["sentinel2_l2a"].times_ms, [T2])
    assert back["sentinel2_l2a"].values.shape == (1, 3, 1, 10)
    assert back["cop_dem"].num_frames == 1


def _table(**over) -> pa.Table:
    cols = {
        "point_id": pa.array(["p1", "p1", "p2"]),
        "lon": pa.array([4.0, 4.0, 5.0]),
        "lat": pa.array([50.0, 50.0, 51.0]),
        "source": pa.array(["sentinel1", "sentinel1", "sentinel1"]),
        "time": pa.array(
            [dt.datetime(2021, 1, 1), dt.datetime(2021, 1, 2), dt.datetime(2021, 1, 1)],
            type=pa.timestamp("us"),  # naive, microseconds: taken as UTC, brought to ms
        ),
        "VV": pa.array([-10.0, -11.0, np.nan]),
        "VH": pa.array([-17.0, None, np.nan], type=pa.float64()),
    }
    cols.update(over)
    return pa.table({k: v for k, v in cols.items() if v is not None})


def test_user_table_types_and_validity(tmp_path):
    path = tmp_path / "u.parquet"
    pq.write_table(_table(), path)
    obs = points.read_point_table(path)
    sf = obs["sentinel1"]
    t0 = int(dt.datetime(2021, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    np.testing.assert_array_equal(sf.times_ms, [t0, t0 + 86_400_000])
    np.testing.assert_array_equal(sf.valid[..., 0], [[True, False], [True, False]])
    np.testing.assert_allclose(sf.band("VV")[:, 0, 0], [-10.0, -11.0])
    assert np.isnan(sf.band("VH")[1, 0, 0])  # null -> NaN


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "nolat.parquet"
    pq.write_table(_table(lat=None), path)
    with pytest.raises(ValueError, match=r"nolat\.parquet.*missing column 'lat'"):
        points.read_point_table(path)


def test_bad_type_unknown_source_unknown_column(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(_table(time=pa.array(["2021-01-01"] * 3)), path)
    with pytest.raises(ValueError, match=r"bad\.parquet.*'time' has type string"):
        points.read_point_table(path)
    pq.write_table(_table(source=pa.array(["sentinel1", "sentinel1", "modis"])), path)
    with pytest.raises(ValueError, match=r"bad\.parquet.*unknown source ids \['modis'\]"):
        points.read_point_table(path)
    pq.write_table(_table(crop=pa.array([1, 2, 3])), path)
    with pytest.warns(UserWarning, match=r"bad\.parquet.*\['crop'\]"):
        obs = points.read_point_table(path)
    assert obs["sentinel1"].num_frames == 2
    with pytest.raises(ValueError, match="crop"):
        points.read_point_table(path, strict=True)


def test_duplicates_and_null_time(tmp_path):
    path = tmp_path / "dup.parquet"
    t = dt.datetime(2021, 1, 1)
    pq.write_table(_table(time=pa.array([t, t, t], type=pa.timestamp("ms"))), path)
    with pytest.raises(ValueError, match="duplicate rows.*'p1'"):
        points.read_point_table(path)
    pq.write_table(_table(time=pa.array([t, None, t], type=pa.timestamp("ms"))), path)
    with pytest.raises(ValueError, match="'time' is null for 'sentinel1'"):
        points.read_point_table(path)


def test_window_to_point_table():
    w = GridWindow(32631, 664000.0, 5612120.0, 4, 3)
    v = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    valid = np.ones((2, 3, 4), bool)
    valid[0, 0, 0] = False
    obs = Observations({"sentinel1": SourceFrames("sentinel1", v, valid, [T1, T2])}, window=w)
    table = points.observations_to_point_table(obs)
    assert table.num_rows == 2 * 12 - 1
    first = table.slice(0, 1).to_pylist()[0]
    assert first["point_id"] == "32631_664015_5612115"  # pixel (0, 1): (0, 0) is invalid
    assert first["VV"] == v[0, 0, 1, 0] and first["VH"] == v[0, 0, 1, 1]
    sampled = points.window_to_points(obs, sample=5, seed=1)
    assert len(sampled.point_ids) == 5 and sampled["sentinel1"].values.shape == (2, 5, 1, 2)
