"""Read any registry source from a static STAC catalog onto a 10 m grid window.

The catalog contract (ARCHITECTURE.md, Sources): one collection per source, collection id =
registry source id; Items with a datetime, `proj:epsg` (or `proj:code`) and a bbox; one COG
asset per band whose asset key is the registry band name, plus the quality layer the registry
names (`SCL` for Sentinel-2, `QA_PIXEL` for Landsat); `raster:bands` scale/offset/nodata on
each asset (the registry's Encoding fills in whatever an asset leaves out).

    catalog = StacCatalog.open("catalog/catalog.json")       # once per worker (DoFn.setup)
    obs = read_observations(catalog, window, start_ms, end_ms)  # once per chip

`read_source` reads only the pixels a window needs (a windowed read of each COG, a couple of
source pixels beyond the window so bilinear edges are right), decodes them to registry units,
resamples onto the window's grid (bilinear for continuous bands, nearest for quality layers;
ERA5's 0.1 degree lon/lat grid is a real reprojection), merges granules of one acquisition into
one frame, and builds the valid mask: inside a footprint, not nodata, clear per the quality
layer. The item index (`ItemRef`) is plain data, so a STAC API client can feed the same reader.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import pystac
import rasterio
import rasterio.errors
import rasterio.windows
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject, transform_bounds

from schemas import sensors
from schemas.grid import GridWindow
from schemas.observations import Observations, SourceFrames

log = logging.getLogger(__name__)

OnError = Literal["raise", "invalidate"]

# Quiet, fast GDAL for many small windowed reads of (possibly remote) COGs: never list the
# directory of a file on open, only try .tif over HTTP, merge neighbouring range requests.
GDAL_ENV: Mapping[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "VSI_CACHE": "TRUE",
}

# Granules whose datetimes lie this close belong to one acquisition (adjacent S2 tiles or
# Landsat/S1 scenes of one pass differ by seconds; revisits by days).
SAME_ACQUISITION_MS = 60_000

# Destination pad (10 m pixels) around the window: slope needs one neighbour at the edges.
_DST_PAD = 1
# Source pixels read beyond the (padded) window so bilinear interpolation has its neighbours.
_SRC_MARGIN = 2

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class AssetReadError(RuntimeError):
    """An asset of an item could not be read (missing file, corrupt COG, missing asset)."""

    def __init__(self, item_id: str, asset_key: str, href: str | None, reason: str) -> None:
        self.item_id = item_id
        self.asset_key = asset_key
        self.href = href
        self.reason = reason
        super().__init__(f"item {item_id!r}, asset {asset_key!r} ({href}): {reason}")

    @property
    def short(self) -> str:
        """The `item/asset: reason` form that Observations.errors collects."""
        return f"{self.item_id}/{self.asset_key}: {self.reason}"


# ---------------------------------------------------------------------------------- index


@dataclasses.dataclass(frozen=True)
class AssetRef:
    """One asset: where it is and how its first band is encoded (raster:bands, if given)."""

    href: str
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None


@dataclasses.dataclass(frozen=True)
class ItemRef:
    """What the reader needs of an item, free of pystac: a STAC API client can build these."""

    id: str
    source: str
    time_ms: int
    bbox: tuple[float, float, float, float] | None
    epsg: int | None
    properties: Mapping[str, Any]
    assets: Mapping[str, AssetRef]


class ItemIndex(Protocol):
    """Anything that lists a source's items over a period and a lon/lat bbox, in time order."""

    @property
    def sources(self) -> tuple[str, ...]: ...

    def item_refs(
        self,
        source: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        bbox_lonlat: Sequence[float] | None = None,
    ) -> list[ItemRef]: ...


def datetime_to_ms(value: dt.datetime) -> int:
    """A datetime (naive = UTC) -> integer ms since the epoch."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - _EPOCH) // dt.timedelta(milliseconds=1)


def _float_or_none(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)  # also parses "nan" / "inf", which some writers use for nodata
    except (TypeError, ValueError):
        return None


def _asset_ref(asset: pystac.Asset) -> AssetRef:
    fields = asset.extra_fields
    band: Mapping[str, Any] = {}
    if fields.get("raster:bands"):  # raster extension 1.x
        band = fields["raster:bands"][0]
        scale, offset, nodata = band.get("scale"), band.get("offset"), band.get("nodata")
    else:  # STAC 1.1 common `bands` (or asset-level fields for a one-band asset)
        if fields.get("bands"):
            band = fields["bands"][0]
        scale = band.get("raster:scale", fields.get("raster:scale"))
        offset = band.get("raster:offset", fields.get("raster:offset"))
        nodata = band.get("nodata", fields.get("nodata"))
    return AssetRef(
        asset.get_absolute_href() or asset.href,
        _float_or_none(scale),
        _float_or_none(offset),
        _float_or_none(nodata),
    )


def _item_epsg(props: Mapping[str, Any]) -> int | None:
    if props.get("proj:epsg") is not None:
        return int(props["proj:epsg"])
    code = props.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        return int(code.split(":")[1])
    return None


def _item_time_ms(item: pystac.Item) -> int:
    when = item.datetime
    if when is None:  # a period item (composites): its start labels it
        when = pystac.utils.str_to_datetime(item.properties["start_datetime"])
    return datetime_to_ms(when)


def item_ref(item: pystac.Item, source: str) -> ItemRef:
    """pystac.Item -> ItemRef."""
    bbox = tuple(float(v) for v in item.bbox[:2] + item.bbox[-2:]) if item.bbox else None
    return ItemRef(
        id=item.id,
        source=source,
        time_ms=_item_time_ms(item),
        bbox=bbox,
        epsg=_item_epsg(item.properties),
        properties=dict(item.properties),
        assets={k: _asset_ref(a) for k, a in item.assets.items()},
    )


def _bbox_intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


class StacCatalog:
    """A static STAC catalog, walked once and indexed by source id (= collection id).

    Cheap to reuse across windows: the index is built on `open` and queries only bisect a
    sorted time list and test bboxes; no file is held open.
    """

    def __init__(self, items: Iterable[tuple[str, pystac.Item]], href: str | None = None):
        self.href = href
        by_source: dict[str, list[tuple[ItemRef, pystac.Item]]] = {}
        for source, item in items:
            by_source.setdefault(source, []).append((item_ref(item, source), item))
        self._refs: dict[str, list[ItemRef]] = {}
        self._items: dict[str, list[pystac.Item]] = {}
        self._times: dict[str, list[int]] = {}
        for source, pairs in by_source.items():
            pairs.sort(key=lambda p: (p[0].time_ms, p[0].id))
            self._refs[source] = [r for r, _ in pairs]
            self._items[source] = [i for _, i in pairs]
            self._times[source] = [r.time_ms for r, _ in pairs]

    @classmethod
    def open(cls, path_or_url: str) -> StacCatalog:
        """Read a static catalog (catalog.json or collection.json) and index its items.

        Args:
            path_or_url: path or URL of the root catalog or collection.

        Returns:
            The indexed catalog. An item's source id is its collection id (its parent
            catalog's id when it has no collection).
        """
        root = pystac.read_file(str(path_or_url))
        if not isinstance(root, pystac.Catalog):
            raise ValueError(f"{path_or_url} is a {type(root).__name__}, not a catalog")

        def walk() -> Iterable[tuple[str, pystac.Item]]:
            for item in root.get_items(recursive=True):
                source = item.collection_id
                if source is None:
                    parent = item.get_parent()
                    source = parent.id if parent is not None else root.id
                yield source, item

        return cls(walk(), href=str(path_or_url))

    @property
    def sources(self) -> tuple[str, ...]:
        """Source ids (collection ids) present in the catalog, sorted."""
        return tuple(sorted(self._refs))

    def _select(
        self,
        source: str,
        start_ms: int | None,
        end_ms: int | None,
        bbox_lonlat: Sequence[float] | None,
    ) -> list[int]:
        refs = self._refs.get(source, [])
        times = self._times.get(source, [])
        # A static source's items (DEM tiles) are valid whatever the period.
        static = source in sensors.SENSORS and sensors.get_sensor(source).is_static
        lo = 0 if static or start_ms is None else bisect.bisect_left(times, start_ms)
        hi = len(refs) if static or end_ms is None else bisect.bisect_left(times, end_ms)
        return [
            i
            for i in range(lo, hi)
            if bbox_lonlat is None
            or refs[i].bbox is None
            or _bbox_intersects(refs[i].bbox, bbox_lonlat)
        ]

    def item_refs(
        self,
        source: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        bbox_lonlat: Sequence[float] | None = None,
    ) -> list[ItemRef]:
        """Items of `source` with start_ms <= time < end_ms touching the bbox, time-sorted."""
        return [self._refs[source][i] for i in self._select(source, start_ms, end_ms, bbox_lonlat)]

    def items(
        self,
        source: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        bbox_lonlat: Sequence[float] | None = None,
    ) -> list[pystac.Item]:
        """Like `item_refs`, as pystac Items.

        Args:
            source: registry source id (collection id).
            start_ms: inclusive start of the period in ms (None: unbounded). Ignored for
                static sources.
            end_ms: exclusive end of the period in ms (None: unbounded).
            bbox_lonlat: (minx, miny, maxx, maxy) in EPSG:4326; items whose bbox misses it
                are left out.

        Returns:
            The items, sorted by time (then id). An unknown source gives an empty list.
        """
        return [self._items[source][i] for i in self._select(source, start_ms, end_ms, bbox_lonlat)]


# ---------------------------------------------------------------------------------- reading


def _padded(window: GridWindow, pad: int) -> GridWindow:
    return window.subwindow(-pad, -pad, window.height + 2 * pad, window.width + 2 * pad)


def _source_window(ds: rasterio.DatasetReader, dst: GridWindow) -> rasterio.windows.Window | None:
    """The dataset pixels covering `dst` plus a margin, clipped to the dataset; None if none."""
    src_crs = ds.crs
    dst_crs = CRS.from_epsg(dst.epsg)
    bounds = dst.bounds
    if src_crs != dst_crs:
        bounds = transform_bounds(dst_crs, src_crs, *bounds, densify_pts=21)
    minx, miny, maxx, maxy = bounds
    inv = ~ds.transform
    corners = [inv @ (x, y) for x in (minx, maxx) for y in (miny, maxy)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    c0 = max(math.floor(min(cols)) - _SRC_MARGIN, 0)
    r0 = max(math.floor(min(rows)) - _SRC_MARGIN, 0)
    c1 = min(math.ceil(max(cols)) + _SRC_MARGIN, ds.width)
    r1 = min(math.ceil(max(rows)) + _SRC_MARGIN, ds.height)
    if c1 <= c0 or r1 <= r0:
        return None
    return rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)


def _encoding(band: sensors.Band, ref: AssetRef) -> sensors.Encoding:
    """The registry encoding with whatever the asset's raster:bands states put over it."""
    enc = band.encoding
    return dataclasses.replace(
        enc,
        scale=enc.scale if ref.scale is None else ref.scale,
        offset=enc.offset if ref.offset is None else ref.offset,
        nodata=enc.nodata if ref.nodata is None else ref.nodata,
    )


def _read_asset(
    item: ItemRef,
    key: str,
    dst: GridWindow,
    *,
    encoding: sensors.Encoding | None,
    resampling: Resampling,
) -> np.ndarray:
    """One asset onto the `dst` grid as float: decoded (NaN at nodata/outside) or raw.

    With `encoding` None the stored values are resampled as they are (quality layers); pixels
    outside the asset's extent are NaN either way.
    """
    ref = item.assets.get(key)
    if ref is None:
        raise AssetReadError(item.id, key, None, f"item has no asset {key!r}")
    out = np.full(dst.shape, np.nan, dtype=np.float32 if encoding else np.float64)
    try:
        with rasterio.open(ref.href) as ds:
            win = _source_window(ds, dst)
            if win is None:
                return out
            stored = ds.read(1, window=win)
            if encoding is None:
                src = stored.astype(np.float64)
                if ds.nodata is not None:
                    src[stored == ds.nodata] = np.nan
            else:
                src = encoding.decode(stored)
                # A nodata code the file itself declares is missing too.
                if ds.nodata is not None and not np.isnan(ds.nodata):
                    src[stored == ds.nodata] = np.nan
            reproject(
                src,
                out,
                src_transform=ds.transform @ Affine.translation(win.col_off, win.row_off),
                src_crs=ds.crs,
                dst_transform=dst.transform,
                dst_crs=CRS.from_epsg(dst.epsg),
                resampling=resampling,
                src_nodata=np.nan,
                dst_nodata=np.nan,
            )
    except (rasterio.errors.RasterioError, CPLE_BaseError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AssetReadError(item.id, key, ref.href, reason) from e
    return out


def _geometry(sensor: sensors.Sensor, props: Mapping[str, Any]) -> dict[str, float]:
    """Per-observation geometry fields from item properties (NaN when not stated)."""

    def num(*keys: str) -> float:
        for k in keys:
            v = _float_or_none(props.get(k))
            if v is not None:
                return v
        return math.nan

    out = {}
    for name in sensor.geometry:
        if name == "sun_zenith":
            elev = num("view:sun_elevation")
            out[name] = 90.0 - elev if math.isfinite(elev) else num("s2:mean_solar_zenith")
        elif name == "sun_azimuth":
            out[name] = num("view:sun_azimuth", "s2:mean_solar_azimuth")
        elif name == "incidence_angle":
            out[name] = num("view:incidence_angle")
        elif name == "orbit_direction":
            state = str(props.get("sat:orbit_state", "")).lower()
            out[name] = {"ascending": 1.0, "descending": 0.0}.get(state, math.nan)
        else:
            out[name] = num(name)
    return out


def _frame_geometry(sensor: sensors.Sensor, group: Sequence[ItemRef]) -> dict[str, float]:
    """A frame's geometry: the mean over its granules of what each states (NaN if none)."""
    per_item = [_geometry(sensor, r.properties) for r in group]
    out = {}
    for name in sensor.geometry:
        vals = [g[name] for g in per_item if math.isfinite(g[name])]
        out[name] = float(np.mean(vals)) if vals else math.nan
    return out


def _read_item(
    sensor: sensors.Sensor, item: ItemRef, dst: GridWindow
) -> tuple[np.ndarray, np.ndarray]:
    """One item on the padded grid -> (values (H, W, C) registry units, valid (H, W))."""
    values = np.full((*dst.shape, len(sensor.bands)), np.nan, dtype=np.float32)
    stored = [b for b in sensor.stored_bands if b.name in item.assets]
    if not stored:
        raise AssetReadError(
            item.id,
            ",".join(b.name for b in sensor.stored_bands),
            None,
            f"no asset for any band of {sensor.id!r}; assets {sorted(item.assets)}",
        )
    for band in stored:
        # Bilinear for continuous bands keeps 20/30 m and 0.1 degree grids smooth on 10 m;
        # categorical layers must keep their codes.
        resampling = Resampling.bilinear if band.kind == "continuous" else Resampling.nearest
        values[..., sensor.band_index(band.name)] = _read_asset(
            item,
            band.name,
            dst,
            encoding=_encoding(band, item.assets[band.name]),
            resampling=resampling,
        )
    for band in sensor.bands:
        if band.derived_from == "elevation" and band.name == "slope":
            elev = values[..., sensor.band_index("elevation")]
            values[..., sensor.band_index(band.name)] = sensors.slope_degrees(elev, dst.pixel_size)
    idx = [sensor.band_index(b.name) for b in stored]
    valid = np.isfinite(values[..., idx]).all(axis=-1)
    if sensor.mask.band is not None:
        quality = _read_asset(
            item, sensor.mask.band, dst, encoding=None, resampling=Resampling.nearest
        )
        inside = np.isfinite(quality)
        clear = sensors.mask_from_quality(sensor, np.where(inside, quality, 0).astype(np.int64))
        valid &= inside & clear
    return values, valid


def _group_acquisitions(refs: Sequence[ItemRef], static: bool) -> list[list[ItemRef]]:
    """Items (time-sorted) -> groups of one acquisition (a static source: one group)."""
    if static:
        return [list(refs)] if refs else []
    groups: list[list[ItemRef]] = []
    for ref in refs:
        if groups and ref.time_ms - groups[-1][0].time_ms <= SAME_ACQUISITION_MS:
            groups[-1].append(ref)
        else:
            groups.append([ref])
    return groups


def _empty_frames(sensor: sensors.Sensor, window: GridWindow) -> SourceFrames:
    h, w = window.shape
    return SourceFrames(
        sensor.id,
        np.zeros((0, h, w, len(sensor.bands)), np.float32),
        np.zeros((0, h, w), bool),
        np.zeros((0,), np.int64),
    )


def read_source(
    catalog: ItemIndex,
    source_id: str,
    window: GridWindow,
    start_ms: int,
    end_ms: int,
    *,
    on_error: OnError = "raise",
    errors: list[str] | None = None,
) -> SourceFrames:
    """Read one source's observations of a period onto a grid window.

    Args:
        catalog: an opened `StacCatalog` (or any `ItemIndex`).
        source_id: registry source id; KeyError naming the known sources otherwise.
        window: the 10 m grid window to read onto (its CRS is the target CRS).
        start_ms: inclusive start of the period, ms since the epoch (ignored for static
            sources, which give one frame at `sensors.STATIC_TIME_MS`).
        end_ms: exclusive end of the period.
        on_error: 'raise' raises `AssetReadError` (naming item, asset, href and reason) on
            a missing, unreadable or corrupt asset; 'invalidate' marks that frame invalid
            (valid False, values NaN), logs, and appends 'item/asset: reason' to `errors`.
        errors: list to append error strings to in 'invalidate' mode.

    Returns:
        SourceFrames in registry units and band order, frames in time order. Items of one
        acquisition (datetimes within `SAME_ACQUISITION_MS`) merge into one frame at the
        earliest time, the first clear pixel winning; frames that hold no data in the window
        (outside every footprint) are left out; no items give T = 0 frames. Bands an item has
        no asset for are NaN; derived bands (slope) come from the resampled elevation.
    """
    sensor = sensors.get_sensor(source_id)
    if on_error not in ("raise", "invalidate"):
        raise ValueError(f"on_error must be 'raise' or 'invalidate', not {on_error!r}")
    refs = catalog.item_refs(
        source_id,
        None if sensor.is_static else start_ms,
        None if sensor.is_static else end_ms,
        window.lonlat_bounds(),
    )
    dst = _padded(window, _DST_PAD)
    crop = (slice(_DST_PAD, _DST_PAD + window.height), slice(_DST_PAD, _DST_PAD + window.width))
    frames_v, frames_m, times, geoms = [], [], [], []
    with rasterio.Env(**GDAL_ENV):
        for group in _group_acquisitions(refs, sensor.is_static):
            values = np.full((*window.shape, len(sensor.bands)), np.nan, dtype=np.float32)
            valid = np.zeros(window.shape, dtype=bool)
            failed = False
            for ref in sorted(group, key=lambda r: r.id):
                try:
                    v, m = _read_item(sensor, ref, dst)
                except AssetReadError as e:
                    if on_error == "raise":
                        raise
                    log.warning("invalidating frame of %s: %s", source_id, e)
                    if errors is not None:
                        errors.append(e.short)
                    failed = True
                    break
                v, m = v[crop], m[crop]
                # First clear pixel wins; where nothing is clear yet, keep any observed
                # (e.g. cloudy) values so they stay visible to masked_values() users.
                take = (m & ~valid) | (
                    ~valid & ~np.isfinite(values).any(-1) & np.isfinite(v).any(-1)
                )
                values[take] = v[take]
                valid |= m
            if failed:
                values[:] = np.nan
                valid[:] = False
            elif not np.isfinite(values).any():
                continue  # bbox touched, data did not: no observation here
            frames_v.append(values)
            frames_m.append(valid)
            times.append(sensors.STATIC_TIME_MS if sensor.is_static else group[0].time_ms)
            geoms.append(_frame_geometry(sensor, group))
    if not frames_v:
        return _empty_frames(sensor, window)
    return SourceFrames(
        source_id,
        np.stack(frames_v),
        np.stack(frames_m),
        np.asarray(times, dtype=np.int64),
        {n: np.asarray([g[n] for g in geoms], dtype=np.float32) for n in sensor.geometry},
    )


def read_observations(
    catalog: ItemIndex,
    window: GridWindow,
    start_ms: int,
    end_ms: int,
    sources: Sequence[str] | None = None,
    on_error: OnError = "invalidate",
) -> Observations:
    """Read every source (or `sources`) of a period onto a window.

    Args:
        catalog: an opened `StacCatalog` (or any `ItemIndex`).
        window: the grid window.
        start_ms: inclusive start of the period in ms.
        end_ms: exclusive end of the period in ms.
        sources: registry source ids to read; None reads those the catalog has that the
            registry knows (catalog collections the registry does not know are skipped).
        on_error: as in `read_source`; by default failed reads invalidate their frame and
            are listed in `Observations.errors`.

    Returns:
        Observations over the window, one SourceFrames per source.
    """
    if sources is None:
        sources = [s for s in sensors.SOURCE_IDS if s in catalog.sources]
    errors: list[str] = []
    frames = {
        s: read_source(catalog, s, window, start_ms, end_ms, on_error=on_error, errors=errors)
        for s in sources
    }
    return Observations(sources=frames, window=window, errors=errors)
