"""Labels of the simulated world: sampled land-cover points and change-event polygons.

Both are GeoDataFrames in EPSG:4326 (the writer stores them as GeoParquet). Points are a
stratified sample: up to `per_class` pixel centres of every class present in a year.
Change polygons are the connected areas whose class changes from one year to the next,
one polygon per (event type, class_from, class_to) patch.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
import shapely.geometry
import shapely.ops

from schemas.grid import utm_to_lonlat
from simulation import classes as C
from simulation import world as W

POINT_COLUMNS = ("point_id", "class_id", "class_name", "year", "epsg", "x", "y", "geometry")
CHANGE_COLUMNS = (
    "event_id",
    "event_type",
    "year_from",
    "year_to",
    "class_from",
    "class_to",
    "class_from_name",
    "class_to_name",
    "area_m2",
    "epsg",
    "geometry",
)


def sample_points(region: W.SimRegion, year: int, per_class: int = 200) -> gpd.GeoDataFrame:
    """Stratified random pixel centres per class of a year's land cover (EPSG:4326 points).

    Args:
        region: the simulation.
        year: a simulated year.
        per_class: the most points drawn per class and zone.

    Returns:
        GeoDataFrame with POINT_COLUMNS, sorted by point_id.
    """
    names = region.biome_preset.class_names
    frames = []
    for window in region.windows:
        lc = W.landcover(region, window, year).ravel()
        for c in np.unique(lc):
            if c == C.NODATA:
                continue
            idx = np.flatnonzero(lc == c)
            rng = W.rng_for(region.seed, "points", year, window.epsg, int(c))
            pick = np.sort(rng.choice(idx, size=min(per_class, idx.size), replace=False))
            rows, cols = np.divmod(pick, window.width)
            x = window.x0 + (cols + 0.5) * window.pixel_size
            y = window.y0 - (rows + 0.5) * window.pixel_size
            lon, lat = utm_to_lonlat(x, y, window.epsg)
            frames.append(
                pd.DataFrame(
                    {
                        "point_id": [
                            f"{year}_{window.epsg}_{r}_{k}" for r, k in zip(rows, cols, strict=True)
                        ],
                        "class_id": np.full(pick.size, int(c), np.int16),
                        "class_name": names[int(c)],
                        "year": np.full(pick.size, year, np.int16),
                        "epsg": np.full(pick.size, window.epsg, np.int32),
                        "x": x,
                        "y": y,
                        "lon": np.asarray(lon),
                        "lat": np.asarray(lat),
                    }
                )
            )
    df = pd.concat(frames, ignore_index=True).sort_values("point_id", ignore_index=True)
    geom = gpd.points_from_xy(df.pop("lon"), df.pop("lat"))
    return gpd.GeoDataFrame(df, geometry=geom, crs="EPSG:4326")[list(POINT_COLUMNS)]


def change_polygons(region: W.SimRegion) -> gpd.GeoDataFrame:
    """Polygons of every labelled change between consecutive simulated years (EPSG:4326).

    Returns:
        GeoDataFrame with CHANGE_COLUMNS; event_type is one of EVENT_TYPES.
    """
    names = region.biome_preset.class_names
    rows = []
    years = region.year_span
    for window in region.windows:
        for y in years[:-1]:
            code = W.event_codes(region, window, y).astype(np.int32)
            a = W.landcover(region, window, y).astype(np.int32)
            b = W.landcover(region, window, y + 1).astype(np.int32)
            key = np.where(code > 0, code * 65536 + a * 256 + b, 0).astype(np.int32)
            for geom, value in rasterio.features.shapes(
                key, mask=key > 0, transform=window.transform, connectivity=4
            ):
                v = int(value)
                poly = shapely.geometry.shape(geom)
                lon_lat = shapely.ops.transform(
                    lambda xx, yy, e=window.epsg: utm_to_lonlat(np.asarray(xx), np.asarray(yy), e),
                    poly,
                )
                rows.append(
                    {
                        "event_type": C.EVENT_TYPES[v // 65536 - 1],
                        "year_from": y,
                        "year_to": y + 1,
                        "class_from": (v // 256) % 256,
                        "class_to": v % 256,
                        "class_from_name": names[(v // 256) % 256],
                        "class_to_name": names[v % 256],
                        "area_m2": float(poly.area),
                        "epsg": window.epsg,
                        "geometry": lon_lat,
                    }
                )
    if not rows:
        empty = {c: [] for c in CHANGE_COLUMNS if c != "geometry"}
        return gpd.GeoDataFrame(empty, geometry=[], crs="EPSG:4326")
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    gdf = gdf.sort_values(["year_from", "event_type", "epsg", "area_m2"], ignore_index=True)
    gdf.insert(0, "event_id", [f"ev{i:05d}" for i in range(len(gdf))])
    for col in ("year_from", "year_to", "class_from", "class_to"):
        gdf[col] = gdf[col].astype(np.int16)
    return gdf[list(CHANGE_COLUMNS)]
