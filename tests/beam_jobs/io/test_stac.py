"""read_source / read_observations on small hand-built STAC catalogs of COGs."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import shapely
import shapely.geometry
from affine import Affine

from beam_jobs.io import stac
from schemas import sensors
from schemas.grid import GridWindow, utm_to_lonlat
from schemas.observations import SourceFrames

EPSG = 32631
# The window: 16 x 16 px at 10 m, near 3 E 45 N.
X0, Y0 = 500_000.0, 5_000_000.0
WINDOW = GridWindow(EPSG, X0, Y0, 16, 16)
# Every UTM raster starts 80 m (8 px at 10 m, 4 at 20 m) west and north of the window.
MARGIN = 80.0


def _ms(*args: int) -> int:
    return stac.datetime_to_ms(dt.datetime(*args, tzinfo=dt.UTC))


T_S2_A = _ms(2021, 6, 10, 10, 30)
T_S2_B = _ms(2021, 5, 1, 10, 30)
T_S2_C = _ms(2021, 7, 1, 10, 30)
T_S2_OUT = _ms(2022, 3, 1)
START, END = _ms(2021, 1, 1), _ms(2022, 1, 1)


def _write_cog(path: Path, data: np.ndarray, transform: Affine, crs: str, nodata=None) -> str:
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data[None])
    return str(path)


def _utm_transform(res: float) -> Affine:
    return Affine(res, 0, X0 - MARGIN, 0, -res, Y0 + MARGIN)


def _item(item_id: str, time_ms: int, props: dict, bbox=None) -> pystac.Item:
    when = dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.UTC)
    bbox = bbox or list(GridWindow(EPSG, X0 - MARGIN, Y0 + MARGIN, 32, 32).lonlat_bounds())
    geom = shapely.geometry.mapping(shapely.box(*bbox))
    return pystac.Item(item_id, geom, bbox, when, {"proj:epsg": EPSG, **props})


def _add(item: pystac.Item, key: str, href: str, raster_band: dict | None = None) -> None:
    extra = {"raster:bands": [raster_band]} if raster_band is not None else {}
    item.add_asset(key, pystac.Asset(href, media_type=pystac.MediaType.COG, extra_fields=extra))


S2_RB = {"scale": 1e-4, "offset": -0.1, "nodata": 0}


def _s2_item(d: Path, item_id: str, t: int, cols: slice | None = None, cloud: bool = True):
    """An S2 item: B02/B04 at 10 m, B05 at 20 m, SCL at 20 m; `cols` limits its footprint."""
    b02 = np.full((32, 32), 2000, np.uint16)  # -> 0.1 reflectance with the L2A offset
    b02[8 + 15, 8 + 15] = 0  # nodata at window pixel (15, 15)
    b04 = (3000 + 10 * np.arange(32, dtype=np.uint16))[None, :].repeat(32, 0)
    b05 = (1000 + 100 * np.arange(16, dtype=np.uint16))[None, :].repeat(16, 0)
    scl = np.full((16, 16), 4, np.uint8)
    if cloud:
        scl[4:6, 4:6] = 8  # window rows 0-3, cols 0-3: medium-probability cloud
        scl[10, 10] = 3  # window rows 12-13, cols 12-13: cloud shadow
    if cols is not None:  # a granule: data only in these window columns, 0 (nodata) elsewhere
        keep10 = np.zeros(32, bool)
        keep10[8 + cols.start : 8 + cols.stop] = True
        for a in (b02, b04):
            a[:, ~keep10] = 0
        keep20 = keep10[::2]
        b05[:, ~keep20] = 0
        scl[:, ~keep20] = 0
    item = _item(item_id, t, {"view:sun_elevation": 60.0, "view:sun_azimuth": 150.0})
    _add(
        item,
        "B02",
        _write_cog(d / f"{item_id}_B02.tif", b02, _utm_transform(10), "EPSG:32631", 0),
        S2_RB,
    )
    # No raster:bands on B04: the registry encoding (same numbers) applies.
    _add(
        item, "B04", _write_cog(d / f"{item_id}_B04.tif", b04, _utm_transform(10), "EPSG:32631", 0)
    )
    _add(
        item,
        "B05",
        _write_cog(d / f"{item_id}_B05.tif", b05, _utm_transform(20), "EPSG:32631", 0),
        S2_RB,
    )
    _add(
        item, "SCL", _write_cog(d / f"{item_id}_SCL.tif", scl, _utm_transform(20), "EPSG:32631", 0)
    )
    # An asset the registry does not know is ignored.
    _add(item, "thumbnail", str(d / "nothing.png"))
    return item


def build_catalog(root: Path) -> Path:
    d = root / "data"
    d.mkdir(parents=True)
    cat = pystac.Catalog("test", "hand-built")
    cols = {}
    for sid in ("sentinel2_l2a", "sentinel1", "landsat_c2l2", "cop_dem", "era5_land"):
        cols[sid] = pystac.Collection(
            sid,
            sid,
            pystac.Extent(
                pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])
            ),
        )
        cat.add_child(cols[sid])

    # Sentinel-2: added out of time order; C is two granules (west / east halves).
    s2 = cols["sentinel2_l2a"]
    s2.add_item(_s2_item(d, "S2_A", T_S2_A))
    s2.add_item(_s2_item(d, "S2_B", T_S2_B, cloud=False))
    s2.add_item(_s2_item(d, "S2_C_west", T_S2_C, cols=slice(0, 8), cloud=False))
    s2.add_item(_s2_item(d, "S2_C_east", T_S2_C + 5_000, cols=slice(8, 16), cloud=False))
    s2.add_item(_s2_item(d, "S2_OUT", T_S2_OUT))
    # An item whose bbox misses the window.
    s2.add_item(_item("S2_FAR", T_S2_A, {}, bbox=[10.0, 10.0, 10.1, 10.1]))

    # Sentinel-1: VV in hundredths of a dB.
    for item_id, t, state, vv in (
        ("S1_asc", _ms(2021, 3, 1), "ascending", -1000),
        ("S1_desc", _ms(2021, 3, 4), "descending", -1550),
    ):
        item = _item(item_id, t, {"view:incidence_angle": 38.5, "sat:orbit_state": state})
        a = np.full((32, 32), vv, np.int16)
        _add(
            item,
            "VV",
            _write_cog(d / f"{item_id}_VV.tif", a, _utm_transform(10), "EPSG:32631", -32768),
        )
        cols["sentinel1"].add_item(item)

    # Landsat: 30 m SR_B4 and QA_PIXEL with a cloud bit and a clear bit.
    ls = _item("LS_1", _ms(2021, 8, 1), {"view:sun_elevation": 50.0, "view:sun_azimuth": 140.0})
    sr = np.full((12, 12), 10000, np.uint16)  # 10000 * 2.75e-5 - 0.2 = 0.075
    qa = np.full((12, 12), 1 << 6, np.uint16)  # clear
    qa[3, 3] = (1 << 3) | (1 << 1)  # cloud + dilated cloud: window rows/cols 0-0 .. see test
    tr30 = Affine(30, 0, X0 - 90, 0, -30, Y0 + 90)
    _add(ls, "SR_B4", _write_cog(d / "LS_1_SR_B4.tif", sr, tr30, "EPSG:32631", 0))
    _add(ls, "QA_PIXEL", _write_cog(d / "LS_1_QA.tif", qa, tr30, "EPSG:32631", 1))
    cols["landsat_c2l2"].add_item(ls)

    # DEM: a plane rising 1 m per m eastward (30 m per 30 m pixel): slope 45 degrees.
    xs = X0 - 90 + 30 * (np.arange(12) + 0.5)
    dem = (100.0 + (xs - X0))[None, :].repeat(12, 0).astype(np.float32)
    item = _item("DEM_1", _ms(2000, 1, 1), {})
    _add(item, "elevation", _write_cog(d / "DEM.tif", dem, tr30, "EPSG:32631", float("nan")))
    cols["cop_dem"].add_item(item)

    # ERA5: EPSG:4326, 0.1 degree; temperature linear in lon, constant precipitation.
    lons = 2.0 + 0.1 * (np.arange(20) + 0.5)
    t2m = (280.0 + 10.0 * lons)[None, :].repeat(20, 0).astype(np.float32)
    tp = np.full((20, 20), 0.003, np.float32)
    tr_ll = Affine(0.1, 0, 2.0, 0, -0.1, 46.0)
    for m in (1, 2):
        item = _item(f"ERA5_{m}", _ms(2021, m, 1), {}, bbox=[2.0, 44.0, 4.0, 46.0])
        _add(item, "temperature_2m", _write_cog(d / f"t2m_{m}.tif", t2m + m, tr_ll, "EPSG:4326"))
        _add(item, "total_precipitation", _write_cog(d / f"tp_{m}.tif", tp, tr_ll, "EPSG:4326"))
        cols["era5_land"].add_item(item)

    cat.normalize_hrefs(str(root / "stac"))
    # Relative asset hrefs: a copied catalog reads its own files (and relative hrefs resolve).
    cat.make_all_asset_hrefs_relative()
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "stac" / "catalog.json"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_catalog(tmp_path_factory.mktemp("stac"))


@pytest.fixture(scope="module")
def catalog(built) -> stac.StacCatalog:
    return stac.StacCatalog.open(str(built))


@pytest.fixture
def fresh(built, tmp_path) -> Path:
    """A private copy of the built catalog, for tests that break files."""
    shutil.copytree(built.parent.parent, tmp_path / "copy")
    return tmp_path / "copy" / "stac" / "catalog.json"


# ---------------------------------------------------------------------------------- index


def test_catalog_index(catalog):
    assert catalog.sources == tuple(sorted(sensors.SOURCE_IDS))
    ids = [i.id for i in catalog.items("sentinel2_l2a")]
    assert ids == ["S2_B", "S2_A", "S2_FAR", "S2_C_west", "S2_C_east", "S2_OUT"]
    inside = catalog.items("sentinel2_l2a", START, END, WINDOW.lonlat_bounds())
    assert [i.id for i in inside] == ["S2_B", "S2_A", "S2_C_west", "S2_C_east"]
    # Static sources ignore the period.
    assert [i.id for i in catalog.items("cop_dem", START, END)] == ["DEM_1"]
    assert catalog.items("not_there") == []
    ref = catalog.item_refs("sentinel2_l2a", T_S2_A, T_S2_A + 1)[0]
    assert ref.epsg == EPSG and ref.time_ms == T_S2_A
    assert ref.assets["B02"].scale == 1e-4 and ref.assets["B02"].offset == -0.1
    assert ref.assets["B04"].scale is None


# ---------------------------------------------------------------------------------- sentinel-2


def test_s2_units_mask_resampling_geometry(catalog):
    sf = stac.read_source(catalog, "sentinel2_l2a", WINDOW, START, END)
    assert sf.values.shape == (3, 16, 16, 10)
    np.testing.assert_array_equal(sf.times_ms, [T_S2_B, T_S2_A, T_S2_C])
    b02, b04, b05 = sf.band("B02"), sf.band("B04"), sf.band("B05")
    a = 1  # frame S2_A
    # DN 2000 with scale 1e-4 and the L2A offset -0.1 -> 0.1.
    np.testing.assert_allclose(b02[a, 5, 5], 0.1, atol=1e-6)
    # B04 has no raster:bands: registry encoding; window col c is raster col 8 + c.
    np.testing.assert_allclose(
        b04[a, 7, :], (3000 + 10 * (8 + np.arange(16))) * 1e-4 - 0.1, atol=1e-6
    )
    # 20 m -> 10 m bilinear: centre of window col c is at raster-20 col 4.25 + 0.5 c, so
    # DN = 1000 + 100 * (3.75 + 0.5 c) = 1375 + 50 c.
    np.testing.assert_allclose(b05[a, 8, :], (1375 + 50 * np.arange(16)) * 1e-4 - 0.1, atol=1e-5)
    # Bands without assets are NaN.
    assert np.isnan(sf.band("B8A")).all()
    # Cloud (SCL 8) on rows/cols 0-3, shadow (SCL 3) on rows/cols 12-13, nodata at (15, 15).
    expect = np.ones((16, 16), bool)
    expect[0:4, 0:4] = False
    expect[12:14, 12:14] = False
    expect[15, 15] = False
    np.testing.assert_array_equal(sf.valid[a], expect)
    # Cloudy pixels keep their observed values; the nodata pixel is NaN.
    assert np.isfinite(b02[a, 0, 0]) and np.isnan(b02[a, 15, 15])
    np.testing.assert_allclose(sf.geometry["sun_zenith"], [30.0, 30.0, 30.0])
    np.testing.assert_allclose(sf.geometry["sun_azimuth"], [150.0, 150.0, 150.0])


def test_s2_granules_merge_into_one_frame(catalog):
    sf = stac.read_source(catalog, "sentinel2_l2a", WINDOW, T_S2_C, T_S2_C + 86_400_000)
    assert sf.num_frames == 1 and sf.times_ms[0] == T_S2_C
    expect = np.ones((16, 16), bool)
    expect[15, 15] = False
    np.testing.assert_array_equal(sf.valid[0], expect)
    # West columns from the west granule, east from the east one, same pattern in both.
    np.testing.assert_allclose(
        sf.band("B04")[0, 3], (3000 + 10 * (8 + np.arange(16))) * 1e-4 - 0.1, atol=1e-6
    )


def test_empty_period_and_far_window(catalog):
    sf = stac.read_source(catalog, "landsat_c2l2", WINDOW, _ms(2020, 1, 1), _ms(2020, 2, 1))
    assert sf.values.shape == (0, 16, 16, 6) and sf.valid.shape == (0, 16, 16)
    far = GridWindow(EPSG, X0 + 50_000, Y0, 16, 16)
    assert stac.read_source(catalog, "sentinel2_l2a", far, START, END).num_frames == 0


# ---------------------------------------------------------------------------------- others


def test_s1_db_and_geometry(catalog):
    sf = stac.read_source(catalog, "sentinel1", WINDOW, START, END)
    assert sf.num_frames == 2
    np.testing.assert_allclose(sf.band("VV")[:, 4, 4], [-10.0, -15.5], atol=1e-5)
    assert np.isnan(sf.band("VH")).all()
    assert sf.valid.all()
    np.testing.assert_allclose(sf.geometry["incidence_angle"], [38.5, 38.5])
    np.testing.assert_array_equal(sf.geometry["orbit_direction"], [1.0, 0.0])


def test_landsat_qa_bits(catalog):
    sf = stac.read_source(catalog, "landsat_c2l2", WINDOW, START, END)
    assert sf.num_frames == 1
    np.testing.assert_allclose(sf.band("SR_B4")[0, 8, 8], 0.075, atol=1e-6)
    # QA pixel (3, 3) spans x in [X0, X0 + 30), y in (Y0 - 30, Y0]: window rows/cols 0-2.
    expect = np.ones((16, 16), bool)
    expect[0:3, 0:3] = False
    np.testing.assert_array_equal(sf.valid[0], expect)
    np.testing.assert_allclose(sf.geometry["sun_zenith"], [40.0])


def test_dem_static_frame_and_slope(catalog):
    sf = stac.read_source(catalog, "cop_dem", WINDOW, START, END)
    assert sf.num_frames == 1 and sf.times_ms[0] == sensors.STATIC_TIME_MS
    # Bilinear on a plane is exact: elevation at pixel centre x is 100 + (x - X0).
    x, _ = WINDOW.pixel_centers()
    np.testing.assert_allclose(sf.band("elevation")[0], 100 + (x - X0), atol=1e-3)
    np.testing.assert_allclose(sf.band("slope")[0], 45.0, atol=1e-3)  # edges too (padded read)
    assert sf.valid.all()


def test_era5_reprojected_from_lonlat(catalog):
    sf = stac.read_source(catalog, "era5_land", WINDOW, START, END)
    np.testing.assert_array_equal(sf.times_ms, [_ms(2021, 1, 1), _ms(2021, 2, 1)])
    x, y = WINDOW.pixel_centers()
    lon, _ = utm_to_lonlat(x, y, EPSG)
    # Linear in lon, so bilinear interpolation of the 0.1 degree grid is exact.
    np.testing.assert_allclose(sf.band("temperature_2m")[0], 280 + 10 * lon + 1, atol=2e-3)
    np.testing.assert_allclose(sf.band("temperature_2m")[1], 280 + 10 * lon + 2, atol=2e-3)
    np.testing.assert_allclose(sf.band("total_precipitation"), 0.003, atol=1e-7)
    assert sf.valid.all()


def test_read_observations_all_sources(catalog):
    obs = stac.read_observations(catalog, WINDOW, START, END)
    assert set(obs.sources) == set(sensors.SOURCE_IDS)
    assert obs.errors == []
    assert obs.window == WINDOW
    assert [obs[s].num_frames for s in sensors.SOURCE_IDS] == [3, 2, 1, 1, 2]


def test_raster_bands_override_registry(fresh):
    # A catalog whose B02 says scale 2e-4, offset 0: DN 2000 -> 0.4.
    cat = pystac.Catalog.from_file(str(fresh))
    for item in cat.get_items(recursive=True):
        if item.id == "S2_A":
            item.assets["B02"].extra_fields["raster:bands"] = [{"scale": 2e-4, "offset": 0.0}]
    cat.save()
    sf = stac.read_source(
        stac.StacCatalog.open(str(fresh)), "sentinel2_l2a", WINDOW, T_S2_A, T_S2_A + 1
    )
    np.testing.assert_allclose(sf.band("B02")[0, 5, 5], 0.4, atol=1e-6)
    # nodata still comes from the registry (0): pixel (15, 15) stays missing.
    assert np.isnan(sf.band("B02")[0, 15, 15]) and not sf.valid[0, 15, 15]


# ---------------------------------------------------------------------------------- bad input


def _break(catalog_json: Path, item_id: str, key: str, how: str) -> str:
    cat = stac.StacCatalog.open(str(catalog_json))
    ref = next(r for s in cat.sources for r in cat.item_refs(s) if r.id == item_id)
    href = ref.assets[key].href
    assert href.startswith(str(catalog_json.parent.parent))  # never the shared copy
    if how == "delete":
        Path(href).unlink()
    else:
        Path(href).write_bytes(b"this is not a TIFF" * 100)
    return href


@pytest.mark.parametrize("how", ["delete", "corrupt"])
def test_bad_asset_raise_names_item_asset_href(fresh, how):
    href = _break(fresh, "S2_A", "B04", how)
    cat = stac.StacCatalog.open(str(fresh))
    with pytest.raises(stac.AssetReadError) as ei:
        stac.read_source(cat, "sentinel2_l2a", WINDOW, START, END)
    msg = str(ei.value)
    assert "S2_A" in msg and "B04" in msg and href in msg
    assert ei.value.item_id == "S2_A" and ei.value.asset_key == "B04"


@pytest.mark.parametrize("how", ["delete", "corrupt"])
def test_bad_asset_invalidate_marks_frame(fresh, how):
    _break(fresh, "S2_A", "B04", how)
    cat = stac.StacCatalog.open(str(fresh))
    errors: list[str] = []
    sf = stac.read_source(
        cat, "sentinel2_l2a", WINDOW, START, END, on_error="invalidate", errors=errors
    )
    np.testing.assert_array_equal(sf.times_ms, [T_S2_B, T_S2_A, T_S2_C])
    assert not sf.valid[1].any() and np.isnan(sf.values[1]).all()
    assert sf.valid[0].sum() == 255 and sf.valid[2].sum() == 255  # only (15, 15) is nodata
    assert len(errors) == 1 and errors[0].startswith("S2_A/B04: ")
    obs = stac.read_observations(cat, WINDOW, START, END)  # the default: invalidate
    assert obs.errors == errors
    assert obs["sentinel1"].valid.all()


def test_missing_quality_layer_is_an_error(fresh):
    cat = pystac.Catalog.from_file(str(fresh))
    for item in cat.get_items(recursive=True):
        if item.id == "S2_B":
            del item.assets["SCL"]
    cat.save()
    with pytest.raises(stac.AssetReadError, match="S2_B.*SCL"):
        stac.read_source(stac.StacCatalog.open(str(fresh)), "sentinel2_l2a", WINDOW, START, END)


def test_unknown_source_and_band(catalog):
    with pytest.raises(KeyError, match="sentinel3.*known sources"):
        stac.read_source(catalog, "sentinel3", WINDOW, START, END)
    with pytest.raises(KeyError, match="B99"):
        SourceFrames(
            "sentinel2_l2a",
            np.zeros((1, 2, 2, 1)),
            np.ones((1, 2, 2), bool),
            [0],
            band_names=("B99",),
        )


def test_slope_degrees_hand_computed():
    z = np.add.outer(np.zeros(5), 10.0 * np.arange(5))  # 10 m rise per 10 m pixel, eastward
    np.testing.assert_allclose(sensors.slope_degrees(z, 10.0), 45.0, atol=1e-6)
    z = np.add.outer(-np.sqrt(3) * 10.0 * np.arange(4), np.zeros(4))  # falling southward
    np.testing.assert_allclose(sensors.slope_degrees(z, 10.0), 60.0, atol=1e-6)


def test_item_without_band_assets_is_an_error(fresh):
    cat = pystac.Catalog.from_file(str(fresh))
    s2 = next(c for c in cat.get_children() if c.id == "sentinel2_l2a")
    item = _item("S2_visual_only", T_S2_A + 86_400_000, {})
    _add(item, "visual", "visual.tif")
    s2.add_item(item)
    cat.normalize_hrefs(str(fresh.parent))
    cat.save()
    errors: list[str] = []
    sf = stac.read_source(
        stac.StacCatalog.open(str(fresh)),
        "sentinel2_l2a",
        WINDOW,
        START,
        END,
        on_error="invalidate",
        errors=errors,
    )
    assert sf.num_frames == 4 and not sf.valid[2].any()
    assert len(errors) == 1 and errors[0].startswith("S2_visual_only/B02,B03")
    assert "no asset for any band" in errors[0]


# ---------------------------------------------------------------------------------- fast paths


def _assert_same_observations(a, b) -> None:
    """Two Observations hold identical arrays (NaN where NaN), frames, geometry, errors."""
    assert a.errors == b.errors and set(a.sources) == set(b.sources)
    for s in a.sources:
        fa, fb = a[s], b[s]
        np.testing.assert_array_equal(fa.times_ms, fb.times_ms, err_msg=s)
        assert fa.values.shape == fb.values.shape, s
        assert np.array_equal(fa.values, fb.values, equal_nan=True), s
        assert np.array_equal(fa.valid, fb.valid), s
        assert fa.geometry.keys() == fb.geometry.keys()
        for k in fa.geometry:
            assert np.array_equal(fa.geometry[k], fb.geometry[k], equal_nan=True), (s, k)


def _reference_read(monkeypatch, *args, **kwargs):
    """read_observations with every asset read alone through rasterio.warp.reproject."""
    with monkeypatch.context() as m:
        m.setattr(stac, "FAST_PATHS", False)
        return stac.read_observations(*args, **kwargs)


# Windows over the hand-built rasters (x in [X0 - 80, X0 + 240], y in [Y0 - 240, Y0 + 80] at
# 10 and 20 m; Landsat/DEM from X0 - 90): inside, across each corner (partly outside), odd
# 10 m offsets against the 20/30 m grids, and one holding every raster whole.
EDGE_WINDOWS = [
    WINDOW,
    GridWindow(EPSG, X0 - 120, Y0 + 110, 24, 20),
    GridWindow(EPSG, X0 + 200, Y0 - 200, 16, 16),
    GridWindow(EPSG, X0 + 210, Y0 + 60, 9, 5),
    GridWindow(EPSG, X0 + 10, Y0 - 30, 15, 13),
    GridWindow(EPSG, X0 - 130, Y0 + 130, 48, 48),
]


@pytest.mark.parametrize("window", EDGE_WINDOWS, ids=lambda w: f"{w.x0 - X0:+.0f},{w.y0 - Y0:+.0f}")
def test_fast_paths_match_reproject(catalog, monkeypatch, window):
    fast = stac.read_observations(catalog, window, START, END)
    assert fast["sentinel2_l2a"].num_frames > 0
    _assert_same_observations(fast, _reference_read(monkeypatch, catalog, window, START, END))


def test_fast_paths_skip_reproject_on_aligned_grids(catalog, monkeypatch):
    calls: list[tuple[str, tuple[int, ...]]] = []
    real = stac.reproject

    def counting(src, dst, **kwargs):
        calls.append((kwargs["src_crs"].to_string(), src.shape))
        return real(src, dst, **kwargs)

    monkeypatch.setattr(stac, "reproject", counting)
    # 10 m (B02, B04, VV) and 20 m (B05 bilinear, SCL nearest) UTM rasters: numpy only.
    stac.read_source(catalog, "sentinel2_l2a", WINDOW, START, END)
    stac.read_source(catalog, "sentinel1", WINDOW, START, END)
    assert calls == []
    # 30 m bilinear is left to GDAL; ERA5's two bands (one lon/lat grid, one NaN mask) go in
    # one call per item.
    stac.read_source(catalog, "landsat_c2l2", WINDOW, START, END)
    stac.read_source(catalog, "era5_land", WINDOW, START, END)
    assert [c for c, _ in calls] == ["EPSG:32631", "EPSG:4326", "EPSG:4326"]
    assert [s[0] for _, s in calls[1:]] == [2, 2]


def _random_case(rng, fx: int, fy: int, min_size: int = 1):
    """A random float32 source (extreme magnitudes, NaN holes) on a 10*fx x 10*fy m grid in
    UTM, and a 10 m destination grid on the same lattice, overlapping it anywhere."""
    h, w = (int(v) for v in rng.integers(min_size, 24, 2))
    pick = rng.integers(3)
    if pick == 0:  # S2-like reflectances
        src = rng.integers(0, 10000, (h, w)).astype(np.float32) * np.float32(1e-4)
        src += np.float32(-0.1)
    elif pick == 1:  # neighbours 10 orders of magnitude apart: the float64 sum rounds
        choices = np.array([1.4e-9, -3e-9, 0.3, 1e4, 2.5e-7, 7.0, -1e-30, 3e38], np.float32)
        src = rng.choice(choices, (h, w))
    else:
        src = rng.standard_normal((h, w)).astype(np.float32)
        src *= np.float32(10.0) ** rng.integers(-8, 8, (h, w)).astype(np.float32)
    src[rng.random((h, w)) < rng.choice([0.0, 0.1, 0.5])] = np.nan
    sx0, sy0 = 10.0 * int(rng.integers(-50_000, 50_000)), 10.0 * int(rng.integers(0, 900_000))
    col, row = int(rng.integers(-6, w * fx + 3)), int(rng.integers(-6, h * fy + 3))
    shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    src_t = Affine(10.0 * fx, 0, sx0, 0, -10.0 * fy, sy0)
    dst_t = Affine(10.0, 0, sx0 + 10 * col, 0, -10.0, sy0 - 10 * row)
    return src, src_t, dst_t, col, row, shape


def _gdal(src, src_t, dst_t, shape, resampling):
    from rasterio.warp import reproject

    out = np.full(shape, np.nan, src.dtype)
    reproject(
        src,
        out,
        src_transform=src_t,
        src_crs="EPSG:32631",
        dst_transform=dst_t,
        dst_crs="EPSG:32631",
        resampling=resampling,
        src_nodata=np.nan,
        dst_nodata=np.nan,
    )
    return out


@pytest.mark.parametrize("fx,fy", [(1, 1), (2, 2), (2, 1), (1, 2)])
def test_bilinear_aligned_is_gdal_bilinear(fx, fy):
    from rasterio.enums import Resampling

    rng = np.random.default_rng(100 * fx + fy)
    for _ in range(150):
        src, src_t, dst_t, col, row, shape = _random_case(rng, fx, fy, min_size=2)
        want = _gdal(src, src_t, dst_t, shape, Resampling.bilinear)
        got = stac._bilinear_aligned(src, col, row, fx, fy, shape)
        assert got.dtype == np.float32
        assert np.array_equal(got, want, equal_nan=True), (src, col, row, shape)


@pytest.mark.parametrize("fx,fy", [(1, 1), (2, 2), (3, 3), (6, 2)])
def test_nearest_aligned_is_gdal_nearest(fx, fy):
    from rasterio.enums import Resampling

    rng = np.random.default_rng(10 * fx + fy)
    for i in range(150):
        src, src_t, dst_t, col, row, shape = _random_case(rng, fx, fy)
        src = src.astype(np.float64) if i % 2 else src  # quality layers are read as float64
        want = _gdal(src, src_t, dst_t, shape, Resampling.nearest)
        got = stac._nearest_aligned(src, col, row, fx, fy, shape)
        assert got.dtype == src.dtype
        assert np.array_equal(got, want, equal_nan=True), (src, col, row, shape)


def test_aligned_grid_only_where_exact(built, tmp_path):
    from rasterio.enums import Resampling

    nearest, bilinear = Resampling.nearest, Resampling.bilinear
    data = np.ones((8, 8), np.float32)

    def grid(transform, crs="EPSG:32631", dst=WINDOW, resampling=bilinear):
        path = _write_cog(tmp_path / f"g{len(list(tmp_path.iterdir()))}.tif", data, transform, crs)
        with stac._DATASETS.dataset(path) as opened:
            return stac._aligned_grid(opened, dst, resampling)

    assert grid(_utm_transform(10)) == (8, 8, 1, 1)
    assert grid(_utm_transform(20)) == (8, 8, 2, 2)
    assert grid(Affine(20, 0, X0 - 80, 0, -10, Y0 + 80)) == (8, 8, 2, 1)
    # 30 m: nearest only (GDAL's bilinear weights there are not exact binary fractions).
    assert grid(_utm_transform(30), resampling=nearest) == (8, 8, 3, 3)
    assert grid(_utm_transform(30)) is None
    assert grid(_utm_transform(10), resampling=Resampling.cubic) is None
    assert grid(_utm_transform(10), crs="EPSG:32632") is None  # another CRS
    assert grid(_utm_transform(15), resampling=nearest) is None  # non-integer factor
    assert grid(_utm_transform(5), resampling=nearest) is None  # finer than the window
    assert grid(Affine(10, 0, X0 - 75, 0, -10, Y0 + 80), resampling=nearest) is None  # offset
    assert grid(Affine(10, 0.5, X0 - 80, 0.5, -10, Y0 + 80), resampling=nearest) is None
    assert grid(Affine(10, 0, X0 - 80, 0, 10, Y0 - 240), resampling=nearest) is None  # south-up
    odd = GridWindow(EPSG, X0 + 5, Y0, 16, 16)  # off the 10 m lattice: bilinear goes to GDAL
    assert grid(Affine(20, 0, X0 - 75, 0, -20, Y0 + 80), dst=odd) is None
    assert grid(Affine(20, 0, X0 - 75, 0, -20, Y0 + 80), dst=odd, resampling=nearest) == (
        8,
        8,
        2,
        2,
    )


# ---------------------------------------------------------------------------------- dataset cache


def _s2_b04(catalog_json: Path) -> str:
    cat = stac.StacCatalog.open(str(catalog_json))
    return cat.item_refs("sentinel2_l2a", T_S2_A, T_S2_A + 1)[0].assets["B04"].href


def _b04_row(catalog_json: Path) -> np.ndarray:
    cat = stac.StacCatalog.open(str(catalog_json))
    return stac.read_source(cat, "sentinel2_l2a", WINDOW, T_S2_A, T_S2_A + 1).band("B04")[0, 7]


@pytest.mark.parametrize("how", ["in_place", "rename"])
def test_cache_reopens_a_file_replaced_on_disk(fresh, how):
    href = _s2_b04(fresh)
    first = _b04_row(fresh)
    assert href in stac._DATASETS._open  # held open for the next read
    new = np.full((32, 32), 5000, np.uint16)  # same shape and dtype, other values
    if how == "in_place":
        _write_cog(Path(href), new, _utm_transform(10), "EPSG:32631", 0)
    else:
        tmp = _write_cog(
            Path(href).with_suffix(".new.tif"), new, _utm_transform(10), "EPSG:32631", 0
        )
        Path(tmp).replace(href)
    second = _b04_row(fresh)
    np.testing.assert_allclose(second, 0.4, atol=1e-6)
    assert not np.allclose(first, second)


def test_cache_corrupt_then_fixed(fresh):
    href = _s2_b04(fresh)
    good = Path(href).read_bytes()
    before = _b04_row(fresh)  # opened and cached
    Path(href).write_bytes(b"this is not a TIFF" * 100)
    cat = stac.StacCatalog.open(str(fresh))
    with pytest.raises(stac.AssetReadError) as ei:
        stac.read_source(cat, "sentinel2_l2a", WINDOW, START, END)
    assert ei.value.item_id == "S2_A" and ei.value.asset_key == "B04" and ei.value.href == href
    errors: list[str] = []
    sf = stac.read_source(
        cat, "sentinel2_l2a", WINDOW, START, END, on_error="invalidate", errors=errors
    )
    assert len(errors) == 1 and errors[0].startswith("S2_A/B04: ")
    assert not sf.valid[1].any() and np.isnan(sf.values[1]).all()
    assert href not in stac._DATASETS._open  # nothing stale kept
    Path(href).write_bytes(good)  # fixed: the rerun reads it again
    np.testing.assert_array_equal(_b04_row(fresh), before)


def test_cache_drops_a_handle_whose_read_failed(fresh, monkeypatch):
    # A remote-like href (no stat to compare): only a failed read makes the reader reopen it.
    monkeypatch.setattr(stac, "_file_stamp", lambda href: None)
    href = _s2_b04(fresh)
    before = _b04_row(fresh)
    entry = stac._DATASETS._open[href]
    real = entry.ds

    class Failing:
        closed = False

        def read(self, *args, **kwargs):
            raise rasterio.errors.RasterioIOError("connection reset")

        def close(self):
            self.closed = True
            real.close()

    entry.ds = stub = Failing()
    errors: list[str] = []
    cat = stac.StacCatalog.open(str(fresh))
    stac.read_source(
        cat, "sentinel2_l2a", WINDOW, T_S2_A, T_S2_A + 1, on_error="invalidate", errors=errors
    )
    assert errors == ["S2_A/B04: connection reset"]
    assert stub.closed and stac._DATASETS._open.get(href) is not entry
    np.testing.assert_array_equal(_b04_row(fresh), before)  # reopened
    entry = stac._DATASETS._open[href]
    entry.ds.close()  # closed behind the cache's back: looked up afresh, not spun on
    np.testing.assert_array_equal(_b04_row(fresh), before)


def test_cache_is_bounded_and_closes_evicted(catalog):
    old = stac._DATASETS.max_open
    try:
        stac.read_source(catalog, "sentinel2_l2a", WINDOW, START, END)
        held = list(stac._DATASETS._open.values())
        assert len(held) > 3
        stac.set_max_open_datasets(3)  # the least recently used are closed now
        assert list(stac._DATASETS._open.values()) == held[-3:]
        assert all(e.ds.closed for e in held[:-3]) and not any(e.ds.closed for e in held[-3:])
        sf = stac.read_source(catalog, "sentinel2_l2a", WINDOW, START, END)
        assert len(stac._DATASETS) == 3 and sf.num_frames == 3
    finally:
        stac.set_max_open_datasets(old)


# rasterio's reproject of in-memory arrays warns so from worker threads (the reader did so
# before the cache too); the results are what one thread gets.
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_cache_threads_share_it_safely(catalog):
    from concurrent.futures import ThreadPoolExecutor

    want = [stac.read_observations(catalog, w, START, END) for w in EDGE_WINDOWS]
    old = stac._DATASETS.max_open
    try:
        stac.set_max_open_datasets(4)  # far below the working set: constant eviction
        with ThreadPoolExecutor(4) as pool:
            jobs = [w for w in EDGE_WINDOWS for _ in range(2)]
            got = list(pool.map(lambda w: stac.read_observations(catalog, w, START, END), jobs))
    finally:
        stac.set_max_open_datasets(old)
    for i, obs in enumerate(got):
        _assert_same_observations(obs, want[i // 2])


def test_clear_dataset_cache(catalog):
    stac.read_source(catalog, "sentinel1", WINDOW, START, END)
    held = list(stac._DATASETS._open.values())
    assert held
    stac.clear_dataset_cache()
    assert len(stac._DATASETS) == 0 and all(e.ds.closed for e in held)


# ---------------------------------------------------------------------------------- simulated


@pytest.fixture(scope="module")
def demo_sim(tmp_path_factory) -> stac.StacCatalog:
    from beam_jobs import simulate

    out = tmp_path_factory.mktemp("demo_sim")
    simulate.run(
        ["--out", str(out), "--sim-region", "demo", "--size-km", "0.64", "--years", "2023"]
        + ["--seed", "5", "--cloud-cover", "0.4"]
    )
    return stac.StacCatalog.open(str(out / "catalog.json"))


@pytest.mark.slow
def test_fast_paths_match_reproject_on_demo_catalog(demo_sim, monkeypatch):
    ref = demo_sim.item_refs("sentinel2_l2a")[0]
    with rasterio.open(ref.assets["B04"].href) as ds:  # 10 m
        t, w, h, epsg = ds.transform, ds.width, ds.height, ds.crs.to_epsg()
    start, end = _ms(2023, 1, 1), _ms(2024, 1, 1)
    windows = [
        GridWindow(epsg, t.c + 160, t.f - 160, 32, 32),  # inside
        GridWindow(epsg, t.c - 120, t.f + 90, 24, 20),  # across the top-left corner
        GridWindow(epsg, t.c + 10 * (w - 13), t.f - 10 * (h - 9), 30, 17),  # bottom-right
        GridWindow(epsg, t.c + 10 * (w // 2) + 10, t.f - 10 * (h - 3), 21, 11),  # bottom edge
    ]
    for window in windows:
        fast = stac.read_observations(demo_sim, window, start, end)
        assert {s: fast[s].num_frames > 0 for s in fast.sources} == dict.fromkeys(
            sensors.SOURCE_IDS, True
        )
        _assert_same_observations(fast, _reference_read(monkeypatch, demo_sim, window, start, end))
