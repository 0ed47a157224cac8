"""A real region end to end: the WorldCereal Belgium 2021 cube written as provider-style COGs +
STAC (beam_jobs/io/worldcereal_stac.py), read back through the provider profiles, embedded with
the shipped tiny model, and the outputs checked by readers nobody here wrote.

Expected numbers were looked up by hand: DN values in the NetCDF with h5py (int16 viewed as
uint16), reflectance = DN / 10000, Sentinel-1 dB = 20 log10(DN) - 83, asset keys and fields
from the Earth Search v1 and Planetary Computer documents in shared/stac_fixtures. Pixel
(row, col) of the cube's 100 x 100 window: (10, 75) lies in the field at the top right (bare
orange in the July composite), (50, 88) in the large green field on the right, (40, 30) in the
village the road crosses (scripts/real_region.py draws the place).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

import duckdb
import geopandas
import h5py
import numpy as np
import pystac
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from beam_jobs import embed, inference
from beam_jobs.io import stac, worldcereal_stac
from beam_jobs.io.realdata import WORLDCEREAL_WINDOW
from schemas import embedding

REPO = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("real_region", REPO / "scripts" / "real_region.py")
real_region = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(real_region)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LABEL = "20201101_20211101"
TILE = "32631_207_1753"  # --tile-size 320: one 3.2 km tile holds the whole 1 km window
MONTHS = [dt.datetime(2020, 11, 1, tzinfo=dt.UTC), dt.datetime(2020, 12, 1, tzinfo=dt.UTC)] + [
    dt.datetime(2021, m, 1, tzinfo=dt.UTC) for m in range(1, 11)
]
JUNE = 7  # index of the 2021-06 composite
ES_KEYS = {"blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16",
           "swir22", "scl"}  # fmt: skip


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


@pytest.fixture(scope="module")
def nc(realdata_dir) -> Path:
    return realdata_dir / "worldcereal_belgium_2021" / "inputs.nc"


@pytest.fixture(scope="module")
def raw(nc):
    """The NetCDF's stored values, read with h5py (no xarray, no project code)."""
    with h5py.File(nc) as f:
        return {n: f[n][()].view(np.uint16) for n in ("S2-L2A-B04", "S2-L2A-B08", "S1-SIGMA0-VV")}


@pytest.fixture(scope="module")
def catalog(nc, tmp_path_factory) -> Path:
    return worldcereal_stac.write_worldcereal_catalog(nc, tmp_path_factory.mktemp("be") / "cat")


@pytest.fixture(scope="module")
def embedded(catalog, shipped_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("be_emb") / "emb"
    argv = ["--stac", str(catalog), "--aoi", str(catalog.parent / "aoi.geojson"),
            "--period", worldcereal_stac.PERIOD, "--model", str(shipped_bundle),
            "--tile-size", "320", "--chip-size", "32", "--halo", "8", "--out", str(out)]  # fmt: skip
    inference.clear_bundle_cache()
    assert embed.run(argv) == 0
    inference.clear_bundle_cache()
    return out


def test_catalog_items_are_written_as_the_providers_write_them(catalog):
    root = pystac.read_file(str(catalog))
    items = {c.id: sorted(c.get_items(), key=lambda i: i.datetime) for c in root.get_children()}
    assert sorted(items) == ["cop-dem-glo-30", "sentinel-1-rtc", "sentinel-2-l2a"]
    s2, s1 = items["sentinel-2-l2a"], items["sentinel-1-rtc"]
    assert [i.datetime for i in s2] == MONTHS == [i.datetime for i in s1]
    # pystac migrates projection v1.1 to v2.0 on reading: proj:epsg -> proj:code.
    assert s2[JUNE].properties["proj:code"] == "EPSG:32631"
    assert {k for i in s2 for k in i.assets} == ES_KEYS

    def on_disk(item: pystac.Item) -> dict:  # the JSON as written, before any migration
        return json.loads(Path(item.get_self_href()).read_text())

    june = on_disk(s2[JUNE])
    props = june["properties"]
    assert props["start_datetime"] == "2021-06-01T00:00:00+00:00"
    assert props["end_datetime"] == "2021-06-30T23:59:59+00:00"
    assert props["earthsearch:boa_offset_applied"] is True
    assert props["proj:epsg"] == 32631 and props["eo:cloud_cover"] == 0
    assert on_disk(s2[1])["properties"]["eo:cloud_cover"] == 100.0  # December: no data
    red = june["assets"]["red"]
    assert red["raster:bands"] == [{"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                                    "spatial_resolution": 10, "scale": 0.0001,
                                    "offset": -0.1}]  # fmt: skip
    assert red["proj:transform"] == [10.0, 0.0, 664000.0, 0.0, -10.0, 5612120.0]
    assert red["href"] == "./B04.tif" and june["assets"]["nir08"]["href"] == "./B08.tif"
    assert june["assets"]["scl"]["raster:bands"][0]["nodata"] == 0
    vv = on_disk(s1[JUNE])
    assert vv["properties"]["sar:polarizations"] == ["VV", "VH"]
    assert vv["properties"]["proj:transform"][6:] == [0.0, 0.0, 1.0]  # 9 numbers, as PC RTC
    assert vv["assets"]["vv"]["raster:bands"][0]["nodata"] == -32768
    (dem,) = items["cop-dem-glo-30"]
    assert set(dem.assets) == {"data"} and on_disk(dem)["properties"]["proj:epsg"] == 32631
    west, south, east, north = june["bbox"]
    assert 5.31 < west < east < 5.34 and 50.62 < south < north < 50.64  # Hesbaye, Belgium


def test_profiles_pick_provider_and_rule_without_a_flag(catalog):
    cat = stac.StacCatalog.open(str(catalog))
    assert cat.sources == ("cop_dem", "sentinel1", "sentinel2_l2a") and not cat.skipped
    s2 = cat.item_refs("sentinel2_l2a")[JUNE]
    assert s2.provider == "earth-search-v1" and s2.epsg == 32631
    red = s2.assets["B04"]
    # The flag wins over raster:bands' -0.1: no offset, as the composites need none.
    assert (red.scale, red.offset, red.nodata) == (0.0001, 0.0, 0.0)
    assert red.rule == "raster_bands+s2_boa_offset:flag"
    assert s2.assets["SCL"].href.endswith("SCL.tif")
    s1 = cat.item_refs("sentinel1")[JUNE]
    assert s1.provider == "planetary-computer" and s1.assets["VV"].to_db
    assert s1.assets["VV"].nodata == -32768
    assert cat.item_refs("cop_dem")[0].provider == "earth-search-v1"


def test_decoded_pixels_are_the_netcdf_values(catalog, raw):
    cat = stac.StacCatalog.open(str(catalog))
    start, end = _ms(MONTHS[0]), _ms(dt.datetime(2021, 11, 1, tzinfo=dt.UTC))
    obs = stac.read_observations(cat, WORLDCEREAL_WINDOW, start, end)
    s2 = obs["sentinel2_l2a"]
    # December and January are all no data (65535 -> 0 -> SCL 0): no frame at all.
    assert [dt.datetime.fromtimestamp(t / 1000, dt.UTC) for t in s2.times_ms] == (
        MONTHS[:1] + MONTHS[3:]
    )
    june = JUNE - 2
    # Hand-read DNs: June B04 218 and B08 4522 at (10, 75); B04 2274 at (50, 88);
    # November B04 1106 at (10, 75).
    assert raw["S2-L2A-B04"][JUNE, 10, 75] == 218 and raw["S2-L2A-B08"][JUNE, 10, 75] == 4522
    assert raw["S2-L2A-B04"][JUNE, 50, 88] == 2274 and raw["S2-L2A-B04"][0, 10, 75] == 1106
    assert s2.band("B04")[june, 10, 75] == pytest.approx(0.0218, abs=1e-6)
    assert s2.band("B08")[june, 10, 75] == pytest.approx(0.4522, abs=1e-6)
    assert s2.band("B8A")[june, 10, 75] == pytest.approx(0.4522, abs=1e-6)  # the stand-in
    assert s2.band("B04")[june, 50, 88] == pytest.approx(0.2274, abs=1e-6)
    assert s2.band("B04")[0, 10, 75] == pytest.approx(0.1106, abs=1e-6)
    # Every valid value: DN / 10000 to float32 precision; DN 0 (8 values in the file) reads
    # as Earth Search's no data, so 5 pixel-frames are not valid, and one more holds B04 DN
    # 16008 (1.6008, above the registry's physical range of reflectance, -0.1..1.6): 6.
    dn = raw["S2-L2A-B04"][[0, *range(3, 12)]]
    np.testing.assert_allclose(s2.band("B04")[s2.valid], dn[s2.valid] / 10000.0, atol=1e-6)
    assert (~s2.valid).sum() == 6 and (dn[~s2.valid] == 0).any() and dn.max() == 16008
    # Sentinel-1: written as linear power, read back in dB. VV DN 3495 at (10, 75) in June:
    # 20 log10(3495) - 83 = -12.1311 dB.
    s1 = obs["sentinel1"]
    assert raw["S1-SIGMA0-VV"][JUNE, 10, 75] == 3495
    assert s1.band("VV")[JUNE, 10, 75] == pytest.approx(-12.1311, abs=1e-3)
    vv_db = 20 * np.log10(raw["S1-SIGMA0-VV"].astype(np.float64)) - 83
    np.testing.assert_allclose(s1.band("VV"), vv_db, atol=1e-4)
    assert obs["cop_dem"].band("elevation")[0, 10, 75] == 167.0  # metres, as stored
    # The COG itself: stored DN as in the NetCDF, nodata 0; SCL 4 where clear, 0 in December.
    june_dir = catalog.parent / "sentinel-2-l2a" / "S2_WORLDCEREAL_31N_20210601_L2A_composite"
    with rasterio.open(june_dir / "B04.tif") as ds:
        assert ds.nodata == 0 and ds.crs.to_epsg() == 32631 and ds.read(1)[10, 75] == 218
    with rasterio.open(june_dir / "SCL.tif") as ds:
        assert (ds.read(1) == 4).all()
    dec = catalog.parent / "sentinel-2-l2a" / "S2_WORLDCEREAL_31N_20201201_L2A_composite"
    with rasterio.open(dec / "SCL.tif") as ds:
        assert (ds.read(1) == 0).all()


@pytest.mark.slow
def test_embed_writes_valid_cog_geoparquet_and_stac(embedded):
    d = embedded / LABEL / "31N"
    tif = d / f"{TILE}.tif"
    ok, errors, _ = cog_validate(str(tif))
    assert ok, errors
    with rasterio.open(tif) as ds:
        assert ds.count == 64 and ds.crs.to_epsg() == 32631 and ds.nodata == -128
        emb = embedding.dequantize(ds.read().transpose(1, 2, 0))
        # The tile starts at x 662400, y 5612800: the cube is rows 68..167, cols 160..259.
        assert ds.transform.c == 662400.0 and ds.transform.f == 5612800.0
    valid = embedding.valid_mask(emb)
    inside = valid[68:168, 160:260]
    # Stated floor: every pixel of the cube embedded (all of them have 10 clear months).
    assert inside.mean() == 1.0 and valid.sum() == inside.sum() == 10_000
    norms = np.linalg.norm(emb[valid], axis=-1)
    assert np.abs(norms - 1).max() < 0.02  # unit vectors, to int8 quantization
    parquet = str(d / f"{TILE}.parquet")
    gdf = geopandas.read_parquet(parquet)
    assert len(gdf) == 10_000 and gdf.crs.to_epsg() == 32631
    minx, miny, maxx, maxy = gdf.total_bounds
    assert 664000 <= minx < maxx <= 665000 and 5611120 <= miny < maxy <= 5612120
    rows, cols, n = duckdb.sql(
        f"SELECT min(row), min(col), count(*) FROM read_parquet('{parquet}')"
    ).fetchall()[0]
    assert (rows, cols, n) == (68, 160, 10_000)
    coll = pystac.read_file(str(embedded / "collection.json"))
    (item,) = coll.get_items(recursive=True)
    assert item.id == f"{TILE}_{LABEL}"
    assert Path(item.assets["embedding"].get_absolute_href()).samefile(tif)
    manifest = json.loads((embedded / "manifest.json").read_text())
    assert manifest["counts"]["pixels_valid"] == 10_000
    assert (embedded / "deadletter.jsonl").read_text() == ""


def _cos(v: np.ndarray, a: tuple[slice, slice], b: tuple[slice, slice]) -> float:
    x, y = v[a].reshape(-1, v.shape[-1]), v[b].reshape(-1, v.shape[-1])
    return float(np.median(x @ y.T))


@pytest.mark.slow
def test_embeddings_follow_the_fields_of_the_place(embedded):
    """Real structure: neighbours and pixels of one field agree; distant pixels and different
    fields less so (floors stated below; measured 0.98 / 0.72, 0.99 / 0.97 / 0.86 / 0.66)."""
    with rasterio.open(embedded / LABEL / "31N" / f"{TILE}.tif") as ds:
        v = embedding.dequantize(ds.read().transpose(1, 2, 0))[68:168, 160:260]
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    neighbours = np.concatenate(
        [(v[:, 1:] * v[:, :-1]).sum(-1).ravel(), (v[1:] * v[:-1]).sum(-1).ravel()]
    )
    rng = np.random.default_rng(0)
    p = rng.integers(0, 100, (20_000, 4))
    p = p[np.hypot(p[:, 0] - p[:, 2], p[:, 1] - p[:, 3]) >= 50]  # at least 500 m apart
    far = (v[p[:, 0], p[:, 1]] * v[p[:, 2], p[:, 3]]).sum(-1)
    assert np.median(neighbours) >= 0.95
    assert np.median(far) <= np.median(neighbours) - 0.15
    orange = np.s_[6:16, 70:90]  # the field at the top right (bare in July)
    green = np.s_[40:70, 84:96]  # the large green field on the right
    village = np.s_[35:45, 25:35]
    assert _cos(v, orange, orange) >= 0.95 and _cos(v, green, green) >= 0.95
    assert _cos(v, orange, green) <= min(_cos(v, orange, orange), _cos(v, green, green)) - 0.05
    assert max(_cos(v, orange, village), _cos(v, green, village)) <= 0.8


@pytest.mark.slow
def test_quick_look_png(embedded, nc, tmp_path, capsys):
    png = tmp_path / "belgium.png"
    assert real_region.main(["show", str(embedded), str(nc), str(png)]) == 0
    assert "10000 of 10000 px embedded" in capsys.readouterr().out
    with rasterio.open(png) as ds:  # PNG through GDAL: two panels side by side
        assert ds.count in (3, 4) and ds.width > ds.height > 300
    rgb = real_region.true_colour(str(nc))
    assert rgb.shape == (100, 100, 3) and 0 <= rgb.min() < 0.05 and 0.95 < rgb.max() <= 1
    with pytest.raises(ValueError, match="no composite for 2022-07"):
        real_region.true_colour(str(nc), "2022-07")
