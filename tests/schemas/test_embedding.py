"""The embedding contract: quantization by hand, COG pyramids, quality, GeoParquet, STAC, readers."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pyproj
import pystac
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from schemas import embedding as E

EPSG = 32631
X0, Y0 = 600_000.0, 5_600_000.0
TRANSFORM = Affine(10.0, 0.0, X0, 0.0, -10.0, Y0)
RIO = str(Path(sys.executable).parent / "rio")


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


def assert_valid_cog(path) -> None:
    ok, errors, warnings = cog_validate(str(path), quiet=True)
    assert ok and errors == [] and warnings == [], (errors, warnings)
    res = subprocess.run([RIO, "cogeo", "validate", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "is a valid cloud optimized GeoTIFF" in res.stdout


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


# ---------------------------------------------------------------------------------- COG


def test_embedding_cog_layout_values_and_overviews(tmp_path):
    h, w = 300, 270
    emb = unit_field(h, w)
    emb[:40, :40] = np.nan  # the first 2x2 blocks of levels 1..4 are empty
    path = E.write_embedding_cog(
        tmp_path / "2023" / "31N" / "t.tif",
        emb,
        TRANSFORM,
        EPSG,
        tags={"year": 2023, "model_version": "tiny-1", "model_sha256": "ab" * 32},
    )
    assert_valid_cog(path)
    assert os.listdir(tmp_path / "2023" / "31N") == ["t.tif"]
    with rasterio.open(path) as src:
        assert src.count == 64 and set(src.dtypes) == {"int8"}
        assert src.descriptions == E.BAND_NAMES
        assert src.nodata == -128
        assert src.crs.to_epsg() == EPSG and src.transform == TRANSFORM
        assert src.block_shapes[0] == (256, 256)
        assert src.profile["compress"] == "zstd" and src.profile["interleave"] == "pixel"
        tags = src.tags()
        assert tags["year"] == "2023" and tags["model_sha256"] == "ab" * 32
        assert "sqrt" in tags["quantization"] and "renormalized" in tags["overviews"]
        np.testing.assert_array_equal(src.read().transpose(1, 2, 0), E.quantize(emb))
        factors = src.overviews(1)
    assert len(factors) == 9  # 150, 75, 38, 19, 10, 5, 3, 2, 1 rows: down to 1 x 1
    levels = E.renormalized_overviews(emb, E.valid_mask(emb))
    full = E.dequantize(E.quantize(emb))
    for k, (level, _) in enumerate(levels):
        with rasterio.open(path, OVERVIEW_LEVEL=k) as ov:
            stored = ov.read().transpose(1, 2, 0)
        np.testing.assert_array_equal(stored, E.quantize(level))
        if k == 0:
            got = E.dequantize(stored)
            assert (stored[:20, :20] == -128).all() and np.isnan(got[:20, :20]).all()
            # An overview pixel is the renormalized mean of its 4 (dequantized) children, to
            # within the quantization error.
            for r, c in [(20, 20), (75, 60), (149, 134)]:
                kids = full[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].reshape(-1, 64)
                mean = _normalized(kids.sum(0))
                assert cosine(got[r, c], mean) > 0.999
                assert np.abs(got[r, c] - mean).max() < 0.02
    with rasterio.open(path, OVERVIEW_LEVEL=len(factors) - 1) as last:
        assert last.shape == (1, 1)


def test_embedding_cog_options_and_failures(tmp_path):
    emb = unit_field(40, 30)
    path = E.write_embedding_cog(
        tmp_path / "d.tif", emb, TRANSFORM, "EPSG:32631", compress="deflate", blocksize=512
    )
    assert_valid_cog(path)
    with rasterio.open(path) as src:
        assert src.profile["compress"] == "deflate"
    for kwargs, match in [
        ({"compress": "jpeg"}, "compress"),
        ({"tags": {"model:version": "x"}}, "tag key"),
    ]:
        with pytest.raises(ValueError, match=match):
            E.write_embedding_cog(tmp_path / "e.tif", emb, TRANSFORM, EPSG, **kwargs)
    with pytest.raises(ValueError, match=r"\(H, W, 64\)"):
        E.write_embedding_cog(tmp_path / "e.tif", emb[..., :8], TRANSFORM, EPSG)
    with pytest.raises(ValueError, match="north-up"):
        E.write_embedding_cog(tmp_path / "e.tif", emb, Affine(10, 0, X0, 0, 10, Y0), EPSG)
    assert sorted(os.listdir(tmp_path)) == ["d.tif"]


def test_embedding_cog_failure_leaves_nothing(tmp_path, monkeypatch):
    import rasterio.shutil

    def fail_half_way(src, dst, **kwargs):
        Path(dst).write_bytes(b"II*\x00 partial")
        raise OSError("disk full")

    monkeypatch.setattr(rasterio.shutil, "copy", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        E.write_embedding_cog(tmp_path / "t.tif", unit_field(20, 20), TRANSFORM, EPSG)
    assert os.listdir(tmp_path) == []  # neither the temp COG nor the scratch pyramid


# ---------------------------------------------------------------------------------- quality


def test_quality_layers_by_hand_and_cog(tmp_path):
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

    big = E.quality_layers(
        {s: np.full((300, 280), i + 1) for i, s in enumerate(E.OBS_SOURCES)},
        np.linspace(0, 1, 300 * 280).reshape(300, 280),
        np.full((300, 280), 0.5),
    )
    path = E.write_quality_cog(
        tmp_path / "t_quality.tif", big, TRANSFORM, EPSG, tags={"year": 2023}
    )
    assert_valid_cog(path)
    with rasterio.open(path) as src:
        assert src.descriptions == E.QUALITY_BANDS
        assert set(src.dtypes) == {"uint8"} and src.nodata == 255
        assert src.scales == (1.0, 1.0, 1.0, 1.0, 0.005, 0.005)
        assert "round(f * 200)" in src.tags()["quality_encoding"]
        np.testing.assert_array_equal(src.read(), big)
    assert os.listdir(tmp_path) == ["t_quality.tif"]
    with pytest.raises(ValueError, match="uint8"):
        E.write_quality_cog(tmp_path / "x.tif", big.astype(np.float32), TRANSFORM, EPSG)


# ---------------------------------------------------------------------------------- GeoParquet


@pytest.fixture(scope="module")
def tile_q():
    emb = unit_field(150, 140)
    emb[:10, :30] = np.nan
    return emb, E.quantize(emb)


def test_embedding_table_and_geoparquet(tmp_path, tile_q):
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

    path = E.write_embedding_parquet(tmp_path / "t.parquet", table, row_group_size=4096)
    assert os.listdir(tmp_path) == ["t.parquet"]
    pf = pq.ParquetFile(path)
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
    geo = json.loads(pf.schema_arrow.metadata[b"geo"])
    col = geo["columns"]["geometry"]
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
    assert col["encoding"] == "WKB" and col["geometry_types"] == ["Point"]
    assert col["crs"]["id"] == {"authority": "EPSG", "code": EPSG}
    assert col["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert col["bbox"] == [X0 + 5, Y0 - 1495, X0 + 1395, Y0 - 5]

    gdf = gpd.read_parquet(path)
    assert gdf.crs.to_epsg() == EPSG and len(gdf) == n_valid
    np.testing.assert_allclose(gdf.geometry.x, X0 + (cols + 0.5) * 10)
    np.testing.assert_allclose(gdf.geometry.y, Y0 - (rows + 0.5) * 10)
    back = pq.read_table(path)
    stored = back.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, 64)
    np.testing.assert_array_equal(stored, q[rows, cols])
    f32 = back.column("embedding_f32").combine_chunks().flatten().to_numpy().reshape(-1, 64)
    np.testing.assert_array_equal(f32, emb[rows, cols])
    assert set(back.column("tile_id").to_pylist()) == {"32631_1_2"}
    assert set(back.column("year").to_pylist()) == {2023}
    # The covering of a point is the point: xmin = xmax = x, within half a pixel of the centre
    # of pixel (row, col).
    bbox = back.column("bbox").combine_chunks()
    for name, ref in [("xmin", gdf.geometry.x), ("xmax", gdf.geometry.x)]:
        np.testing.assert_array_equal(pc.struct_field(bbox, name).to_numpy(), ref)
    for name, ref in [("ymin", gdf.geometry.y), ("ymax", gdf.geometry.y)]:
        np.testing.assert_array_equal(pc.struct_field(bbox, name).to_numpy(), ref)

    # A bbox filter returns exactly the pixels whose centres fall inside and skips row groups.
    x_lo, x_hi, y_lo, y_hi = X0 + 300, X0 + 600, Y0 - 900, Y0 - 500  # cols 30..59, rows 50..89
    flt = (
        (pc.field("bbox", "xmin") >= x_lo)
        & (pc.field("bbox", "xmax") <= x_hi)
        & (pc.field("bbox", "ymin") >= y_lo)
        & (pc.field("bbox", "ymax") <= y_hi)
    )
    hit = pq.read_table(path, filters=flt)
    got = set(zip(hit.column("row").to_pylist(), hit.column("col").to_pylist(), strict=True))
    assert got == {(r, c) for r in range(50, 90) for c in range(30, 60)}
    # Row groups hold whole 64 x 64 px cells here (row_group_size 4096). The 3 x 3 cells hold
    # 3796, 4096, 4096, 4096 rows (Z order (0,0) (0,1) (1,0) (1,1)), then the small edge cells
    # 768 + 768 + 1408 and 1408 + 264 are packed: 6 groups. The query (cols 30..59, rows
    # 50..89) touches cells (0, 0) and (1, 0): groups 0 and 2 are read, and group 4, whose
    # packed edge cells (0, 2), (1, 2), (2, 0) span the tile; groups 1, 3 and 5 are skipped.
    assert pf.metadata.num_row_groups == 6
    assert [pf.metadata.row_group(i).num_rows for i in range(6)] == [
        3796,
        4096,
        4096,
        4096,
        2944,
        1672,
    ]
    fragment = next(iter(pads.dataset(path).get_fragments()))
    kept = fragment.split_by_row_group(flt)
    assert [f.row_groups[0].id for f in kept] == [0, 2, 4]
    near = gpd.read_parquet(path, bbox=(x_lo, y_lo, x_hi, y_hi))
    assert len(near) == len(got)


def test_embedding_table_sample_and_errors(tmp_path, tile_q):
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
    path = E.write_embedding_parquet(tmp_path / "empty.parquet", empty)
    assert pq.read_table(path).num_rows == 0
    assert "bbox" not in json.loads(pq.read_schema(path).metadata[b"geo"])["columns"]["geometry"]
    with pytest.raises(ValueError, match="geo"):
        E.write_embedding_parquet(tmp_path / "x.parquet", pa.table({"a": [1]}))
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


# ---------------------------------------------------------------------------------- readers


def _write_tile(folder: Path, name: str, row0: int, col0: int, h: int, w: int, epsg: int = EPSG):
    emb = unit_field(h, w, row0, col0)
    emb[3, 4] = np.nan
    t = Affine(10.0, 0.0, X0 + col0 * 10, 0.0, -10.0, Y0 - row0 * 10)
    return E.write_embedding_cog(folder / name, emb, t, epsg, blocksize=256), emb


def test_open_our_cog_and_bbox_crop(tmp_path):
    path, emb = _write_tile(tmp_path, "t.tif", 0, 0, 70, 50)
    field = E.open_embeddings(path)
    expected = E.dequantize(E.quantize(emb))
    np.testing.assert_array_equal(field.values, expected)
    assert field.transform == TRANSFORM and field.crs.to_epsg() == EPSG
    assert field.valid.sum() == 70 * 50 - 1 and not field.valid[3, 4]
    assert field.paths == (path,)
    # A bbox in the raster CRS selects the pixels it touches: cols 10..24, rows 20..39.
    crop = E.open_embeddings(path, (X0 + 100, Y0 - 400, X0 + 245, Y0 - 200), bbox_crs="EPSG:32631")
    np.testing.assert_array_equal(crop.values, expected[20:40, 10:25])
    assert crop.transform == Affine(10, 0, X0 + 100, 0, -10, Y0 - 200)
    # A lon/lat bbox is transformed (densified) into the raster CRS first.
    to_ll = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    ll = to_ll.transform_bounds(X0 + 105, Y0 - 395, X0 + 235, Y0 - 205)
    crop_ll = E.open_embeddings(path, ll)
    b = crop_ll.bounds
    assert b[0] <= X0 + 105 and b[2] >= X0 + 235 and b[1] <= Y0 - 395 and b[3] >= Y0 - 205
    assert b[0] > X0 + 80 and b[2] < X0 + 260 and b[1] > Y0 - 420 and b[3] < Y0 - 180
    with pytest.raises(ValueError, match="does not intersect|intersects"):
        E.open_embeddings(path, (0.0, 0.0, 0.1, 0.1))


def test_open_aef_bottom_up_file(tmp_path):
    """An official-style tile: 64 int8 bands, nodata -128, positive y pixel size."""
    h, w = 40, 30
    emb = unit_field(h, w)
    emb[0, 0] = np.nan  # north-west corner pixel: no data
    q = E.quantize(emb)  # north-up
    y_south = Y0 - h * 10
    path = tmp_path / "aef-0-0.tiff"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=64,
        dtype="int8",
        nodata=-128,
        crs=f"EPSG:{EPSG}",
        transform=Affine(10.0, 0.0, X0, 0.0, 10.0, y_south),
        tiled=True,
        blockxsize=16,
        blockysize=16,
    ) as dst:
        dst.write(q[::-1].transpose(2, 0, 1))  # row 0 of the file is the southernmost row
    with rasterio.open(path) as src:
        assert src.transform.e > 0
    field = E.open_embeddings(str(path))
    assert field.transform == TRANSFORM  # north-up, same footprint
    np.testing.assert_array_equal(field.values, E.dequantize(q))
    assert not field.valid[0, 0] and field.valid[-1, -1]
    crop = E.open_embeddings(
        str(path), (X0 + 50, Y0 - 300, X0 + 150, Y0 - 100), bbox_crs="EPSG:32631"
    )
    np.testing.assert_array_equal(crop.values, E.dequantize(q)[10:30, 5:15])
    assert crop.transform == Affine(10, 0, X0 + 50, 0, -10, Y0 - 100)


def test_open_stac_catalog_and_directory_mosaic(tmp_path):
    out = tmp_path / "out"
    # Two adjacent tiles: west one 60 x 40 px, east one 60 x 30 px, the east one 20 px lower.
    pa_, ea = _write_tile(out / "2023", "west.tif", 0, 0, 60, 40)
    pb, eb = _write_tile(out / "2023", "east.tif", 20, 40, 60, 30)
    quality = E.quality_layers({}, np.zeros((60, 40)), np.zeros((60, 40)))
    E.write_quality_cog(out / "2023" / "west_quality.tif", quality, TRANSFORM, EPSG)
    coll = E.stac_collection(
        "emb", description="two tiles", extent_bbox=[0, 0, 1, 1], period=2023, model_version="m"
    )
    for name, path, row0, col0, shape in [
        ("west", pa_, 0, 0, (60, 40)),
        ("east", pb, 20, 40, (60, 30)),
    ]:
        t = Affine(10.0, 0.0, X0 + col0 * 10, 0.0, -10.0, Y0 - row0 * 10)
        coll.add_item(
            E.stac_item(
                name,
                cog_href=os.path.abspath(path),
                quality_href="q.tif",
                parquet_href=None,
                epsg=EPSG,
                transform=t,
                shape=shape,
                period=2023,
                model_version="m",
                model_sha256="0",
            )
        )
    coll.normalize_hrefs(str(out / "stac"))
    coll.make_all_asset_hrefs_relative()
    coll.save(pystac.CatalogType.SELF_CONTAINED)
    catalog = str(out / "stac" / "collection.json")

    expected = np.full((80, 70, 64), np.nan, np.float32)
    expected[0:60, 0:40] = E.dequantize(E.quantize(ea))
    expected[20:80, 40:70] = E.dequantize(E.quantize(eb))
    # A write in progress (hidden scratch folder, temp file) is not part of the folder.
    (out / "2023" / ".embedding-cog-x").mkdir()
    (out / "2023" / ".embedding-cog-x" / "level0.tif").write_bytes(b"partial")
    (out / "2023" / "t.tif.tmp-0123").write_bytes(b"partial")
    for source in (catalog, str(out)):  # the catalog, and the folder (sidecar skipped)
        field = E.open_embeddings(source)
        assert field.transform == TRANSFORM and field.values.shape == (80, 70, 64)
        np.testing.assert_array_equal(field.values, expected)
        assert sorted(Path(p).name for p in field.paths) == ["east.tif", "west.tif"]
    assert not field.valid[70, 10]  # covered by neither tile
    # A crop across the seam: cols 35..44, rows 25..34.
    crop = E.open_embeddings(
        catalog, (X0 + 350, Y0 - 350, X0 + 450, Y0 - 250), bbox_crs="EPSG:32631"
    )
    np.testing.assert_array_equal(crop.values, expected[25:35, 35:45])
    # A crop inside the west tile reads only that tile's item.
    west_only = E.open_embeddings(
        catalog, (X0 + 10, Y0 - 100, X0 + 50, Y0 - 10), bbox_crs="EPSG:32631"
    )
    assert [Path(p).name for p in west_only.paths] == ["west.tif"]
    np.testing.assert_array_equal(west_only.values, expected[1:10, 1:5])


def test_open_errors_name_the_files(tmp_path):
    missing = tmp_path / "nope.tif"
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        E.open_embeddings(str(missing))
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00 this is not a tiff")
    with pytest.raises(ValueError, match="corrupt.tif"):
        E.open_embeddings(str(corrupt))
    rgb = tmp_path / "rgb.tif"
    with rasterio.open(
        rgb,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=3,
        dtype="uint8",
        crs=f"EPSG:{EPSG}",
        transform=TRANSFORM,
    ) as dst:
        dst.write(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"rgb.tif is not an embedding raster: 3 band"):
        E.open_embeddings(str(rgb))
    # Different CRSs cannot be mosaicked; the message names both files.
    mixed = tmp_path / "mixed"
    _write_tile(mixed, "a.tif", 0, 0, 8, 8, epsg=32631)
    _write_tile(mixed, "b.tif", 0, 0, 8, 8, epsg=32632)
    with pytest.raises(ValueError, match=r"different CRSs.*a\.tif.*b\.tif"):
        E.open_embeddings(str(mixed))
    # Two years of one tile in one folder overlap.
    years = tmp_path / "years"
    _write_tile(years / "2023", "t.tif", 0, 0, 8, 8)
    _write_tile(years / "2024", "t.tif", 0, 0, 8, 8)
    with pytest.raises(ValueError, match="overlaps"):
        E.open_embeddings(str(years))
    with pytest.raises(FileNotFoundError, match="catalog.json"):
        E.open_embeddings(str(tmp_path / "catalog.json"))
