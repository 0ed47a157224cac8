"""Embedding files: the COG pyramid, the quality sidecar, GeoParquet, and the one reader
(our tiles, AEF bottom-up tiles, folders and STAC catalogs)."""

from __future__ import annotations

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

from beam_jobs.io import embeddings as W
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


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def assert_valid_cog(path) -> None:
    ok, errors, warnings = cog_validate(str(path), quiet=True)
    assert ok and errors == [] and warnings == [], (errors, warnings)
    res = subprocess.run([RIO, "cogeo", "validate", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "is a valid cloud optimized GeoTIFF" in res.stdout


def _normalized(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------- COG


@pytest.mark.parametrize(
    "shape, work_block",
    [((40, 37), 8), ((300, 270), 64), ((70, 33), 16), ((64, 64), 512)],
)
def test_block_writer_gives_the_whole_array_cog_byte_for_byte(tmp_path, shape, work_block):
    """write_embedding_cog_blocks (a work block at a time, sparse scratch levels) writes the
    file the whole-array path writes: every level quantized from renormalized_overviews of
    the whole field, handed to cog.write_cog. Holes cover whole scratch blocks (256 px), part
    of them, and a work block's corner, so skipped and half-written blocks are both met."""
    from beam_jobs.io import cog

    h, w = shape
    emb = unit_field(h, w)
    emb[: h // 2 + 40, : w // 2 + 20] = np.nan
    emb[h - 3 :, w - 5 :] = np.nan
    tags = {"year": 2023}
    all_tags = {
        "quantization": E.QUANTIZATION_RULE,
        "overviews": E.OVERVIEW_RULE,
        "software_version": W._software_version(),
        "year": "2023",
    }
    levels = E.renormalized_overviews(emb, E.valid_mask(emb))
    ref = cog.write_cog(
        tmp_path / "whole.tif",
        E.quantize(emb).transpose(2, 0, 1),
        TRANSFORM,
        EPSG,
        nodata=E.NODATA,
        band_names=E.BAND_NAMES,
        tags=all_tags,
        compress="ZSTD",
        overview_levels=[E.quantize(lv).transpose(2, 0, 1) for lv, _ in levels],
    )
    calls = []

    def read(r0, r1, c0, c1):
        calls.append((r1 - r0) * (c1 - c0))
        return emb[r0:r1, c0:c1]

    got = W.write_embedding_cog_blocks(
        tmp_path / "blocks.tif", (h, w), read, TRANSFORM, EPSG, tags=tags, work_block=work_block
    )
    assert Path(got).read_bytes() == Path(ref).read_bytes()
    assert max(calls) <= work_block**2 and sum(calls) == h * w
    assert_valid_cog(got)
    with rasterio.open(got) as ds:  # the holes read back as nodata at full resolution
        assert (ds.read(1)[: h // 2 + 40, : w // 2 + 20] == E.NODATA).all()
    # the float entry point is the same writer
    whole = W.write_embedding_cog(tmp_path / "float.tif", emb, TRANSFORM, EPSG, tags=tags)
    assert Path(whole).read_bytes() == Path(ref).read_bytes()


def test_embedding_cog_layout_values_and_overviews(tmp_path):
    h, w = 300, 270
    emb = unit_field(h, w)
    emb[:40, :40] = np.nan  # the first 2x2 blocks of levels 1..4 are empty
    path = W.write_embedding_cog(
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
    path = W.write_embedding_cog(
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
            W.write_embedding_cog(tmp_path / "e.tif", emb, TRANSFORM, EPSG, **kwargs)
    with pytest.raises(ValueError, match=r"\(H, W, 64\)"):
        W.write_embedding_cog(tmp_path / "e.tif", emb[..., :8], TRANSFORM, EPSG)
    with pytest.raises(ValueError, match="north-up"):
        W.write_embedding_cog(tmp_path / "e.tif", emb, Affine(10, 0, X0, 0, 10, Y0), EPSG)
    assert sorted(os.listdir(tmp_path)) == ["d.tif"]


def test_embedding_cog_failure_leaves_nothing(tmp_path, monkeypatch):
    import rasterio.shutil

    def fail_half_way(src, dst, **kwargs):
        Path(dst).write_bytes(b"II*\x00 partial")
        raise OSError("disk full")

    monkeypatch.setattr(rasterio.shutil, "copy", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        W.write_embedding_cog(tmp_path / "t.tif", unit_field(20, 20), TRANSFORM, EPSG)
    assert os.listdir(tmp_path) == []  # neither the temp COG nor the scratch pyramid


# ---------------------------------------------------------------------------------- quality


def test_quality_cog(tmp_path):
    big = E.quality_layers(
        {s: np.full((300, 280), i + 1) for i, s in enumerate(E.OBS_SOURCES)},
        np.linspace(0, 1, 300 * 280).reshape(300, 280),
        np.full((300, 280), 0.5),
    )
    path = W.write_quality_cog(
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
        W.write_quality_cog(tmp_path / "x.tif", big.astype(np.float32), TRANSFORM, EPSG)


# ---------------------------------------------------------------------------------- GeoParquet


@pytest.fixture(scope="module")
def tile_q():
    emb = unit_field(150, 140)
    emb[:10, :30] = np.nan
    return emb, E.quantize(emb)


def test_geoparquet_file(tmp_path, tile_q):
    emb, q = tile_q
    table = E.embedding_table(
        q, transform=TRANSFORM, epsg=EPSG, tile_id="32631_1_2", year=2023, float_embeddings=emb
    )
    n_valid = 150 * 140 - 10 * 30
    rows = table.column("row").to_numpy()
    cols = table.column("col").to_numpy()

    path = W.write_embedding_parquet(tmp_path / "t.parquet", table, row_group_size=4096)
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


def test_geoparquet_empty_table_and_errors(tmp_path, tile_q):
    _, q = tile_q
    empty = E.embedding_table(
        q, transform=TRANSFORM, epsg=EPSG, tile_id="t", year=2024, valid=np.zeros(q.shape[:2], bool)
    )
    path = W.write_embedding_parquet(tmp_path / "empty.parquet", empty)
    assert pq.read_table(path).num_rows == 0
    assert "bbox" not in json.loads(pq.read_schema(path).metadata[b"geo"])["columns"]["geometry"]
    with pytest.raises(ValueError, match="geo"):
        W.write_embedding_parquet(tmp_path / "x.parquet", pa.table({"a": [1]}))


# ---------------------------------------------------------------------------------- readers


def _write_tile(folder: Path, name: str, row0: int, col0: int, h: int, w: int, epsg: int = EPSG):
    emb = unit_field(h, w, row0, col0)
    emb[3, 4] = np.nan
    t = Affine(10.0, 0.0, X0 + col0 * 10, 0.0, -10.0, Y0 - row0 * 10)
    return W.write_embedding_cog(folder / name, emb, t, epsg, blocksize=256), emb


def test_open_our_cog_and_bbox_crop(tmp_path):
    path, emb = _write_tile(tmp_path, "t.tif", 0, 0, 70, 50)
    field = W.open_embeddings(path)
    expected = E.dequantize(E.quantize(emb))
    np.testing.assert_array_equal(field.values, expected)
    assert field.transform == TRANSFORM and field.crs.to_epsg() == EPSG
    assert field.valid.sum() == 70 * 50 - 1 and not field.valid[3, 4]
    assert field.paths == (path,)
    # A bbox in the raster CRS selects the pixels it touches: cols 10..24, rows 20..39.
    crop = W.open_embeddings(path, (X0 + 100, Y0 - 400, X0 + 245, Y0 - 200), bbox_crs="EPSG:32631")
    np.testing.assert_array_equal(crop.values, expected[20:40, 10:25])
    assert crop.transform == Affine(10, 0, X0 + 100, 0, -10, Y0 - 200)
    # A lon/lat bbox is transformed (densified) into the raster CRS first.
    to_ll = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    ll = to_ll.transform_bounds(X0 + 105, Y0 - 395, X0 + 235, Y0 - 205)
    crop_ll = W.open_embeddings(path, ll)
    b = crop_ll.bounds
    assert b[0] <= X0 + 105 and b[2] >= X0 + 235 and b[1] <= Y0 - 395 and b[3] >= Y0 - 205
    assert b[0] > X0 + 80 and b[2] < X0 + 260 and b[1] > Y0 - 420 and b[3] < Y0 - 180
    with pytest.raises(ValueError, match="does not intersect|intersects"):
        W.open_embeddings(path, (0.0, 0.0, 0.1, 0.1))


def test_open_aef_bottom_up_file(tmp_path):
    """An official-style tile: 64 int8 bands, nodata -128, positive y pixel size."""
    h, w = 40, 30
    emb = unit_field(h, w)
    emb[0, 0] = np.nan  # north-west corner pixel: no data
    q = E.quantize(emb)  # north-up
    path = tmp_path / "aef-0-0.tiff"
    _write_aef_tile(path, emb, X0, Y0)
    with rasterio.open(path) as src:
        assert src.transform.e > 0
    field = W.open_embeddings(str(path))
    assert field.transform == TRANSFORM  # north-up, same footprint
    np.testing.assert_array_equal(field.values, E.dequantize(q))
    assert not field.valid[0, 0] and field.valid[-1, -1]
    crop = W.open_embeddings(
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
    W.write_quality_cog(out / "2023" / "west_quality.tif", quality, TRANSFORM, EPSG)
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
    (out / "2023" / ".cog-levels-x").mkdir()
    (out / "2023" / ".cog-levels-x" / "level0.tif").write_bytes(b"partial")
    (out / "2023" / "t.tif.tmp-0123").write_bytes(b"partial")
    (out / "2023" / "t.tif.tmp-0123.d").mkdir()  # the COG writer's scratch (files.scratch_dir)
    (out / "2023" / "t.tif.tmp-0123.d" / "level0.tif").write_bytes(b"partial")
    for source in (catalog, str(out)):  # the catalog, and the folder (sidecar skipped)
        field = W.open_embeddings(source)
        assert field.transform == TRANSFORM and field.values.shape == (80, 70, 64)
        np.testing.assert_array_equal(field.values, expected)
        assert sorted(Path(p).name for p in field.paths) == ["east.tif", "west.tif"]
    assert not field.valid[70, 10]  # covered by neither tile
    # A crop across the seam: cols 35..44, rows 25..34.
    crop = W.open_embeddings(
        catalog, (X0 + 350, Y0 - 350, X0 + 450, Y0 - 250), bbox_crs="EPSG:32631"
    )
    np.testing.assert_array_equal(crop.values, expected[25:35, 35:45])
    # A crop inside the west tile reads only that tile's item.
    west_only = W.open_embeddings(
        catalog, (X0 + 10, Y0 - 100, X0 + 50, Y0 - 10), bbox_crs="EPSG:32631"
    )
    assert [Path(p).name for p in west_only.paths] == ["west.tif"]
    np.testing.assert_array_equal(west_only.values, expected[1:10, 1:5])


def test_open_errors_name_the_files(tmp_path):
    missing = tmp_path / "nope.tif"
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        W.open_embeddings(str(missing))
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00 this is not a tiff")
    with pytest.raises(ValueError, match="corrupt.tif"):
        W.open_embeddings(str(corrupt))
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
        W.open_embeddings(str(rgb))
    # Different CRSs cannot be mosaicked; the message names both files.
    mixed = tmp_path / "mixed"
    _write_tile(mixed, "a.tif", 0, 0, 8, 8, epsg=32631)
    _write_tile(mixed, "b.tif", 0, 0, 8, 8, epsg=32632)
    with pytest.raises(ValueError, match=r"different CRSs.*a\.tif.*b\.tif"):
        W.open_embeddings(str(mixed))
    # Two years of one tile in one folder overlap.
    years = tmp_path / "years"
    _write_tile(years / "2023", "t.tif", 0, 0, 8, 8)
    _write_tile(years / "2024", "t.tif", 0, 0, 8, 8)
    with pytest.raises(ValueError, match="overlaps"):
        W.open_embeddings(str(years))
    with pytest.raises(FileNotFoundError, match="catalog.json"):
        W.open_embeddings(str(tmp_path / "catalog.json"))


# ---------------------------------------------------------------------------------- tiles


def _write_aef_tile(path: Path, emb: np.ndarray, x0: float, y0: float) -> None:
    """An official-style tile: int8, nodata -128, stored bottom-up (positive y pixel size)."""
    h, w = emb.shape[:2]
    path.parent.mkdir(parents=True, exist_ok=True)
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
        transform=Affine(10.0, 0.0, x0, 0.0, 10.0, y0 - h * 10),
        tiled=True,
        blockxsize=16,
        blockysize=16,
    ) as dst:
        dst.write(E.quantize(emb)[::-1].transpose(2, 0, 1))
        dst.descriptions = E.BAND_NAMES


def test_tiles_list_periods_windows_and_confidence(tmp_path):
    ours = tmp_path / "ours"
    p23, emb = _write_tile(ours / "2023" / "31N", "t0.tif", 0, 0, 40, 30)
    _write_tile(ours / "2024" / "31N", "t0.tif", 0, 0, 40, 30)
    conf = np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(40, 30)
    counts = {s: np.ones((40, 30), np.float32) for s in E.OBS_SOURCES}
    layers = E.quality_layers(counts, np.ones((40, 30), np.float32), conf)
    W.write_quality_cog(ours / "2023" / "31N" / "t0_quality.tif", layers, TRANSFORM, EPSG)
    tiles = W.list_embedding_tiles(ours, "2023")
    assert [(t.tile_id, t.period) for t in tiles] == [("t0", "2023")]
    tile = tiles[0]
    assert tile.quality_path is not None and not tile.bottom_up
    assert tile.affine == TRANSFORM and tile.bounds == (X0, Y0 - 400, X0 + 300, Y0)
    with pytest.raises(ValueError, match=r"period '2025'.*2023, 2024"):
        W.list_embedding_tiles(ours, "2025")
    # Windows cover the tile exactly once; a window read equals the whole read cropped.
    wins = W.tile_windows(tile, 16)
    assert len(wins) == 3 * 2 and wins[-1] == (32, 40, 16, 30)
    whole = W.read_tile(tile)
    np.testing.assert_array_equal(whole.values, E.dequantize(E.quantize(emb)))
    part = W.read_tile(tile, (16, 32, 16, 30))
    np.testing.assert_array_equal(part.values, whole.values[16:32, 16:30])
    assert part.transform == Affine(10, 0, X0 + 160, 0, -10, Y0 - 160)
    # Confidence below 0.5 (stored in steps of 0.005) is masked; pixel (3, 4) is nodata anyway.
    masked = W.read_tile(tile, min_confidence=0.5)
    stored = np.round(conf * 200) / 200
    np.testing.assert_array_equal(masked.valid, (stored >= 0.5) & whole.valid)
    assert np.isnan(masked.values[~masked.valid]).all()
    # The same vectors stored AEF's way read back identically; AEF tiles have no sidecar.
    aef = tmp_path / "aef" / "2023" / "31N" / "xyz.tiff"
    _write_aef_tile(aef, emb, X0, Y0)
    (atile,) = W.list_embedding_tiles(tmp_path / "aef", "2023")
    assert atile.bottom_up and atile.period == "2023" and atile.affine == TRANSFORM
    np.testing.assert_array_equal(
        W.read_tile(atile, (5, 17, 3, 29)).values, part_of(whole, 5, 17, 3, 29)
    )
    np.testing.assert_array_equal(W.read_tile_codes(atile), W.read_tile_codes(tile))
    with pytest.raises(ValueError, match="quality sidecar.*xyz"):
        W.read_tile(atile, min_confidence=0.5)
    with pytest.raises(ValueError, match="outside"):
        W.read_tile(atile, (0, 41, 0, 30))


def part_of(field, r0, r1, c0, c1):
    return field.values[r0:r1, c0:c1]
