"""`earthembed simulate` end to end on a tiny region (FnApiRunner)."""

from __future__ import annotations

import json
import os

import geopandas as gpd
import numpy as np
import pystac
import pytest
import rasterio
from apache_beam.metrics.metric import MetricsFilter

import simulation as sim
from beam_jobs import runner, simulate
from beam_jobs.io.cog import validate_cog
from schemas import sensors
from simulation import render

ARGS = ["--size-km", "1.28", "--years", "2023", "--cloud-cover", "0.3", "--seed", "7"]


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    assert simulate.run(["--out", str(out), *ARGS]) == 0
    return out


@pytest.fixture(scope="module")
def catalog(catalog_dir):
    return pystac.Catalog.from_file(str(catalog_dir / "catalog.json"))


def test_sim_params_round_trip(catalog_dir):
    region = sim.load_region(catalog_dir)
    args, _ = simulate.parse_args(["--out", "x", *ARGS])
    assert region == simulate.region_from_args(args)
    doc = json.loads((catalog_dir / "sim_params.json").read_text())
    assert doc["options"]["seed"] == 7 and doc["options"]["cloud_cover"] == 0.3
    assert doc["software"]["name"] == "earthembed" and doc["software"]["version"]
    assert doc["acquisitions"]["sentinel2_l2a"] == 73


def test_catalog_layout_items_and_properties(catalog_dir, catalog):
    region = sim.load_region(catalog_dir)
    cols = {c.id: c for c in catalog.get_children()}
    assert set(cols) == set(sensors.SOURCE_IDS)
    for source, col in cols.items():
        items = list(col.get_items())
        assert len(items) == len(render.acquisition_times(region, source))
        sensor = sensors.get_sensor(source)
        expected = [b.name for b in sensor.stored_bands]
        if sensor.mask.band:
            expected.append(sensor.mask.band)
        for item in items:
            assert list(item.assets) == expected
            assert item.datetime is not None
    # On disk: projection v1.1 names, relative hrefs, STAC geometry names.
    s2_item = next(cols["sentinel2_l2a"].get_items())
    raw = json.loads(open(s2_item.get_self_href()).read())
    assert raw["properties"]["proj:epsg"] == 32631
    assert raw["properties"]["proj:shape"] == [128, 128]
    assert raw["properties"]["proj:transform"][:3] == [10.0, 0.0, region.windows[0].x0]
    assert 0 < raw["properties"]["view:sun_elevation"] < 90
    assert 0 <= raw["properties"]["view:sun_azimuth"] < 360
    assert raw["assets"]["B02"]["href"] == "./B02.tif"
    b05 = raw["assets"]["B05"]
    assert b05["raster:bands"] == [
        {
            "data_type": "uint16",
            "scale": 0.0001,
            "offset": -0.1,
            "nodata": 0,
            "spatial_resolution": 20.0,
            "unit": "reflectance",
        }
    ]
    assert raw["assets"]["SCL"]["raster:bands"][0]["nodata"] == 0
    s1 = json.loads(open(next(cols["sentinel1"].get_items()).get_self_href()).read())
    assert s1["properties"]["sat:orbit_state"] in ("ascending", "descending")
    assert 29 <= s1["properties"]["view:incidence_angle"] <= 46
    assert s1["assets"]["VV"]["raster:bands"][0]["scale"] == 0.01
    era = json.loads(open(next(cols["era5_land"].get_items()).get_self_href()).read())
    assert era["properties"]["proj:epsg"] == 4326
    assert era["assets"]["temperature_2m"]["raster:bands"][0]["nodata"] == "nan"
    # catalog.json is written after every item.
    latest_item = max(os.path.getmtime(i.get_self_href()) for i in catalog.get_all_items())
    assert os.path.getmtime(catalog_dir / "catalog.json") >= latest_item


def test_assets_are_valid_cogs_and_decode_to_truth(catalog_dir, catalog):
    region = sim.load_region(catalog_dir)
    for col in catalog.get_children():
        item = next(iter(col.get_items()))
        for asset in item.assets.values():
            ok, errors, _ = validate_cog(asset.get_absolute_href())
            assert ok, (item.id, errors)
    s2 = sorted(catalog.get_child("sentinel2_l2a").get_items(), key=lambda i: i.id)
    item = min(s2[20:40], key=lambda i: i.properties["eo:cloud_cover"])
    t = int(item.datetime.timestamp() * 1000)
    enc = sensors.get_sensor("sentinel2_l2a").band("B08").encoding
    with rasterio.open(item.assets["B08"].get_absolute_href()) as src:
        b08 = enc.decode(src.read(1))
        assert src.crs.to_epsg() == 32631
    with rasterio.open(item.assets["SCL"].get_absolute_href()) as src:
        scl = src.read(1)
    clear = np.repeat(np.repeat(np.isin(scl, (4, 5, 6)), 2, 0), 2, 1)[
        : b08.shape[0], : b08.shape[1]
    ]
    truth = sim.clear_sky_truth(region, "sentinel2_l2a", t, region.windows[0])[..., 6]
    assert clear.mean() > 0.5
    assert abs(float(np.median(b08[clear] - truth[clear]))) < 0.002


def test_labels(catalog_dir):
    region = sim.load_region(catalog_dir)
    with rasterio.open(catalog_dir / "labels" / "landcover_2023.tif") as src:
        lc = src.read(1)
        assert src.dtypes[0] == "uint8" and src.crs.to_epsg() == 32631
        assert src.res == (10.0, 10.0)
    np.testing.assert_array_equal(lc, sim.landcover(region, region.windows[0], 2023))
    ok, errors, _ = validate_cog(catalog_dir / "labels" / "landcover_2023.tif")
    assert ok, errors
    pts = gpd.read_parquet(catalog_dir / "labels" / "points_2023.parquet")
    assert pts.crs.to_epsg() == 4326
    assert {"geometry", "class_id", "class_name"} <= set(pts.columns)
    assert set(pts.class_id) == set(np.unique(lc).tolist())
    changes = gpd.read_parquet(catalog_dir / "labels" / "changes.parquet")
    assert {"event_type", "year_from", "year_to", "class_from", "class_to"} <= set(changes.columns)
    assert len(changes) == 0  # a single year has no transitions


def test_counters_and_multi_tile_granules(tmp_path):
    args, beam_args = simulate.parse_args(
        [
            "--out",
            str(tmp_path),
            "--size-km",
            "0.64",
            "--tile-size",
            "32",
            "--years",
            "2023",
            "--sources",
            "cop_dem,era5_land",
        ]
    )
    region = simulate.region_from_args(args)
    granules = region.granules()
    assert len(granules) > 1
    p = runner.create_pipeline(runner.pipeline_options(beam_args))
    simulate.build_pipeline(p, region, str(tmp_path))
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("simulate"))["counters"]
    }
    assert counters["items_written"] == len(granules) + 12
    assert counters["assets_written"] == len(granules) + 24
    assert counters["label_files_written"] == 3
    cat = pystac.Catalog.from_file(str(tmp_path / "catalog.json"))
    dem_ids = sorted(i.id for i in cat.get_child("cop_dem").get_items())
    assert dem_ids == sorted(f"cop_dem_{t.id}" for t, _ in granules)


def test_bad_options_exit_with_a_message(tmp_path):
    with pytest.raises(SystemExit, match="--bbox needs 4"):
        simulate.run(["--out", str(tmp_path), "--bbox", "1,2,3"])
    with pytest.raises(SystemExit, match="cloud-cover"):
        simulate.run(["--out", str(tmp_path), "--cloud-cover", "2"])
    assert not (tmp_path / "catalog.json").exists()
