"""The embedding format: quantization by hand, overviews, quality codes, the table, STAC.

The files (COG, quality sidecar, GeoParquet) and the reader: tests/beam_jobs/io/test_embeddings.py.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyproj
import pystac
import pytest
from affine import Affine

from schemas import embedding as E

EPSG = 32631
X0, Y0 = 600_000.0, 5_600_000.0
TRANSFORM = Affine(10.0, 0.0, X0, 0.0, -10.0, Y0)


def unit_field(h: int, w: int, row0: int = 0, col0: int = 0) -> np.ndarray:
    """A smooth field of unit vectors, a function of the global pixel (row, col) only."""
    k = np.arange(E.EMBEDDING_DIM)
    rows = (row0 + np.arange(h))[:, None, None]
    cols = (col0 + np.arange(w))[None, :, None]
    v = np.sin(0.07 * (k % 7 + 1) * rows + 0.05 * (k % 5 + 1) * cols + k)
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def random_unit(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, E.EMBEDDING_DIM))
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# ---------------------------------------------------------------------------------- values


def test_constants():
    assert E.BAND_NAMES[0] == "A00" and E.BAND_NAMES[-1] == "A63" and len(E.BAND_NAMES) == 64
    assert E.NODATA == -128
    assert E.QUALITY_BANDS == (
        "obs_sentinel2_l2a",
        "obs_sentinel1",
        "obs_landsat_c2l2",
        "obs_era5_land",
        "clear_fraction",
        "confidence",
    )


def test_quantize_hand_values():
    v = np.zeros((1, 64))
    # sqrt(|v|) * 127.5, rounded, signed, clipped:
    # 0.25 -> 0.5 * 127.5 = 63.75 -> 64; 1 -> 127.5 -> 128 (half to even) -> clip 127;
    # 0.5 -> 0.70711 * 127.5 = 90.156 -> 90; 0.01 -> 0.1 * 127.5 = 12.75 -> 13;
    # 0.0625 -> 0.25 * 127.5 = 31.875 -> 32; 1e-6 -> 0.1275 -> 0; 2 (off the sphere) -> clip.
    v[0, :11] = [0.25, -0.25, 1.0, -1.0, 0.0, 0.5, -0.01, 0.0625, 1e-6, 2.0, -2.0]
    q = E.quantize(v)
    assert q.dtype == np.int8 and q.shape == (1, 64)
    np.testing.assert_array_equal(q[0, :11], [64, -64, 127, -127, 0, 90, -13, 32, 0, 127, -127])
    assert (q[0, 11:] == 0).all()


def test_dequantize_hand_values():
    q = np.zeros((2, 64), np.int8)
    q[0, :5] = [64, -64, 127, -127, 1]
    v = E.dequantize(q)
    assert v.dtype == np.float32
    # (64 / 127.5)^2 = 0.2519646; (127 / 127.5)^2 = 0.9921722; (1 / 127.5)^2 = 6.1515e-5
    np.testing.assert_allclose(
        v[0, :5], [0.2519646, -0.2519646, 0.9921722, -0.9921722, 6.1515e-5], rtol=1e-5
    )
    assert (v[1] == 0).all()  # an all-zero code is a (degenerate) value, not nodata


def test_nonfinite_rows_become_nodata_and_nan():
    v = random_unit(4)[None].repeat(2, axis=0)  # (2, 4, 64)
    v[0, 1, 5] = np.nan
    v[1, 2, 63] = np.inf
    q = E.quantize(v)
    assert (q[0, 1] == -128).all() and (q[1, 2] == -128).all()
    assert (q[0, 0] != -128).all() and (q[1, 3] > -128).all()  # codes stay in [-127, 127]
    back = E.dequantize(q)
    assert np.isnan(back[0, 1]).all() and np.isnan(back[1, 2]).all()
    assert np.isfinite(back[0, 0]).all()
    np.testing.assert_array_equal(
        E.valid_mask(back), [[True, False, True, True], [True, True, False, True]]
    )
    # -128 in some channels only is not a nodata pixel.
    partial = q[0, :1].copy()
    partial[0, :3] = -128
    assert np.isfinite(E.dequantize(partial)).all()


def test_round_trip_cosine_on_the_sphere():
    v = random_unit(200_000, seed=1)
    back = E.dequantize(E.quantize(v))
    cos = cosine(v, back)
    # Measured (seeds 1, 2, 3; 200k vectors uniform on S^63 each): min 0.999893, 0.999891,
    # 0.999891; mean 0.999936 for all three; max |norm - 1| 0.0084, 0.0088, 0.0082.
    assert cos.min() >= 0.9998 and cos.mean() >= 0.9999
    norms = np.linalg.norm(back, axis=-1)
    assert np.abs(norms - 1).max() < 0.012


def test_shape_and_dtype_errors():
    with pytest.raises(ValueError, match="last axis of 64"):
        E.quantize(np.zeros((3, 32)))
    with pytest.raises(ValueError, match="int8"):
        E.dequantize(np.zeros((3, 64), np.int16))


# ---------------------------------------------------------------------------------- overviews


def _normalized(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_renormalized_overviews_by_hand():
    emb = unit_field(5, 7)
    valid = np.ones((5, 7), bool)
    valid[0, 0] = valid[0, 1] = valid[1, 0] = False  # block (0, 0) keeps one pixel
    valid[2:4, 2:4] = False  # block (1, 1) empty
    emb[~valid] = np.nan
    levels = E.renormalized_overviews(emb, valid)
    assert [lv[0].shape[:2] for lv in levels] == [(3, 4), (2, 2), (1, 1)]
    (l1, v1), (l2, v2), (l3, v3) = levels
    np.testing.assert_allclose(l1[0, 0], emb[1, 1], atol=1e-6)  # the only valid child
    np.testing.assert_allclose(l1[0, 1], _normalized(emb[0:2, 2:4].sum((0, 1))), atol=1e-6)
    assert not v1[1, 1] and np.isnan(l1[1, 1]).all()
    # Odd sizes: the last row and column of blocks hold 1 row / 1 column of pixels.
    np.testing.assert_allclose(l1[2, 3], emb[4, 6], atol=1e-6)
    np.testing.assert_allclose(l1[2, 0], _normalized(emb[4, 0:2].sum(0)), atol=1e-6)
    # Level 2 is the mean of the valid 10 m pixels of its 4x4 block (not of level-1 vectors).
    block = emb[0:4, 0:4][valid[0:4, 0:4]]
    np.testing.assert_allclose(l2[0, 0], _normalized(block.sum(0)), atol=1e-5)
    np.testing.assert_allclose(l3[0, 0], _normalized(emb[valid].sum(0)), atol=1e-5)
    assert v2.all() and v3.all()
    np.testing.assert_allclose(np.linalg.norm(l1[v1], axis=-1), 1, atol=1e-6)
    assert [lv[0].shape[:2] for lv in E.renormalized_overviews(emb, valid, min_size=4)] == [(3, 4)]
    assert E.renormalized_overviews(emb[:1, :1], valid[:1, :1]) == []


def test_overview_of_cancelling_vectors_is_invalid():
    v = random_unit(1)[0]
    emb = np.stack([v, -v, v, -v]).reshape(2, 2, 64)
    (l1, v1), *_ = E.renormalized_overviews(emb, np.ones((2, 2), bool))
    assert not v1[0, 0] and np.isnan(l1[0, 0]).all()


# ---------------------------------------------------------------------------------- quality


def test_quality_layers_by_hand():
    counts = {
        "sentinel2_l2a": np.array([[0, 3], [300, np.nan]]),
        "landsat_c2l2": np.array([[1, 2], [3, 4]]),
    }
    clear = np.array([[0.5, 1.0], [0.123, np.nan]])
    conf = np.array([[0.0, 0.9975], [1.0, 0.25]])
    q = E.quality_layers(counts, clear, conf)
    assert q.dtype == np.uint8 and q.shape == (6, 2, 2)
    np.testing.assert_array_equal(q[0], [[0, 3], [254, 255]])  # saturates at 254, NaN -> 255
    np.testing.assert_array_equal(q[1], [[0, 0], [0, 0]])  # sentinel1 not given: no observations
    np.testing.assert_array_equal(q[2], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(q[4], [[100, 200], [25, 255]])  # round(f * 200): 24.6 -> 25
    np.testing.assert_array_equal(q[5], [[0, 200], [200, 50]])  # 199.5 -> 200 (half to even)
    decoded = E.decode_quality_layers(q)
    np.testing.assert_allclose(decoded["clear_fraction"], [[0.5, 1.0], [0.125, np.nan]])
    np.testing.assert_allclose(decoded["obs_sentinel2_l2a"], [[0, 3], [254, np.nan]])
    with pytest.raises(ValueError, match="cop_dem"):
        E.quality_layers({"cop_dem": np.zeros((2, 2))}, clear, conf)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        E.quality_layers({}, clear * 2, conf)


# ---------------------------------------------------------------------------------- GeoParquet


@pytest.fixture(scope="module")
def tile_q():
    emb = unit_field(150, 140)
    emb[:10, :30] = np.nan
    return emb, E.quantize(emb)


def test_embedding_table_columns_and_spatial_order(tile_q):
    emb, q = tile_q
    table = E.embedding_table(
        q, transform=TRANSFORM, epsg=EPSG, tile_id="32631_1_2", year=2023, float_embeddings=emb
    )
    n_valid = 150 * 140 - 10 * 30
    assert table.num_rows == n_valid
    assert table.schema.field("embedding").type == pa.list_(pa.int8(), 64)
    assert table.schema.field("embedding_f32").type == pa.list_(pa.float32(), 64)
    assert table.schema.field("bbox").type == pa.struct(
        [(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")]
    )
    assert [table.schema.field(c).type for c in ("row", "col", "year")] == [
        pa.int32(),
        pa.int32(),
        pa.int16(),
    ]
    rows = table.column("row").to_numpy()
    cols = table.column("col").to_numpy()
    # Spatial order: block (0, 0) of 64 x 64 px first, row-major inside; then Z order of blocks.
    first = 64 * 64 - 10 * 30
    assert (rows[:first] < 64).all() and (cols[:first] < 64).all()
    assert (rows[0], cols[0]) == (0, 30) and (rows[1], cols[1]) == (0, 31)
    assert (rows[first], cols[first]) == (0, 64)  # block (0, 1) next
    assert (rows[first + 4096], cols[first + 4096]) == (64, 0)  # then block (1, 0)


def test_embedding_table_sample_and_errors(tile_q):
    _, q = tile_q
    sample = np.zeros(q.shape[:2], bool)
    sample[0, 0] = sample[100, 7] = sample[20, 40] = True  # (0, 0) is nodata: never written
    table = E.embedding_table(
        q, transform=TRANSFORM, epsg=EPSG, tile_id="t", year=2024, valid=sample
    )
    assert "embedding_f32" not in table.column_names
    assert sorted(
        zip(table.column("row").to_pylist(), table.column("col").to_pylist(), strict=True)
    ) == [
        (20, 40),
        (100, 7),
    ]
    empty = E.embedding_table(
        q, transform=TRANSFORM, epsg=EPSG, tile_id="t", year=2024, valid=np.zeros_like(sample)
    )
    assert empty.num_rows == 0
    assert "bbox" not in json.loads(empty.schema.metadata[b"geo"])["columns"]["geometry"]
    with pytest.raises(ValueError, match="int8"):
        E.embedding_table(q.astype(np.int16), transform=TRANSFORM, epsg=EPSG, tile_id="t", year=1)


# ---------------------------------------------------------------------------------- STAC


def test_stac_item_and_collection_round_trip():
    shape = (128, 96)
    item = E.stac_item(
        "32631_46_4375",
        cog_href="/data/2023/31N/32631_46_4375.tif",
        quality_href="/data/2023/31N/32631_46_4375_quality.tif",
        parquet_href="/data/2023/31N/32631_46_4375.parquet",
        epsg=EPSG,
        transform=TRANSFORM,
        shape=shape,
        period=2023,
        model_version="tiny-1",
        model_sha256="ab" * 32,
    )
    d = item.to_dict(include_self_link=False)
    back = pystac.Item.from_dict(d)
    assert back.to_dict(include_self_link=False) == d
    assert back.id == "32631_46_4375_2023"
    props = back.properties
    assert props["datetime"] is None
    assert props["start_datetime"] == "2023-01-01T00:00:00Z"
    assert props["end_datetime"] == "2024-01-01T00:00:00Z"
    assert props["proj:code"] == "EPSG:32631"
    assert props["proj:shape"] == [128, 96]
    assert props["proj:transform"] == [10.0, 0.0, X0, 0.0, -10.0, Y0]
    assert props["proj:bbox"] == [X0, Y0 - 1280, X0 + 960, Y0]
    assert props["earthembed:model_sha256"] == "ab" * 32 and props["earthembed:year"] == 2023
    assert set(E.STAC_EXTENSIONS) <= set(back.stac_extensions)
    emb = back.assets["embedding"]
    assert emb.media_type == E.COG_MEDIA_TYPE and emb.roles == ["data"]
    assert [b["name"] for b in emb.extra_fields["bands"]] == list(E.BAND_NAMES)
    rb = emb.extra_fields["raster:bands"]
    assert len(rb) == 64 and all(b["data_type"] == "int8" and b["nodata"] == -128 for b in rb)
    qrb = back.assets["quality"].extra_fields["raster:bands"]
    assert [b.get("scale", 1.0) for b in qrb] == [1.0] * 4 + [0.005, 0.005]
    assert back.assets["parquet"].media_type == "application/vnd.apache.parquet"
    # Geometry in lon/lat: the corners of the tile, transformed.
    to_ll = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    lon_tl, lat_tl = to_ll.transform(X0, Y0)
    lon_br, lat_br = to_ll.transform(X0 + 960, Y0 - 1280)
    ring = back.geometry["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 65
    np.testing.assert_allclose(ring[0], [lon_tl, lat_tl])
    assert back.bbox[0] <= min(lon_tl, lon_br) and back.bbox[2] >= max(lon_tl, lon_br)
    assert back.bbox[1] <= lat_br and back.bbox[3] >= lat_tl
    # Counter-clockwise (positive shoelace area) as GeoJSON asks.
    xy = np.array(ring)
    assert np.sum(xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1]) > 0

    other = E.stac_item(
        "32631_46_4375",
        cog_href="a.tif",
        quality_href="a_quality.tif",
        parquet_href=None,
        epsg=EPSG,
        transform=TRANSFORM,
        shape=shape,
        period=(dt.datetime(2023, 4, 1), dt.datetime(2023, 10, 1)),
        model_version="tiny-1",
        model_sha256="00",
    )
    assert other.id == "32631_46_4375_20230401_20231001" and "parquet" not in other.assets
    assert "earthembed:year" not in other.properties

    coll = E.stac_collection(
        "earthembed-2023",
        description="test",
        extent_bbox=back.bbox,
        period=2023,
        model_version="tiny-1",
    )
    cd = coll.to_dict(include_self_link=False)
    cback = pystac.Collection.from_dict(cd)
    assert cback.id == "earthembed-2023" and cback.license == "CC-BY-4.0"
    assert cback.extent.temporal.intervals[0][0] == dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
    assert cback.summaries.get_list("earthembed:model_version") == ["tiny-1"]
