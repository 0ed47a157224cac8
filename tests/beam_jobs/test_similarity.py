"""similarity on the analysis world (conftest.py): a query pixel is most similar to itself,
its class is more similar than the others, and AEF's copy gives the same answers."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from analysis_world import assert_provenance, lonlat_of, mosaic_maps

from beam_jobs import similarity
from schemas import embedding

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_pure_query_vector_similarity_and_encoding():
    v = np.zeros((3, 64), np.float32)
    v[0, 0], v[1, 1], v[2] = 1.0, 1.0, np.nan
    q = similarity.query_vector(v)
    np.testing.assert_allclose(q[:2], [2**-0.5, 2**-0.5], rtol=1e-6)
    field = np.stack([v[0], v[1], v[2]])[None]  # (1, 3, 64)
    s = similarity.similarity(field, q)
    np.testing.assert_allclose(s[0, :2], [2**-0.5] * 2, rtol=1e-6)
    assert np.isnan(s[0, 2])
    stored, nodata, scale = similarity.encode(s, "int16")
    assert stored.tolist() == [[7071, 7071, -32768]] and (nodata, scale) == (-32768, 1e-4)
    rows, cols = similarity.best_pixels(np.array([[0.1, 0.9], [np.nan, 0.5]]), 5)
    assert list(zip(rows, cols, strict=True)) == [(0, 1), (1, 1), (0, 0)]
    with pytest.raises(ValueError, match="no query point"):
        similarity.query_vector(v[2:])


# A pixel deep inside a parcel of the class with the most points.
def _query_pixel(world) -> tuple[int, int]:
    lc = world.landcover[2023]
    pts = world.points
    cls = pts["class_id"].value_counts().index[0]
    for r, c in zip(pts["row"], pts["col"], strict=True):
        if 3 <= r < 125 and 3 <= c < 125 and (lc[r - 3 : r + 4, c - 3 : c + 4] == cls).all():
            return int(r), int(c)
    raise AssertionError("no interior pixel")


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    r, c = _query_pixel(world)
    lon, lat = lonlat_of(np.array([r]), np.array([c]))
    outs = {}
    for copy, source in (("ours", world.ours), ("aef", world.aef)):
        out = tmp_path_factory.mktemp(f"sim_{copy}")
        argv = ["--embeddings", str(source), "--period", "2023", "--out", str(out),
                "--query", f"{lon[0]:.8f},{lat[0]:.8f}", "--k", "50"]  # fmt: skip
        assert similarity.run(argv) == 0
        outs[copy] = out
    return (r, c), outs


def test_query_pixel_is_most_similar_to_itself_and_its_class(world, runs):
    (r, c), outs = runs
    sim = mosaic_maps(outs["ours"], "similarity")
    vals = embedding.dequantize(world.codes(2023))
    # Its own similarity is its vector's length: 1 to the quantization's precision.
    assert abs(sim[r, c] - 1.0) < 0.01, sim[r, c]
    np.testing.assert_allclose(
        sim, np.einsum("hwc,c->hw", vals, vals[r, c] / np.linalg.norm(vals[r, c])), atol=1e-5
    )
    lc = world.landcover[2023]
    own = lc[r, c]
    means = {int(k): float(np.nanmean(sim[lc == k])) for k in np.unique(lc)}
    others = max(v for k, v in means.items() if k != own)
    assert means[own] > others, means
    top = gpd.read_parquet(outs["ours"] / "topk.parquet")
    assert len(top) == 50 and list(top["rank"]) == list(range(1, 51))
    assert (np.diff(top["score"]) <= 0).all() and top["score"].iloc[0] == pytest.approx(
        np.nanmax(sim)
    )
    # The top 50 are the 50 highest values of the whole mosaic.
    np.testing.assert_allclose(
        np.sort(top["score"])[::-1], np.sort(sim[np.isfinite(sim)])[::-1][:50], rtol=1e-6
    )
    with rasterio.open(next(outs["ours"].glob("*_similarity.tif"))) as src:
        tags = src.tags()
    assert tags["source_period"] == "2023" and tags["source_model_version"] != "unknown"
    assert (outs["ours"] / "similarity.png").stat().st_size > 10_000


def test_aef_copy_gives_the_same_answers(runs):
    _, outs = runs
    np.testing.assert_array_equal(
        mosaic_maps(outs["ours"], "similarity"), mosaic_maps(outs["aef"], "similarity")
    )
    a = gpd.read_parquet(outs["ours"] / "topk.parquet")
    b = gpd.read_parquet(outs["aef"] / "topk.parquet")
    np.testing.assert_array_equal(a["score"], b["score"])
    np.testing.assert_array_equal(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy())


def test_every_output_carries_the_inputs_model_and_period(runs):
    for copy in ("ours", "aef"):
        assert_provenance(sorted(runs[1][copy].iterdir()), "2023", aef=copy == "aef")
