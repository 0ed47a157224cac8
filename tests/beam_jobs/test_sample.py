"""sample: 10,000 points over the four tiles of the analysis world (conftest.py), each tile
opened once, values equal to direct pixel reads, on our tiles and AEF's copy alike."""

from __future__ import annotations

import duckdb
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from analysis_world import EPSG, SIDE, X0, Y1, assert_provenance

from beam_jobs import runner, sample
from beam_jobs.io.embeddings import list_embedding_tiles, read_tile_pixels
from schemas import embedding
from schemas.grid import utm_to_lonlat

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _points(n: int, seed: int = 3):
    """n random points inside the grid (and 3 outside it), with their true pixel."""
    rng = np.random.default_rng(seed)
    x = X0 + rng.uniform(0.5, SIDE * 10 - 0.5, n)
    y = Y1 - rng.uniform(0.5, SIDE * 10 - 0.5, n)
    x = np.concatenate([x, [X0 - 50.0, X0 + 200.0, X0 + SIDE * 10 + 30]])
    y = np.concatenate([y, [Y1 - 100.0, Y1 + 40.0, Y1 - 300.0]])
    lon, lat = utm_to_lonlat(x, y, EPSG)
    rows = np.floor((Y1 - y) / 10).astype(int)
    cols = np.floor((x - X0) / 10).astype(int)
    df = pd.DataFrame({"point_id": [f"p{i}" for i in range(x.size)], "lon": lon, "lat": lat})
    df["site_class"] = rng.integers(0, 4, x.size)
    return df, rows, cols


def test_read_tile_pixels_reads_only_cells_with_points(world):
    tile = list_embedding_tiles(world.ours, "2023")[0]
    rows, cols = np.array([0, 63, 5, 5]), np.array([0, 63, 7, 7])
    got = read_tile_pixels(tile, rows, cols, block=16)
    full = world.codes(2023)
    r0 = round((Y1 - tile.transform[5]) / 10)
    c0 = round((tile.transform[2] - X0) / 10)
    np.testing.assert_array_equal(got, full[rows + r0, cols + c0])
    with pytest.raises(ValueError, match="outside"):
        read_tile_pixels(tile, np.array([64]), np.array([0]))


@pytest.fixture(scope="module")
def points_files(world, tmp_path_factory):
    df, rows, cols = _points(10_000)
    d = tmp_path_factory.mktemp("points")
    geo = gpd.GeoDataFrame(
        df.drop(columns=["lon", "lat"]),
        geometry=gpd.points_from_xy(df["lon"], df["lat"]),
        crs="EPSG:4326",
    ).to_crs(f"EPSG:{EPSG}")  # any CRS is brought to lon/lat
    geo.to_parquet(d / "points.parquet")
    df.to_csv(d / "points.csv", index=False)
    return d, df, rows, cols


def _run_counting_opens(monkeypatch, tiles, points, out) -> tuple[dict, dict]:
    """Run the pipeline; count rasterio.open per file while it runs, and the Beam counters."""
    opens: dict[str, int] = {}
    real_open = rasterio.open

    def counting(path, *a, **kw):
        opens[str(path)] = opens.get(str(path), 0) + 1
        return real_open(path, *a, **kw)

    pipeline = sample.build_pipeline(
        runner.create_pipeline(runner.pipeline_options([])), tiles, points, str(out)
    )
    monkeypatch.setattr(rasterio, "open", counting)
    result = pipeline.run()
    result.wait_until_finish()
    monkeypatch.setattr(rasterio, "open", real_open)
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query()["counters"]
        if c.key.metric.namespace == sample.NAMESPACE
    }
    return opens, counters


@pytest.mark.parametrize("copy", ["ours", "aef"])
def test_sample_10000_points_opens_each_tile_once(world, points_files, tmp_path, monkeypatch, copy):
    d, df, rows, cols = points_files
    from beam_jobs.io.points import read_point_locations

    source = world.ours if copy == "ours" else world.aef
    points = read_point_locations(d / ("points.parquet" if copy == "ours" else "points.csv"))
    np.testing.assert_allclose(points["lon"], df["lon"], atol=1e-9)
    tiles = list_embedding_tiles(source, "2023")
    assert len(tiles) == 4
    out = tmp_path / "s.parquet"
    opens, counters = _run_counting_opens(monkeypatch, tiles, points, out)
    assert {t.path: opens.get(t.path, 0) for t in tiles} == {t.path: 1 for t in tiles}
    assert counters["tiles_opened"] == 4
    assert counters["points_sampled"] + counters["points_nodata"] == 10_000

    # Values: the stored codes at each point's pixel, read directly; outside points are null.
    got = gpd.read_parquet(out)
    assert len(got) == len(df) and list(got["point_id"]) == list(df["point_id"])
    truth = world.codes(2023)
    inside = np.arange(len(df)) < 10_000
    codes = np.stack(got["embedding_int8"][inside].to_numpy())
    np.testing.assert_array_equal(codes, truth[rows[inside], cols[inside]])
    np.testing.assert_array_equal(
        np.stack(got["embedding"][inside].to_numpy()), embedding.dequantize(codes)
    )
    assert got["valid"][inside].all() and not got["valid"][~inside].any()
    assert np.isnan(np.stack(got["embedding"][~inside].to_numpy())).all()
    assert (np.stack(got["embedding_int8"][~inside].to_numpy()) == embedding.NODATA).all()
    assert got["tile_id"][~inside].isna().all() and got["row"][~inside].isna().all()
    assert (got["period"] == "2023").all() and (got["site_class"] == df["site_class"]).all()
    assert_provenance([out], "2023", aef=copy == "aef")
    # Each point's tile pixel maps back to its UTM pixel.
    by_id = {t.tile_id: t for t in tiles}
    r = np.array([round((Y1 - by_id[t].transform[5]) / 10) for t in got["tile_id"][inside]])
    np.testing.assert_array_equal(got["row"][inside].to_numpy() + r, rows[inside])
    np.testing.assert_allclose(got.geometry.x, df["lon"], atol=1e-9)
    # DuckDB reads it too.
    n, n_null, total = (
        duckdb.connect()
        .execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT valid), "
            f"sum(list_sum(embedding_int8::INTEGER[])) FILTER (WHERE valid) FROM '{out}'"
        )
        .fetchone()
    )
    assert (n, n_null, total) == (10_003, 3, int(codes.astype(np.int64).sum()))


def test_sample_cli_every_period_and_confidence(world, points_files, tmp_path):
    d, df, rows, cols = points_files
    out = tmp_path / "all.parquet"

    def argv(source):
        points = str(d / "points.csv")
        return ["--embeddings", str(source), "--points", points, "--out", str(out),
                "--min-confidence", "0.3"]  # fmt: skip

    assert sample.run(argv(world.ours)) == 0
    got = pd.read_parquet(out)
    assert sorted(got["period"].unique()) == ["2023", "2024"] and len(got) == 2 * len(df)
    assert_provenance([out], "2023,2024")
    g24 = got[got["period"] == "2024"].reset_index(drop=True)
    ok = g24["valid"][:10_000].to_numpy()
    # The world's sidecar confidence is 1 everywhere (Sentinel-1 sees through clouds), so
    # nothing is masked here (masking itself: tests/beam_jobs/io/test_embeddings.py).
    assert ok.all()
    np.testing.assert_array_equal(
        np.stack(g24["embedding_int8"][:10_000][ok].to_numpy()),
        world.codes(2024)[rows[:10_000][ok], cols[:10_000][ok]],
    )
    with pytest.raises(SystemExit):  # AEF tiles have no sidecar: refused before any work
        sample.run(argv(world.aef))
