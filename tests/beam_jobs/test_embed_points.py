"""embed-points: the GeoParquet table, DirectRunner runs on points of the real WorldCereal sample.

Runs use a fake bundle (the bundle protocol; per point the mean of the valid Sentinel-2 10 m
bands over the period, projected to 64 dims and normalized) so values can be checked exactly,
and the real tiny bundle model/weights/tiny (the shipped_bundle fixture).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_bundles import MeanS2Bundle

from beam_jobs import embed_points, inference
from schemas import embedding
from schemas.observations import Observations, SourceFrames

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PERIOD = "2021-01-01/2022-01-01"


class PointFakeBundle(MeanS2Bundle):
    """Per pixel, no spatial context."""

    version = "fake-points-1"
    sha256 = "p" * 64
    proj_seed = 2


def test_point_chunks_and_take_points():
    assert embed_points.point_chunks(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert embed_points.point_chunks(0, 3) == []
    v = np.arange(2 * 5 * 1 * 10, dtype=np.float32).reshape(2, 5, 1, 10)
    sf = SourceFrames("sentinel2_l2a", v, np.ones((2, 5, 1), bool), np.array([1, 2]))
    obs = Observations(
        {"sentinel2_l2a": sf},
        point_ids=np.array(list("abcde"), object),
        lon=np.arange(5.0),
        lat=np.arange(5.0) + 50,
    )
    sub = inference.take_points(obs, 1, 3)
    assert list(sub.point_ids) == ["b", "c"] and sub.spatial_shape == (2, 1)
    np.testing.assert_array_equal(sub["sentinel2_l2a"].values, v[:, 1:3])
    np.testing.assert_array_equal(sub.lat, [51.0, 52.0])


def test_points_table_schema_and_nulls():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 64)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[1] = np.nan
    t = embed_points.points_table(
        ["a", "b", "c"], np.array([4.0, 4.1, 4.2]), np.array([50.0, 50.1, 50.2]), emb
    )
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), 64)
    assert t.schema.field("embedding_int8").type == pa.list_(pa.int8(), 64)
    assert t.column("embedding").null_count == 1 and t.column("embedding_int8").null_count == 1
    got = t.column("embedding").to_pylist()
    np.testing.assert_array_equal(np.array(got[0], np.float32), emb[0])
    np.testing.assert_array_equal(
        np.array(t.column("embedding_int8").to_pylist()[2], np.int8), embedding.quantize(emb[2])
    )
    geo = json.loads(t.schema.metadata[b"geo"])
    assert geo["columns"]["geometry"]["crs"]["id"]["code"] == 4326
    assert geo["columns"]["geometry"]["bbox"] == [4.0, 50.0, 4.2, 50.2]


# ------------------------------------------------------------------------------- pipelines


@pytest.fixture(scope="module")
def point_table(realdata_dir, tmp_path_factory) -> Path:
    """40 pixels of the real WorldCereal Belgium 2021 sample as a point table."""
    from beam_jobs.io import points
    from beam_jobs.io.realdata import read_worldcereal

    obs = read_worldcereal(realdata_dir / "worldcereal_belgium_2021" / "inputs.nc")
    pts = points.window_to_points(obs, sample=40, seed=0)
    path = tmp_path_factory.mktemp("points") / "points.parquet"
    points.write_point_table(pts, path)
    return path


@pytest.fixture
def fake_model(monkeypatch):
    inference.clear_bundle_cache()
    monkeypatch.setattr(
        inference, "load_bundle", lambda path, compute_dtype="float32": PointFakeBundle()
    )
    yield "fake://points"
    inference.clear_bundle_cache()


def _expected(table: Path) -> tuple[list, np.ndarray]:
    """The fake's embeddings of every point, in one unpadded batch."""
    from beam_jobs import runner
    from beam_jobs.io import points

    t0, t1 = runner.parse_period(PERIOD)
    obs = points.read_point_table(table, start_ms=t0, end_ms=t1)
    b = PointFakeBundle()
    x = b.prepare_points(obs, t_start_ms=t0, t_end_ms=t1)
    return list(obs.point_ids), b.embed_batch(x).reshape(-1, 64)


def test_embed_points_fake_values_any_batch(point_table, fake_model, tmp_path):
    import geopandas

    ids, want = _expected(point_table)
    outs = []
    for bs in (7, 64):
        out = tmp_path / f"emb{bs}.parquet"
        argv = ["--observations", str(point_table), "--period", PERIOD, "--model", fake_model]
        assert embed_points.run([*argv, "--out", str(out), "--batch-size", str(bs)]) == 0
        outs.append(pq.read_table(out))
    a, b = outs
    assert a.equals(b)  # 6 chunks of 7 or one of 40: the same rows
    assert a.column("point_id").to_pylist() == ids and a.num_rows == 40
    got = np.array(a.column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    q = np.array(a.column("embedding_int8").to_pylist(), np.int8)
    np.testing.assert_array_equal(q, embedding.quantize(got))
    meta = json.loads(a.schema.metadata[b"earthembed"])
    assert meta["model_version"] == "fake-points-1" and meta["period"] == "2021"
    gdf = geopandas.read_parquet(tmp_path / "emb7.parquet")
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == 40
    from beam_jobs.io import points

    src = points.read_point_table(point_table)
    np.testing.assert_array_equal(gdf.geometry.x, src.lon)  # lon/lat order, the table's points
    np.testing.assert_array_equal(gdf.geometry.y, src.lat)


def test_embed_points_option_errors(point_table, fake_model, tmp_path, capsys):
    out = str(tmp_path / "x.parquet")
    with pytest.raises(SystemExit):
        embed_points.run(["--observations", str(point_table), "--period", "2021", "--out", out])
    assert "--period" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--observations"):
        embed_points.run(
            ["--observations", str(tmp_path / "no.parquet"), "--year", "2021", "--out", out]
        )


def test_embed_points_real_bundle_unit_vectors(point_table, tmp_path, shipped_bundle):
    inference.clear_bundle_cache()
    out = tmp_path / "real.parquet"
    argv = ["--observations", str(point_table), "--period", PERIOD, "--model", str(shipped_bundle)]
    assert embed_points.run([*argv, "--out", str(out), "--batch-size", "16"]) == 0
    inference.clear_bundle_cache()
    t = pq.read_table(out)
    assert t.num_rows == 40 and t.column("embedding").null_count == 0
    emb = np.array(t.column("embedding").to_pylist(), np.float32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    deq = embedding.dequantize(np.array(t.column("embedding_int8").to_pylist(), np.int8))
    assert np.abs(np.linalg.norm(deq, axis=1) - 1).max() < 0.02
    assert np.unique(emb.round(4), axis=0).shape[0] > 20  # points differ
    # Points are prepared all at once per chunk; the vectors equal those of every point
    # prepared alone (`bundle.prepare` of a 1 x 1 point, the previous path).
    from beam_jobs import runner
    from beam_jobs.io import points

    t0, t1 = runner.parse_period(PERIOD)
    obs = points.read_point_table(point_table, start_ms=t0, end_ms=t1)
    bundle = inference.load_bundle_cached(str(shipped_bundle))
    alone = [
        bundle.prepare(inference.take_points(obs, i, i + 1), t_start_ms=t0, t_end_ms=t1)
        for i in range(40)
    ]
    want = inference.embed_items(bundle, alone, 16)[:, 0, 0]
    inference.clear_bundle_cache()
    np.testing.assert_allclose(emb, want, atol=1e-5)
