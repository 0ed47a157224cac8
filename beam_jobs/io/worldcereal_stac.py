"""The real WorldCereal Belgium 2021 cube written out as COGs with a provider-style STAC catalog.

`write_worldcereal_catalog(inputs.nc, out)` writes a self-contained static catalog whose items
look like the ones real catalogs publish, so `embed` reads real pixels through the provider
profiles (beam_jobs/io/providers.py) exactly as it would read Earth Search or Planetary
Computer, with no --provider flag (each item says whose style it is):

| collection | style | assets | values |
|---|---|---|---|
| `sentinel-2-l2a` | Earth Search v1 | `blue green red rededge1..3 nir nir08 swir16 swir22 scl` | uint16 DN, nodata 0 |
| `sentinel-1-rtc` | Planetary Computer | `vv vh` | float32 gamma0 linear power, nodata -32768 |
| `cop-dem-glo-30` | Earth Search v1 | `data` | float32 metres |

One item per monthly composite (`datetime` = the composite's label, the first day of the
month, with `start_datetime`/`end_datetime` spanning the month), 100 x 100 px at 10 m in
EPSG:32631, `proj:epsg` and `proj:transform` as each provider states them (6 numbers on the
Sentinel-2 assets, 9 on the Sentinel-1 item, 6 on the DEM item).

Decisions, each forced by the cube or by the profile:
- Sentinel-2 values are the file's DN as stored (reflectance x 10000, no +1000 offset: the
  composites are harmonized); 65535 (no data: the December and January composites) becomes 0,
  Earth Search's nodata, so the file's DN 0 (8 values in B02-B04) read as no data too, as they
  would on Earth Search. Items carry `earthsearch:boa_offset_applied: true` and
  `raster:bands` scale 0.0001, offset -0.1, exactly as Earth Search v1's items since 2022 do:
  the flag says the pixels need no offset, so the profile decodes DN * 0.0001 (rule
  `s2_boa_offset:flag`); a reader applying `raster:bands` alone would subtract 0.1 (Earth
  Search's known trap, which this catalog reproduces on purpose).
- The Earth Search profile reads the quality layer `scl` and treats a missing asset as an
  error (never silent), and the cube has no SCL: `SCL.tif` is derived from the no-data mask,
  4 (vegetation, clear) where every band has data and 0 (no data) elsewhere.
- The cube has no B8A, and the profile expects `nir08`: the `nir08` asset points at `B08.tif`
  (B08, 842 nm, is the nearest band to B8A, 865 nm), titled as the stand-in it is.
- Sentinel-1: WorldCereal stores dB = 20 log10(DN) - 83 (README in shared/realdata); written
  as linear power 10^(dB / 10) = DN^2 * 10^-8.3 in Planetary Computer's `sentinel-1-rtc` form,
  which its profile turns back into dB (rule `power_to_db`). DN 0 and 65535 -> -32768.
- DEM: elevation (m) as float32 in `cop-dem-glo-30` Earth Search form (the reader derives
  slope from it; the file's slope layer is not written). Its items carry an
  `earthsearch:payload_id`, the property that tells Earth Search's DEM items from Planetary
  Computer's.
- AgERA5 is left out: no provider profile decodes a monthly climate raster (Planetary
  Computer's era5-pds profile says why).

Also written: `aoi.geojson`, the cube's window in lon/lat 1 m inside its edges (so `embed`'s
10 m grid snaps onto exactly the cube's pixels).
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import shapely
import xarray as xr

from beam_jobs.io.cog import write_cog
from beam_jobs.io.realdata import WORLDCEREAL_WINDOW, wc_raw, wc_window
from schemas.grid import utm_to_lonlat

__all__ = ["PERIOD", "S2_ASSETS", "write_worldcereal_catalog"]

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
# The composites' year: the embed period that covers all twelve of them.
PERIOD = "2020-11-01/2021-11-01"
_NODATA_IN = 65535
_RAST = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
_PROJ = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
_EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
_SAR = "https://stac-extensions.github.io/sar/v1.0.0/schema.json"
_EXT = {
    "sentinel-2-l2a": [_EO, _RAST, _PROJ],
    "sentinel-1-rtc": [_SAR, _RAST, _PROJ],
    "cop-dem-glo-30": [_RAST, _PROJ],
}

# Earth Search v1 asset key -> (file band, file name, title, centre wavelength um, FWHM um).
S2_ASSETS: dict[str, tuple[str, str, str, float, float]] = {
    "blue": ("B02", "B02.tif", "Blue (band 2) - 10m", 0.49, 0.098),
    "green": ("B03", "B03.tif", "Green (band 3) - 10m", 0.56, 0.045),
    "red": ("B04", "B04.tif", "Red (band 4) - 10m", 0.665, 0.038),
    "rededge1": ("B05", "B05.tif", "Red Edge 1 (band 5) - 20m", 0.704, 0.019),
    "rededge2": ("B06", "B06.tif", "Red Edge 2 (band 6) - 20m", 0.74, 0.018),
    "rededge3": ("B07", "B07.tif", "Red Edge 3 (band 7) - 20m", 0.783, 0.028),
    "nir": ("B08", "B08.tif", "NIR 1 (band 8) - 10m", 0.842, 0.145),
    "nir08": (
        "B08",
        "B08.tif",
        "NIR 2 (band 8A) stand-in: B08 (the composite has no B8A)",
        0.865,
        0.033,
    ),  # fmt: skip
    "swir16": ("B11", "B11.tif", "SWIR 1 (band 11) - 20m", 1.61, 0.143),
    "swir22": ("B12", "B12.tif", "SWIR 2 (band 12) - 20m", 2.19, 0.242),
}
_SCL_VEGETATION = 4  # SCL class: clear vegetation
_S1_DB_OFFSET = 83.0  # WorldCereal: dB = 20 log10(DN) - 83
_RTC_NODATA = -32768.0


def _times(ds: xr.Dataset) -> list[dt.datetime]:
    stamps = ds["t"].values.astype("datetime64[s]").astype(np.int64)
    return [dt.datetime.fromtimestamp(int(s), tz=dt.UTC) for s in stamps]


def _month_end(t: dt.datetime) -> dt.datetime:
    days = calendar.monthrange(t.year, t.month)[1]
    return t + dt.timedelta(days=days) - dt.timedelta(seconds=1)


def _geometry() -> tuple[dict[str, Any], list[float]]:
    """The cube's footprint in lon/lat (GeoJSON, bbox)."""
    box = shapely.box(*WORLDCEREAL_WINDOW.bounds)
    ll = shapely.transform(
        box, lambda c: np.column_stack(utm_to_lonlat(c[:, 0], c[:, 1], WORLDCEREAL_WINDOW.epsg))
    )
    return shapely.geometry.mapping(ll), list(ll.bounds)


def aoi_geojson(inset_m: float = 1.0) -> dict[str, Any]:
    """The cube's window as a lon/lat polygon `inset_m` inside its edges."""
    w = WORLDCEREAL_WINDOW
    box = shapely.box(*w.bounds).buffer(-inset_m, join_style="mitre").segmentize(50.0)
    ll = shapely.transform(box, lambda c: np.column_stack(utm_to_lonlat(c[:, 0], c[:, 1], w.epsg)))
    return shapely.geometry.mapping(ll)


def _cog(path: Path, array: np.ndarray, nodata: float | None) -> str:
    w = WORLDCEREAL_WINDOW
    write_cog(path, array, w.transform, w.epsg, nodata=nodata, overviews=False)
    return path.name


def _item(
    item_id: str, collection: str, when: dt.datetime, props: dict[str, Any], composite: bool
) -> pystac.Item:
    geometry, bbox = _geometry()
    extra = {"start_datetime": when.isoformat(), "end_datetime": _month_end(when).isoformat()}
    item = pystac.Item(
        item_id,
        geometry,
        bbox,
        when,
        {**props, **(extra if composite else {})},
        stac_extensions=list(_EXT[collection]),
        collection=collection,
    )
    return item


def _asset(item: pystac.Item, key: str, href: str, **fields: Any) -> None:
    roles = fields.pop("roles", ["data"])
    title = fields.pop("title", None)
    item.add_asset(key, pystac.Asset(href, title=title, media_type=COG_TYPE, roles=roles,
                                     extra_fields=fields))  # fmt: skip


def _s2_items(ds: xr.Dataset, root: Path) -> list[pystac.Item]:
    w = WORLDCEREAL_WINDOW
    raw = {band: wc_raw(ds, f"S2-L2A-{band}") for band, *_ in S2_ASSETS.values()}
    items = []
    for t, when in enumerate(_times(ds)):
        written: set[str] = set()
        item_id = f"S2_WORLDCEREAL_31N_{when:%Y%m%d}_L2A_composite"
        folder = root / "sentinel-2-l2a" / item_id
        missing = np.zeros(w.shape, bool)
        for band, name, *_ in S2_ASSETS.values():
            missing |= raw[band][t] == _NODATA_IN
            if name not in written:  # nir08 shares B08.tif
                written.add(name)
                dn = np.where(raw[band][t] == _NODATA_IN, 0, raw[band][t]).astype(np.uint16)
                _cog(folder / name, dn, 0)
        scl = np.where(missing, 0, _SCL_VEGETATION).astype(np.uint8)
        _cog(folder / "SCL.tif", scl, 0)
        item = _item(
            item_id,
            "sentinel-2-l2a",
            when,
            {
                "platform": "sentinel-2",
                "constellation": "sentinel-2",
                "instruments": ["msi"],
                "eo:cloud_cover": round(100.0 * float(missing.mean()), 4),
                "proj:epsg": w.epsg,
                "earthsearch:boa_offset_applied": True,
                "s2:product_type": "S2MSI2A",
                "description": "WorldCereal monthly median composite of Sentinel-2 L2A",
            },
            composite=True,
        )
        grid = {"gsd": 10, "proj:shape": list(w.shape), "proj:transform": list(w.transform)[:6]}
        for key, (_band, name, title, centre, fwhm) in S2_ASSETS.items():
            eo = {"name": key, "common_name": key, "center_wavelength": centre,
                  "full_width_half_max": fwhm}  # fmt: skip
            rb = {"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                  "spatial_resolution": 10, "scale": 0.0001, "offset": -0.1}  # fmt: skip
            _asset(item, key, f"./{name}", title=title, **grid, **{"eo:bands": [eo]},
                   **{"raster:bands": [rb]}, roles=["data", "reflectance"])  # fmt: skip
        rb = {"nodata": 0, "data_type": "uint8", "spatial_resolution": 10}
        _asset(item, "scl", "./SCL.tif", title="Scene classification map (SCL), from no data",
               **grid, **{"raster:bands": [rb]}, roles=["data", "reflectance"])  # fmt: skip
        items.append(item)
    return items


def _s1_items(ds: xr.Dataset, root: Path) -> list[pystac.Item]:
    w = WORLDCEREAL_WINDOW
    raw = {pol: wc_raw(ds, f"S1-SIGMA0-{pol.upper()}") for pol in ("vv", "vh")}
    items = []
    for t, when in enumerate(_times(ds)):
        item_id = f"S1_WORLDCEREAL_31N_{when:%Y%m%d}_RTC_composite"
        folder = root / "sentinel-1-rtc" / item_id
        item = _item(
            item_id,
            "sentinel-1-rtc",
            when,
            {
                "constellation": "Sentinel-1",
                "sar:instrument_mode": "IW",
                "sar:frequency_band": "C",
                "sar:polarizations": ["VV", "VH"],
                "sar:product_type": "GRD",
                "proj:epsg": w.epsg,
                "proj:shape": list(w.shape),
                "proj:transform": [*list(w.transform)[:6], 0.0, 0.0, 1.0],
                "description": "WorldCereal monthly composite of Sentinel-1 sigma0, as power",
            },
            composite=True,
        )
        for pol, dn in raw.items():
            dn = dn[t].astype(np.float64)
            missing = (dn == _NODATA_IN) | (dn == 0)
            with np.errstate(divide="ignore"):
                power = 10.0 ** ((20.0 * np.log10(dn) - _S1_DB_OFFSET) / 10.0)
            power = np.where(missing, _RTC_NODATA, power).astype(np.float32)
            _cog(folder / f"iw-{pol}.rtc.tiff", power, _RTC_NODATA)
            rb = {"nodata": _RTC_NODATA, "data_type": "float32", "spatial_resolution": 10.0}
            _asset(item, pol, f"./iw-{pol}.rtc.tiff", title=f"{pol.upper()}: sigma0, power",
                   **{"raster:bands": [rb]})  # fmt: skip
        items.append(item)
    return items


def _dem_item(ds: xr.Dataset, root: Path) -> pystac.Item:
    w = WORLDCEREAL_WINDOW
    elev = wc_raw(ds, "elevation")[0]
    item_id = "Copernicus_DSM_WORLDCEREAL_31N_664000_5612120_DEM"
    folder = root / "cop-dem-glo-30" / item_id
    data = np.where(elev == _NODATA_IN, np.nan, elev).astype(np.float32)
    _cog(folder / f"{item_id}.tif", data, None)
    item = _item(
        item_id,
        "cop-dem-glo-30",
        dt.datetime(2021, 4, 22, tzinfo=dt.UTC),  # the date Earth Search's DEM items carry
        {
            "platform": "tandem-x",
            "gsd": 10,
            "proj:epsg": w.epsg,
            "proj:shape": list(w.shape),
            "proj:transform": list(w.transform)[:6],
            "earthsearch:payload_id": "earthembed/worldcereal_belgium_2021",
            "description": "WorldCereal's elevation layer on the cube's 10 m grid",
        },
        composite=False,
    )
    rb = {"sampling": "point", "data_type": "float32", "spatial_resolution": 10, "unit": "meter"}
    _asset(item, "data", f"./{item_id}.tif", title="Data", **{"raster:bands": [rb]})
    return item


def _collection(cid: str, items: list[pystac.Item], description: str) -> pystac.Collection:
    extent = pystac.Extent(
        pystac.SpatialExtent([items[0].bbox]),
        pystac.TemporalExtent([[min(i.datetime for i in items), max(i.datetime for i in items)]]),
    )
    coll = pystac.Collection(cid, description, extent, license="proprietary")
    for item in items:
        coll.add_item(item)
    return coll


def write_worldcereal_catalog(
    nc_path: str | Path, out_dir: str | Path, *, sentinel1: bool = True, dem: bool = True
) -> Path:
    """Write the WorldCereal Belgium cube as COGs and a static STAC catalog (module doc).

    Args:
        nc_path: shared/realdata/worldcereal_belgium_2021/inputs.nc.
        out_dir: the catalog's folder (created; files there are replaced).
        sentinel1: also write the Sentinel-1 composites (Planetary Computer RTC style).
        dem: also write the elevation (Earth Search cop-dem-glo-30 style).

    Returns:
        The path of `catalog.json`; `aoi.geojson` is written beside it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with xr.open_dataset(nc_path, engine="h5netcdf") as ds:
        wc_window(ds)  # the file's grid is the window the items state
        collections = [
            _collection("sentinel-2-l2a", _s2_items(ds, out), "Sentinel-2 L2A composites")
        ]
        if sentinel1:
            collections.append(
                _collection("sentinel-1-rtc", _s1_items(ds, out), "Sentinel-1 composites")
            )
        if dem:
            collections.append(_collection("cop-dem-glo-30", [_dem_item(ds, out)], "Elevation"))
    catalog = pystac.Catalog(
        "worldcereal-belgium-2021",
        "WorldCereal Belgium 2021 (WorldCereal/worldcereal-classification test inputs, MIT): "
        "12 monthly composites, 100 x 100 px at 10 m, EPSG:32631, in provider-style STAC",
    )
    for coll in collections:
        catalog.add_child(coll)
    catalog.normalize_hrefs(str(out))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    (out / "aoi.geojson").write_text(json.dumps(aoi_geojson()))
    return out / "catalog.json"
