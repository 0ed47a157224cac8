"""write_cog / validate_cog: round trips, layout, atomicity, small rasters."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from affine import Affine

from beam_jobs.io.cog import cog_options, tag_strings, validate_cog, write_cog

TRANSFORM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5600000.0)


def test_multiband_round_trip_with_names_tags_and_overviews(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1, 10000, (3, 700, 600), dtype=np.uint16)
    path = write_cog(
        tmp_path / "sub" / "a.tif",
        data,
        TRANSFORM,
        "EPSG:32631",
        nodata=0,
        band_names=["B02", "B03", "B04"],
        tags={"year": 2023, "model": "x"},
    )
    ok, errors, warnings = validate_cog(path)
    assert ok and errors == [] and warnings == []
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(), data)
        assert src.crs.to_epsg() == 32631
        assert src.transform == TRANSFORM
        assert src.nodata == 0
        assert src.descriptions == ("B02", "B03", "B04")
        assert src.tags()["year"] == "2023"
        assert src.block_shapes[0] == (256, 256)
        assert src.overviews(1) == [2, 4]
        assert src.profile["compress"] == "deflate"


@pytest.mark.parametrize("shape", [(5, 7), (129, 258), (511, 300)])
def test_small_rasters_validate(tmp_path, shape):
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    data[0, 0] = np.nan
    path = write_cog(
        tmp_path / "s.tif", data, TRANSFORM, 32631, nodata=float("nan"), compress="zstd"
    )
    ok, errors, _ = validate_cog(path)
    assert ok, errors
    with rasterio.open(path) as src:
        out = src.read(1)
        assert out.shape == shape
        assert np.isnan(out[0, 0]) and out[0, 1] == 1.0 and out[-1, -1] == data[-1, -1]


def test_atomic_no_temp_left_and_overwrite(tmp_path):
    path = tmp_path / "c.tif"
    write_cog(path, np.ones((20, 20), np.uint8), TRANSFORM, 32631, nodata=0)
    write_cog(path, np.full((20, 20), 7, np.uint8), TRANSFORM, 32631, nodata=0, overviews=False)
    assert os.listdir(tmp_path) == ["c.tif"]
    with rasterio.open(path) as src:
        assert int(src.read(1)[3, 3]) == 7


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="compress"):
        write_cog(tmp_path / "d.tif", np.ones((4, 4)), TRANSFORM, 32631, nodata=0, compress="jpeg2")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        write_cog(tmp_path / "d.tif", np.ones((1, 2, 4, 4)), TRANSFORM, 32631, nodata=0)
    assert os.listdir(tmp_path) == []


def test_validate_reports_non_cog(tmp_path):
    path = tmp_path / "plain.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=1024,
        height=1024,
        count=1,
        dtype="uint8",
        crs="EPSG:32631",
        transform=TRANSFORM,
    ) as dst:
        dst.write(np.zeros((1, 1024, 1024), np.uint8))
    ok, errors, warnings = validate_cog(path)
    assert not ok
    assert errors or warnings


def test_given_overview_levels_are_stored_exactly(tmp_path):
    # Level k is the 2^k reduction: 40 x 30 -> 20 x 15 -> 10 x 8. Values GDAL's averaging
    # would never produce from the full level, so the test sees whose overviews were stored.
    data = np.arange(2 * 40 * 30, dtype=np.int16).reshape(2, 40, 30)
    l1 = np.full((2, 20, 15), -7, np.int16)
    l2 = np.full((2, 10, 8), 99, np.int16)
    l2[1, 0, 0] = -1
    path = write_cog(
        tmp_path / "p.tif",
        data,
        TRANSFORM,
        32631,
        nodata=-1,
        band_names=["a", "b"],
        tags={"rule": "given"},
        compress="zstd",
        overview_levels=[l1, l2],
    )
    ok, errors, warnings = validate_cog(path)
    assert ok and errors == [] and warnings == []
    assert os.listdir(tmp_path) == ["p.tif"]  # no scratch pyramid left
    with rasterio.open(path) as src:
        np.testing.assert_array_equal(src.read(), data)
        assert src.overviews(1) == [2, 4] and src.descriptions == ("a", "b")
        assert src.nodata == -1 and src.tags()["rule"] == "given"
        assert src.profile["interleave"] == "pixel" and src.transform == TRANSFORM
    for k, level in enumerate([l1, l2]):
        with rasterio.open(path, OVERVIEW_LEVEL=k) as ov:
            np.testing.assert_array_equal(ov.read(), level)
    write_cog(tmp_path / "p.tif", data, TRANSFORM, 32631, nodata=-1, overview_levels=[])
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.overviews(1) == []
    with pytest.raises(ValueError, match="overview level 1"):
        write_cog(tmp_path / "q.tif", data, TRANSFORM, 32631, nodata=-1, overview_levels=[l1[:1]])
    with pytest.raises(ValueError, match="overview level 2"):
        bad = l2.astype(np.int32)
        write_cog(tmp_path / "q.tif", data, TRANSFORM, 32631, nodata=-1, overview_levels=[l1, bad])
    assert sorted(os.listdir(tmp_path)) == ["p.tif"]


def test_scales_offsets_and_option_checks(tmp_path):
    path = write_cog(
        tmp_path / "s.tif",
        np.ones((2, 20, 20), np.uint8),
        TRANSFORM,
        32631,
        nodata=255,
        scales=[1.0, 0.005],
        offsets=[0.0, 0.0],
    )
    with rasterio.open(path) as src:
        assert src.scales == (1.0, 0.005) and src.offsets == (0.0, 0.0)
    assert cog_options(512, "zstd") == {
        "BLOCKSIZE": "512",
        "COMPRESS": "ZSTD",
        "BIGTIFF": "IF_SAFER",
        "PREDICTOR": "YES",
    }
    assert "PREDICTOR" not in cog_options(256, "none")
    with pytest.raises(ValueError, match="multiple of 16"):
        cog_options(100, "DEFLATE")
    assert tag_strings({"year": 2023, 1: 2.5}) == {"year": "2023", "1": "2.5"}
    for key in ("model:version", "a=b", ""):
        with pytest.raises(ValueError, match="tag key"):
            tag_strings({key: 1})
