"""The 10 m UTM grid: zones, tiles, chips and AOIs.

Every raster the project writes, and every training patch, lies on a 10 m grid in its local
UTM zone (EPSG:326NN north, 327NN south), north-up. A tile is T x T pixels whose origin is a
multiple of T * 10 m in zone coordinates; its id is `{epsg}_{col}_{row}` where
col = x_min // (T*10) and row = y_min // (T*10) (y_min is the tile's southern edge), and its
path is `{year}/{zone}{N|S}/{tile_id}.tif`. A tile is embedded in chips of C x C core pixels
plus a halo of H on each side; chips start at multiples of C from the tile's top-left corner,
and the last chip of a row or column may overhang the tile (its overhang is read, never
written).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pyproj
import shapely
import shapely.geometry
import shapely.ops
from affine import Affine

PIXEL_SIZE_M = 10.0


# ---------------------------------------------------------------------------------- zones


def utm_zone(lon: float, lat: float) -> int:
    """UTM zone number for a point, with the Norway and Svalbard exceptions."""
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise ValueError(f"lon/lat out of range: ({lon}, {lat})")
    if lon == 180.0:
        lon = -180.0 + 1e-9  # 180 E belongs to zone 1, as -180 does
    zone = int((lon + 180.0) // 6.0) + 1
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        zone = 32  # south-west Norway
    if 72.0 <= lat < 84.0:  # Svalbard: zones 31, 33, 35, 37 only
        if 0.0 <= lon < 9.0:
            zone = 31
        elif 9.0 <= lon < 21.0:
            zone = 33
        elif 21.0 <= lon < 33.0:
            zone = 35
        elif 33.0 <= lon < 42.0:
            zone = 37
    return zone


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone containing a point (326NN north, 327NN south)."""
    return (32600 if lat >= 0 else 32700) + utm_zone(lon, lat)


def zone_of_epsg(epsg: int) -> tuple[int, str]:
    """EPSG code -> (zone number, 'N' or 'S'); ValueError for a code that is no UTM zone."""
    if 32601 <= epsg <= 32660:
        return epsg - 32600, "N"
    if 32701 <= epsg <= 32760:
        return epsg - 32700, "S"
    raise ValueError(f"EPSG:{epsg} is not a WGS 84 / UTM zone (32601-32660, 32701-32760)")


def zone_polygon(epsg: int) -> shapely.Polygon:
    """The lon/lat footprint of a UTM zone and hemisphere, exceptions applied."""
    zone, hemi = zone_of_epsg(epsg)
    lat0, lat1 = (0.0, 84.0) if hemi == "N" else (-80.0, 0.0)
    lon0 = -180.0 + (zone - 1) * 6.0
    base = shapely.box(lon0, lat0, lon0 + 6.0, lat1)
    if hemi == "S":
        return base
    # Norway: zone 32 takes 3-6 E from zone 31 between 56 and 64 N.
    norway = shapely.box(3.0, 56.0, 6.0, 64.0)
    if zone == 31:
        base = base.difference(norway)
    elif zone == 32:
        base = base.union(norway)
    # Svalbard, 72-84 N: 31 spans 0-9, 33 spans 9-21, 35 spans 21-33, 37 spans 33-42.
    svalbard = {31: (0.0, 9.0), 33: (9.0, 21.0), 35: (21.0, 33.0), 37: (33.0, 42.0)}
    band = shapely.box(0.0, 72.0, 42.0, 84.0)
    if lon0 < 42.0 and lon0 + 6.0 > 0.0:
        base = base.difference(band)
        if zone in svalbard:
            a, b = svalbard[zone]
            base = base.union(shapely.box(a, 72.0, b, 84.0))
    return base


def _transformer(src_epsg: int, dst_epsg: int) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(src_epsg, dst_epsg, always_xy=True)


def lonlat_to_utm(lon: np.ndarray | float, lat: np.ndarray | float, epsg: int):
    """lon/lat (EPSG:4326) -> zone coordinates (x, y) in metres."""
    return _transformer(4326, epsg).transform(lon, lat)


def utm_to_lonlat(x: np.ndarray | float, y: np.ndarray | float, epsg: int):
    """Zone coordinates -> lon/lat."""
    return _transformer(epsg, 4326).transform(x, y)


# ---------------------------------------------------------------------------------- windows


@dataclasses.dataclass(frozen=True)
class GridWindow:
    """A north-up window of the 10 m grid: top-left corner (x0, y0), width x height pixels."""

    epsg: int
    x0: float
    y0: float
    width: int
    height: int
    pixel_size: float = PIXEL_SIZE_M

    @property
    def transform(self) -> Affine:
        return Affine(self.pixel_size, 0.0, self.x0, 0.0, -self.pixel_size, self.y0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in zone coordinates."""
        return (
            self.x0,
            self.y0 - self.height * self.pixel_size,
            self.x0 + self.width * self.pixel_size,
            self.y0,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    def pixel_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) arrays of shape (H, W): zone coordinates of pixel centres."""
        cols = self.x0 + (np.arange(self.width) + 0.5) * self.pixel_size
        rows = self.y0 - (np.arange(self.height) + 0.5) * self.pixel_size
        return np.meshgrid(cols, rows)

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        """The window's footprint in lon/lat (densified, so curvature is covered)."""
        poly = shapely.box(*self.bounds).segmentize(self.pixel_size * 16)
        geo = shapely.ops.transform(_transformer(self.epsg, 4326).transform, poly)
        return tuple(geo.bounds)

    def subwindow(self, row: int, col: int, height: int, width: int) -> GridWindow:
        """The window `height x width` px whose top-left pixel is (row, col) of this one."""
        return GridWindow(
            self.epsg,
            self.x0 + col * self.pixel_size,
            self.y0 - row * self.pixel_size,
            width,
            height,
            self.pixel_size,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GridWindow:
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class Tile:
    """A T x T tile of the grid; `col`/`row` index tiles of size T in its zone."""

    epsg: int
    col: int
    row: int
    size: int

    @property
    def id(self) -> str:
        return tile_id(self.epsg, self.col, self.row)

    @property
    def window(self) -> GridWindow:
        span = self.size * PIXEL_SIZE_M
        return GridWindow(self.epsg, self.col * span, (self.row + 1) * span, self.size, self.size)

    @property
    def transform(self) -> Affine:
        return self.window.transform

    def path(self, year: int | str, suffix: str = ".tif") -> str:
        """Relative output path `{year}/{zone}{N|S}/{tile_id}{suffix}`."""
        zone, hemi = zone_of_epsg(self.epsg)
        return f"{year}/{zone:02d}{hemi}/{self.id}{suffix}"

    def chips(self, core: int, halo: int) -> list[Chip]:
        """The chips covering this tile, row-major."""
        n = math.ceil(self.size / core)
        return [Chip(self, i, j, core, halo) for i in range(n) for j in range(n)]


def tile_id(epsg: int, col: int, row: int) -> str:
    return f"{epsg}_{col}_{row}"


def parse_tile_id(tid: str, size: int) -> Tile:
    """`{epsg}_{col}_{row}` -> Tile (the size is not part of the id)."""
    try:
        epsg, col, row = (int(p) for p in tid.split("_"))
    except ValueError:
        raise ValueError(
            f"malformed tile id {tid!r}; expected '{{epsg}}_{{col}}_{{row}}'"
        ) from None
    zone_of_epsg(epsg)
    return Tile(epsg, col, row, size)


@dataclasses.dataclass(frozen=True)
class Chip:
    """Chip (i, j) of a tile: C x C core pixels at (i*C, j*C) of the tile plus a halo H."""

    tile: Tile
    i: int
    j: int
    core: int
    halo: int

    @property
    def id(self) -> str:
        return f"{self.tile.id}_{self.i}_{self.j}"

    @property
    def size(self) -> int:
        return self.core + 2 * self.halo

    @property
    def window(self) -> GridWindow:
        """The full chip window (core plus halo) the model sees."""
        return self.tile.window.subwindow(
            self.i * self.core - self.halo, self.j * self.core - self.halo, self.size, self.size
        )

    @property
    def core_window(self) -> GridWindow:
        return self.tile.window.subwindow(
            self.i * self.core, self.j * self.core, self.core, self.core
        )

    def core_slices(self) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """(tile_slices, chip_slices): where this chip's core lands in the tile, clipped to it."""
        r0, c0 = self.i * self.core, self.j * self.core
        r1, c1 = min(r0 + self.core, self.tile.size), min(c0 + self.core, self.tile.size)
        tile_sl = (slice(r0, r1), slice(c0, c1))
        chip_sl = (slice(self.halo, self.halo + r1 - r0), slice(self.halo, self.halo + c1 - c0))
        return tile_sl, chip_sl


# ---------------------------------------------------------------------------------- AOIs


def parse_bbox(text: str | Sequence[float]) -> tuple[float, float, float, float]:
    """'minx,miny,maxx,maxy' in lon/lat -> floats, validated (no antimeridian crossing)."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 4:
            raise ValueError(
                f"--bbox needs 4 comma-separated numbers minx,miny,maxx,maxy; got {text!r}"
            )
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"--bbox has a non-number: {text!r}") from None
    else:
        vals = [float(v) for v in text]
        if len(vals) != 4:
            raise ValueError(f"bbox needs 4 numbers; got {vals}")
    minx, miny, maxx, maxy = vals
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"bbox has a non-finite value: {vals}")
    if not _in_lonlat_range(minx, miny, maxx, maxy):
        hint = ""
        if _in_lonlat_range(miny, minx, maxy, maxx):
            hint = (
                f"; it looks like lat,lon: the order is lon,lat (minx,miny,maxx,maxy), "
                f"i.e. {miny},{minx},{maxy},{maxx}"
            )
        raise ValueError(f"bbox out of lon/lat range (lon -180..180, lat -90..90): {vals}{hint}")
    if minx >= maxx:
        raise ValueError(
            f"bbox minx >= maxx ({minx} >= {maxx}): empty, or crossing the antimeridian, which is not supported"
        )
    if miny >= maxy:
        raise ValueError(f"bbox miny >= maxy ({miny} >= {maxy})")
    return minx, miny, maxx, maxy


def bbox_intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two (minx, miny, maxx, maxy) boxes in one CRS share a point; boxes that only
    touch along an edge or at a corner do (closed boxes, the STAC reader's rule)."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _in_lonlat_range(minx: float, miny: float, maxx: float, maxy: float) -> bool:
    return -180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= 90 and -90 <= maxy <= 90


AREA_TYPES = ("Polygon", "MultiPolygon")


def _geojson_geometry(geometry: object, name: str, where: str) -> shapely.Geometry:
    """One GeoJSON geometry object -> shapely; ValueError naming the file and the part."""
    if not isinstance(geometry, Mapping):
        raise ValueError(f"{name}: {where} has no geometry object (got {type(geometry).__name__})")
    kind = geometry.get("type")
    if kind not in AREA_TYPES:
        raise ValueError(f"{name}: AOI must be a Polygon or MultiPolygon; {where} is a {kind}")
    try:
        geom = shapely.geometry.shape(geometry)
    except Exception as e:  # shapely's errors on malformed coordinates vary by version
        raise ValueError(
            f"{name}: {where} is not a valid {kind}: {type(e).__name__}: {e}"
        ) from None
    if geom.is_empty:
        raise ValueError(f"{name}: {where} is an empty {kind}")
    if not geom.is_valid:
        raise ValueError(
            f"{name}: {where} is an invalid {kind} ({shapely.is_valid_reason(geom)}); "
            "fix its rings (no self-intersections), e.g. with shapely.make_valid"
        )
    return geom


def aoi_from_geojson(doc: object, name: str = "AOI") -> shapely.Geometry:
    """A parsed GeoJSON document (Feature, FeatureCollection or Polygon/MultiPolygon geometry;
    EPSG:4326) -> one geometry; ValueError naming `name` (the file) and what is wrong."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"{name} is not a GeoJSON object (got a JSON {type(doc).__name__})")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise ValueError(f"{name}: a FeatureCollection needs a 'features' list")
        geoms = [
            _geojson_geometry(
                f.get("geometry") if isinstance(f, Mapping) else None, name, f"feature {k}"
            )
            for k, f in enumerate(features)
        ]
    elif kind == "Feature":
        geoms = [_geojson_geometry(doc.get("geometry"), name, "the Feature")]
    else:
        geoms = [_geojson_geometry(doc, name, "the geometry")]
    if not geoms:
        raise ValueError(f"AOI file {name} has no geometry")
    geom = shapely.union_all(geoms)
    minx, miny, maxx, maxy = geom.bounds
    try:
        parse_bbox((minx, miny, maxx, maxy))
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
    return geom


def aoi_geometry(
    bbox: str | Sequence[float] | None = None,
    aoi: Mapping | None = None,
    *,
    aoi_name: str = "AOI",
) -> shapely.Geometry:
    """Exactly one of bbox or a parsed GeoJSON AOI (`aoi_name`: its file) -> a lon/lat
    geometry. Reading the file is beam_jobs.io.files.read_json's job."""
    if (bbox is None) == (aoi is None):
        raise ValueError("give exactly one of --bbox or --aoi")
    if bbox is not None:
        return shapely.box(*parse_bbox(bbox))
    return aoi_from_geojson(aoi, aoi_name)


def split_by_zone(geom: shapely.Geometry) -> dict[int, shapely.Geometry]:
    """A lon/lat geometry -> {epsg: the part of it inside that UTM zone and hemisphere}."""
    minx, miny, maxx, maxy = geom.bounds
    zones = set()
    for lat in (miny, maxy, 0.0 if miny < 0 < maxy else miny):
        for lon in np.arange(minx, maxx + 6.0, 6.0):
            zones.add(utm_epsg(min(lon, maxx), lat))
    # Exceptions widen zones by up to 3 degrees; look at the neighbours too.
    candidates = set()
    for epsg in zones:
        zone, hemi = zone_of_epsg(epsg)
        base = 32600 if hemi == "N" else 32700
        for dz in (-2, -1, 0, 1, 2):
            z = (zone - 1 + dz) % 60 + 1
            candidates.add(base + z)
        if miny < 0 < maxy:
            candidates.update({32600 + zone, 32700 + zone})
    out = {}
    for epsg in sorted(candidates):
        part = geom.intersection(zone_polygon(epsg))
        if not part.is_empty and part.area > 0:
            out[epsg] = part
    return out


def tiles_for_geometry(geom_lonlat: shapely.Geometry, epsg: int, tile_size: int) -> list[Tile]:
    """Tiles of one zone whose footprint intersects a lon/lat geometry, in (row desc, col) order."""
    span = tile_size * PIXEL_SIZE_M
    dense = geom_lonlat.segmentize(0.01)
    utm = shapely.ops.transform(_transformer(4326, epsg).transform, dense)
    minx, miny, maxx, maxy = utm.bounds
    tiles = []
    for row in range(math.floor(miny / span), math.ceil(maxy / span)):
        for col in range(math.floor(minx / span), math.ceil(maxx / span)):
            box = shapely.box(col * span, row * span, (col + 1) * span, (row + 1) * span)
            if box.intersects(utm) and box.intersection(utm).area > 0:
                tiles.append(Tile(epsg, col, row, tile_size))
    tiles.sort(key=lambda t: (-t.row, t.col))
    return tiles


def tiles_for_aoi(geom_lonlat: shapely.Geometry, tile_size: int) -> list[Tile]:
    """All tiles covering an AOI, split by zone (zone order, then north to south, west to east)."""
    out = []
    for epsg, part in split_by_zone(geom_lonlat).items():
        out.extend(tiles_for_geometry(part, epsg, tile_size))
    return out


def window_for_geometry(geom_lonlat: shapely.Geometry, epsg: int) -> GridWindow:
    """The smallest 10 m grid window of a zone covering a lon/lat geometry."""
    dense = geom_lonlat.segmentize(0.01)
    utm = shapely.ops.transform(_transformer(4326, epsg).transform, dense)
    minx, miny, maxx, maxy = utm.bounds
    x0 = math.floor(minx / PIXEL_SIZE_M) * PIXEL_SIZE_M
    y1 = math.ceil(maxy / PIXEL_SIZE_M) * PIXEL_SIZE_M
    x1 = math.ceil(maxx / PIXEL_SIZE_M) * PIXEL_SIZE_M
    y0 = math.floor(miny / PIXEL_SIZE_M) * PIXEL_SIZE_M
    return GridWindow(
        epsg, x0, y1, int(round((x1 - x0) / PIXEL_SIZE_M)), int(round((y1 - y0) / PIXEL_SIZE_M))
    )


def iter_chips(tiles: Sequence[Tile], core: int, halo: int) -> Iterator[Chip]:
    for t in tiles:
        yield from t.chips(core, halo)
