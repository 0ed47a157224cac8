"""Point tables are checked for units and coordinates (issue 27, case 4): a band handed over in
the wrong unit or a latitude of 200 is a one-line error naming the band or the column and
row, before any model loads; single values outside the physical range are masked."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_jobs import embed_points
from beam_jobs.io import points
from schemas import sensors

RNG = np.random.default_rng(0)
N = 20  # points, one S2 and one S1 row each


def _table(s2_scale: float = 1.0, s1_linear: bool = False, lat=None) -> pa.Table:
    """N points with plausible S2 reflectance (0.02-0.4) and S1 dB (VV -15..-5, VH -25..-15)."""
    s2 = sensors.get_sensor("sentinel2_l2a")
    ids = [f"p{i}" for i in range(N)]
    lon = np.linspace(4.0, 4.1, N)
    lat = np.linspace(50.0, 50.1, N) if lat is None else np.asarray(lat, np.float64)
    t = [dt.datetime(2021, 6, 1)] * N
    cols: dict[str, list] = {
        "point_id": ids * 2,
        "lon": [*lon, *lon],
        "lat": [*lat, *lat],
        "source": ["sentinel2_l2a"] * N + ["sentinel1"] * N,
        "time": t * 2,
    }
    nan = [np.nan] * N
    for b in s2.band_names:
        cols[b] = [*(RNG.uniform(0.02, 0.4, N) * s2_scale), *nan]
    vv, vh = RNG.uniform(-15, -5, N), RNG.uniform(-25, -15, N)
    if s1_linear:
        vv, vh = 10 ** (vv / 10), 10 ** (vh / 10)
    cols["VV"] = [*nan, *vv]
    cols["VH"] = [*nan, *vh]
    return pa.table(
        {k: pa.array(v, type=pa.timestamp("ms") if k == "time" else None) for k, v in cols.items()}
    )


def _write(tmp_path, table: pa.Table):
    path = tmp_path / "points.parquet"
    pq.write_table(table, path)
    return path


def test_table_in_registry_units_reads(tmp_path):
    obs = points.read_point_table(_write(tmp_path, _table()))
    assert obs["sentinel2_l2a"].valid.sum() == N and obs["sentinel1"].valid.sum() == N


def test_reflectance_times_10000_names_band_and_fix(tmp_path):
    path = _write(tmp_path, _table(s2_scale=10_000))
    with pytest.raises(ValueError) as e:
        points.read_point_table(path)
    msg = str(e.value)
    assert "'sentinel2_l2a': B02 median" in msg and "\n" not in msg
    assert msg.endswith("looks like reflectance x 10000 (DN); divide by 10000")


def test_linear_power_is_named(tmp_path):
    path = _write(tmp_path, _table(s1_linear=True))
    with pytest.raises(ValueError, match=r"'sentinel1': VV median 0\.\d+ looks like linear power"):
        points.read_point_table(path)


def test_latitude_out_of_range_names_column_and_row(tmp_path):
    lat = np.linspace(50.0, 50.1, N)
    lat[3] = 200.6
    with pytest.raises(ValueError, match=r"column 'lat' row 3: 200.6 is outside -90..90"):
        points.read_point_table(_write(tmp_path, _table(lat=lat)))


def test_swapped_lon_lat_is_suggested(tmp_path):
    table = _table()
    lon, lat = table.column("lon"), table.column("lat")
    swapped = table.set_column(1, "lon", lat).set_column(2, "lat", lon.cast(pa.float64()))
    # lat 4.0 and lon 50.0 are both in range: nothing to tell. Put one point past 90.
    lat_col = np.asarray(swapped.column("lat").to_numpy()).copy()
    lat_col[0] = lat_col[N] = 120.0
    lon_col = np.asarray(swapped.column("lon").to_numpy()).copy()
    lon_col[0] = lon_col[N] = 50.0
    bad = swapped.set_column(1, "lon", pa.array(lon_col)).set_column(2, "lat", pa.array(lat_col))
    with pytest.raises(ValueError, match=r"row 0: 120.0 .*\(lon and lat swapped\?\)"):
        points.read_point_table(_write(tmp_path, bad))


def test_single_out_of_range_value_is_masked_with_a_warning(tmp_path):
    table = _table()
    b04 = table.column("B04").to_numpy().copy()
    b04[5] = 3e38
    path = _write(tmp_path, table.set_column(table.column_names.index("B04"), "B04", pa.array(b04)))
    with pytest.warns(UserWarning, match="1 sentinel2_l2a B04 values outside -0.1..1.6"):
        obs = points.read_point_table(path)
    sf = obs["sentinel2_l2a"]
    assert np.isnan(sf.band("B04")[0, 5, 0]) and np.isfinite(sf.band("B03")[0, 5, 0])
    assert sf.valid[0, 5, 0]  # the other bands of the row stay


def test_embed_points_exits_with_the_message_before_the_model(tmp_path):
    path = _write(tmp_path, _table(s2_scale=10_000))
    argv = ["--observations", str(path), "--year", "2021", "--out", str(tmp_path / "o.parquet")]
    argv += ["--model", str(tmp_path / "no_bundle_here")]  # never reached
    with pytest.raises(SystemExit) as e:
        embed_points.run(argv)
    assert "--observations" in str(e.value) and "divide by 10000" in str(e.value)


@pytest.mark.parametrize(
    ("source", "band", "values", "expected"),
    [
        (
            "era5_land",
            "temperature_2m",
            [12.0, 18.0, 3.0],
            "looks like degrees Celsius; add 273.15",
        ),
        ("era5_land", "total_precipitation", [0.5, 0.8, 3.0], "looks like mm/day"),
        ("sentinel2_l2a", "B04", [11.0, 9.0, 15.0], "looks like percent reflectance"),
        ("cop_dem", "elevation", [12000.0, 15000.0], "outside the physical range -500..9000 m"),
        ("sentinel2_l2a", "B04", [0.11, 0.09, 0.9], None),
        ("sentinel1", "VV", [-12.0, -8.0, 3.0], None),
        ("era5_land", "total_precipitation", [0.002, 0.001, 0.003], None),
    ],
)
def test_unit_mistake_hand_cases(source, band, values, expected):
    got = sensors.unit_mistake(sensors.get_sensor(source).band(band), np.array(values))
    if expected is None:
        assert got is None
    else:
        assert got is not None and expected in got and got.startswith(f"{band} median")
