"""Bad values in a catalog are contained (issue 27, cases 2 and 4): the reader masks and counts
values that are not measurements, invalidates a failed asset's frame only, names the
underlying GDAL error, names a dropped asset key and a unit mistake.

The catalog: two Sentinel-2 dates over a 16 x 16 px window, each with B04 and B08 at 10 m
(DN 2131 -> reflectance 0.1131 and DN 4100 -> 0.31) and an all-clear SCL at 20 m.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import shapely
import shapely.geometry
from affine import Affine

from beam_jobs.io import stac
from schemas.grid import GridWindow

EPSG = 32631
X0, Y0 = 500_000.0, 5_000_000.0
WINDOW = GridWindow(EPSG, X0, Y0, 16, 16)
MARGIN = 80.0  # every raster starts 8 px west and north of the window
START = stac.datetime_to_ms(dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
END = stac.datetime_to_ms(dt.datetime(2022, 1, 1, tzinfo=dt.UTC))
DATES = (dt.datetime(2021, 6, 1, tzinfo=dt.UTC), dt.datetime(2021, 7, 1, tzinfo=dt.UTC))
S2_RB = {"scale": 1e-4, "offset": -0.1, "nodata": 0}


def _tif(path: Path, data: np.ndarray, res: float, nodata=None) -> str:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=f"EPSG:{EPSG}",
        transform=Affine(res, 0, X0 - MARGIN, 0, -res, Y0 + MARGIN),
        nodata=nodata,
        tiled=True,
        blockxsize=16,
        blockysize=16,
    ) as ds:
        ds.write(data[None])
    return str(path)


def _catalog(root: Path, edit=None) -> Path:
    """Two S2 items; `edit(item_index, band, array) -> (array, raster_band | None)` changes
    a band's stored array (and what its raster:bands state) before it is written."""
    cat = pystac.Catalog("cat", "test")
    coll = pystac.Collection(
        "sentinel2_l2a",
        "s2",
        pystac.Extent(
            pystac.SpatialExtent([[-180, -90, 180, 90]]),
            pystac.TemporalExtent([[DATES[0], None]]),
        ),
    )
    cat.add_child(coll)
    bbox = list(GridWindow(EPSG, X0 - MARGIN, Y0 + MARGIN, 32, 32).lonlat_bounds())
    for k, when in enumerate(DATES):
        item = pystac.Item(
            f"S2_{k}", shapely.geometry.mapping(shapely.box(*bbox)), bbox, when, {"proj:epsg": EPSG}
        )
        bands = {
            "B04": np.full((32, 32), 2131, np.uint16),
            "B08": np.full((32, 32), 4100, np.uint16),
        }
        for name, data in bands.items():
            rb = S2_RB
            if edit is not None:
                data, rb = edit(k, name, data)
            nodata = None if data.dtype.kind == "f" else 0
            href = _tif(root / f"S2_{k}_{name}.tif", data, 10.0, nodata)
            extra = {"raster:bands": [rb]} if rb is not None else {}
            item.add_asset(name, pystac.Asset(href, extra_fields=extra))
        scl = _tif(root / f"S2_{k}_SCL.tif", np.full((16, 16), 4, np.uint8), 20.0, 0)
        item.add_asset("SCL", pystac.Asset(scl))
        coll.add_item(item)
    cat.normalize_hrefs(str(root))
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def _read(path: Path):
    stac.clear_dataset_cache()
    return stac.read_observations(stac.StacCatalog.open(str(path)), WINDOW, START, END)


def test_clean_catalog_reads_every_pixel(tmp_path):
    obs = _read(_catalog(tmp_path))
    sf = obs["sentinel2_l2a"]
    assert sf.num_frames == 2 and sf.valid.all() and not obs.errors
    np.testing.assert_allclose(sf.band("B04"), 0.1131, atol=1e-6)
    np.testing.assert_allclose(sf.band("B08"), 0.31, atol=1e-6)
    assert obs.out_of_range == {}


def test_saturated_block_is_masked_and_counted(tmp_path):
    """65535 in a uint16 reflectance asset is saturation, not reflectance 6.45."""

    def edit(k, name, data):
        if k == 0 and name == "B04":
            data = data.copy()
            data[8:12, 8:12] = 65535  # window rows/cols 0..3
        return data, S2_RB

    obs = _read(_catalog(tmp_path, edit))
    sf = obs["sentinel2_l2a"]
    assert not sf.valid[0, :4, :4].any() and sf.valid[0].sum() == 256 - 16
    assert sf.valid[1].all()
    assert np.isnan(sf.band("B04")[0, :4, :4]).all()
    assert obs.out_of_range == {"sentinel2_l2a/B04": 16}
    assert not obs.errors


def test_float_3e38_block_is_masked_and_counted(tmp_path):
    """B08 rewritten as float32 DN with a block of 3e38 (a fill value nobody declared)."""

    def edit(k, name, data):
        if k == 1 and name == "B08":
            data = data.astype(np.float32)
            data[10:14, 20:26] = 3e38  # window rows 2..5, cols 12..17 (16 is outside)
        return data, S2_RB

    obs = _read(_catalog(tmp_path, edit))
    sf = obs["sentinel2_l2a"]
    assert sf.valid[0].all()
    bad = np.zeros((16, 16), bool)
    bad[2:6, 12:16] = True
    np.testing.assert_array_equal(sf.valid[1], ~bad)
    assert np.isfinite(sf.band("B08")[1][~bad]).all() and np.isnan(sf.band("B08")[1][bad]).all()
    assert obs.out_of_range == {"sentinel2_l2a/B08": 24}  # source pixels read, margin included


def test_failed_asset_invalidates_its_frame_only_and_names_the_gdal_error(tmp_path):
    path = _catalog(tmp_path)
    tif = tmp_path / "S2_0_B04.tif"
    tif.write_bytes(tif.read_bytes()[: tif.stat().st_size * 2 // 3])  # a truncated download
    obs = _read(path)
    sf = obs["sentinel2_l2a"]
    assert sf.num_frames == 2 and not sf.valid[0].any() and sf.valid[1].all()
    (err,) = obs.errors
    assert err.startswith("S2_0/B04: ") and "TIFF" in err
    assert "previous exception" not in err.lower()


def test_error_reason_unwraps_the_cause_chain():
    try:
        try:
            raise ValueError("TIFFFillTile: Read error at row 0; got 10 bytes, expected 99")
        except ValueError as inner:
            raise OSError("Read failed. See previous exception for details.") from inner
    except OSError as e:
        assert (
            stac.error_reason(e) == "TIFFFillTile: Read error at row 0; got 10 bytes, expected 99"
        )
    assert stac.error_reason(RuntimeError("plain")) == "plain"


def test_dropped_asset_key_is_reported_not_read_as_missing(tmp_path):
    path = _catalog(tmp_path)
    cat = pystac.read_file(str(path))
    item = next(i for i in cat.get_items(recursive=True) if i.id == "S2_1")
    del item.assets["B08"]
    item.save_object()
    obs = _read(path)
    sf = obs["sentinel2_l2a"]
    assert sf.valid[0].all() and not sf.valid[1].any()
    (err,) = obs.errors
    assert err.startswith("S2_1/B08: no asset for band(s) B08") and "other items have" in err


def test_dn_without_scale_is_named_as_a_unit_mistake(tmp_path):
    """An asset whose raster:bands state scale 1 while it holds DN: every value is out of
    range; the frame fails naming the band and the fix instead of reading as all-masked."""

    def edit(k, name, data):
        if k == 0 and name == "B04":
            return data, {"scale": 1.0, "offset": 0.0, "nodata": 0}
        return data, S2_RB

    obs = _read(_catalog(tmp_path, edit))
    sf = obs["sentinel2_l2a"]
    assert not sf.valid[0].any() and sf.valid[1].all()
    (err,) = obs.errors
    assert err == "S2_0/B04: B04 median 2131 looks like reflectance x 10000 (DN); divide by 10000"


@pytest.mark.parametrize("value", [65535, 3e38])
def test_raise_mode_is_unchanged_by_masking(tmp_path, value):
    """Masking is not an error: on_error='raise' reads a masked block without raising."""

    def edit(k, name, data):
        data = data.astype(np.float32 if value > 70000 else np.uint16)
        data[0:4, 0:4] = value
        return data, S2_RB

    stac.clear_dataset_cache()
    cat = stac.StacCatalog.open(str(_catalog(tmp_path, edit)))
    sf = stac.read_source(cat, "sentinel2_l2a", WINDOW, START, END, on_error="raise")
    assert sf.valid.all()  # the block lies in the margin, outside the window
