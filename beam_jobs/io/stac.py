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

Items come from a static catalog, or from a stac-geoparquet item table (`.parquet`, one row
per item, as bulk users keep them: `read_item_table` / `write_item_table`), which is also how
the items a STAC API search found (beam_jobs/io/stac_search.py) reach the workers.

Speed: opened datasets stay open in a per-process LRU (`MAX_OPEN_DATASETS`; a local file that
changes on disk is reopened; `clear_dataset_cache` closes them all). A COG on the window's own
grid, or on an integer coarsening of it (20 m bands, 20/30 m quality layers), is resampled in
numpy with exactly the result `reproject` gives; other grids go through `reproject`, the bands
of one item that share a grid and a nodata mask in one call.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import math
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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

from beam_jobs.io import providers
from beam_jobs.io.files import atomic_target
from beam_jobs.io.providers import AssetRef
from schemas import sensors
from schemas.grid import PIXEL_SIZE_M, GridWindow, bbox_intersects
from schemas.observations import Observations, SourceFrames

log = logging.getLogger(__name__)

OnError = Literal["raise", "invalidate"]

# MB of decoded blocks GDAL keeps per process (GDAL_CACHEMAX) while the reader reads.
READ_CACHE_MB = 256

# Quiet, fast GDAL for many small windowed reads of (possibly remote) COGs: never list the
# directory of a file on open, only try .tif over HTTP, merge neighbouring range requests.
GDAL_ENV: Mapping[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "VSI_CACHE": "TRUE",
    # Per open file (default 25 MB): the reader keeps up to MAX_OPEN_DATASETS files open, and
    # decoded blocks are cached anyway (GDAL_CACHEMAX, shared by all datasets).
    "VSI_CACHE_SIZE": str(512 * 1024),
    # GDAL's decoded-block cache, shared by all datasets: GDAL's default is 5% of the
    # machine's RAM (1.26 GB on a 24 GB machine), in every worker process on top of its
    # arrays. The reads of a block of chips reuse little of it (each asset window is read
    # once per block; neighbouring blocks share only their halos).
    "GDAL_CACHEMAX": READ_CACHE_MB,
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
class ItemRef:
    """What the reader needs of an item, free of pystac: a STAC API client can build these."""

    id: str
    source: str
    time_ms: int
    bbox: tuple[float, float, float, float] | None
    epsg: int | None
    properties: Mapping[str, Any]
    assets: Mapping[str, AssetRef]  # by registry band name (own contract: by asset key)
    provider: str = providers.OWN
    access: providers.Access = providers.Access()


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
    """The own contract's asset: its href and what its raster:bands (or bands) state."""
    return AssetRef(
        asset.get_absolute_href() or asset.href, *providers.stated_encoding(asset.extra_fields)
    )


def _item_epsg(props: Mapping[str, Any]) -> int | None:
    return providers.epsg_of(props)


def _item_time_ms(item: pystac.Item) -> int:
    when = item.datetime
    if when is None:  # a period item (composites): its start labels it
        when = pystac.utils.str_to_datetime(item.properties["start_datetime"])
    return datetime_to_ms(when)


def item_ref(
    item: pystac.Item,
    source: str | None = None,
    *,
    provider: str | None = None,
    access: providers.Access | None = None,
) -> ItemRef:
    """pystac.Item -> ItemRef, decoded through its provider's profile.

    Args:
        item: the item.
        source: its collection id when the item names none (a static catalog's parent id).
        provider: force a provider (`providers.PROVIDER_NAMES`); None detects it from the
            item's collection, links, hrefs and properties.
        access: how its hrefs may be reached (requester pays, signing).

    Returns:
        The ItemRef; `source` is the registry source id. Own-contract items keep every asset
        under its key; provider items hold one AssetRef per registry band they map.

    Raises:
        providers.ProfileError: no profile can decode the item (names item and collection).
    """
    collection = item.collection_id or source
    assets = item.assets
    # get_target_str, not .href: that resolves the root link (an HTTP read for API items).
    urls = [link.get_target_str() or "" for link in item.links] + [a.href for a in assets.values()]
    name, profile = providers.resolve_profile(
        item.id, collection, item.properties, urls, provider=provider
    )
    if profile is None:
        return _own_item_ref(item, str(collection), access)
    refs = providers.decode_assets(
        name,
        profile,
        providers.ItemFields(item.id, item.properties, item.datetime),
        {k: (a.get_absolute_href() or a.href, a.extra_fields) for k, a in assets.items()},
    )
    epsg = _item_epsg(item.properties)
    if epsg is None:  # CDSE states proj:code on each asset only
        first = next((assets[r.key] for r in refs.values() if r.key in assets), None)
        epsg = providers.epsg_of(first.extra_fields) if first is not None else None
    return dataclasses.replace(
        _own_item_ref(item, profile.source, access), epsg=epsg, assets=refs, provider=name
    )


def _own_item_ref(item: pystac.Item, source: str, access: providers.Access | None) -> ItemRef:
    """The own contract: every asset under its key, as its raster:bands state it."""
    bbox = tuple(float(v) for v in item.bbox[:2] + item.bbox[-2:]) if item.bbox else None
    return ItemRef(
        id=item.id,
        source=source,
        time_ms=_item_time_ms(item),
        bbox=bbox,
        epsg=_item_epsg(item.properties),
        properties=dict(item.properties),
        assets={k: _asset_ref(a) for k, a in item.assets.items()},
        access=access or providers.Access(),
    )


# ------------------------------------------------------------------------------- item tables

ITEM_TABLE_SUFFIXES = (".parquet", ".geoparquet")


def is_item_table(path: str) -> bool:
    """Whether a catalog path names a stac-geoparquet item table (by its suffix)."""
    return urllib.parse.urlsplit(path).path.lower().endswith(ITEM_TABLE_SUFFIXES)


def _without_nulls(doc: dict) -> dict:
    """A table row's item without the null properties the table's union schema gave it
    (a DEM row gets every Sentinel-2 property as null): the item as it was written."""
    doc["properties"] = {k: v for k, v in doc["properties"].items() if v is not None}
    return doc


def read_item_table(path: str) -> list[pystac.Item]:
    """A stac-geoparquet item table (one row per item; local, gs:// or s3://) -> Items.

    Raises:
        ValueError: naming the file when it is not a readable stac-geoparquet table.
    """
    import pyarrow.parquet as pq
    import stac_geoparquet.arrow

    try:
        table = pq.read_table(path)
        docs = list(stac_geoparquet.arrow.stac_table_to_items(table))
        return [pystac.Item.from_dict(_without_nulls(d), preserve_dict=False) for d in docs]
    except (OSError, ValueError, KeyError, TypeError) as e:  # pyarrow's errors are OSError
        raise ValueError(f"{path}: not a readable stac-geoparquet item table: {e}") from e


def write_item_table(items: Iterable[pystac.Item], path: str) -> int:
    """Items -> a stac-geoparquet item table at `path` (atomically); returns the row count.

    Asset hrefs are written absolute, so the table reads the same wherever it is moved.
    """
    import stac_geoparquet.arrow

    docs = []
    for item in items:
        doc = item.to_dict(include_self_link=False, transform_hrefs=False)
        for key, asset in item.assets.items():
            doc["assets"][key]["href"] = asset.get_absolute_href() or asset.href
        docs.append(doc)
    if not docs:
        raise ValueError(f"{path}: no items to write")
    with atomic_target(path) as target:
        stac_geoparquet.arrow.to_parquet(
            stac_geoparquet.arrow.parse_stac_items_to_arrow(docs), target
        )
    return len(docs)


def _table_item_source(path: str, item: pystac.Item) -> str:
    if item.collection_id is None:
        raise ValueError(f"{path}: item {item.id!r} has no collection (its source id)")
    return item.collection_id


class StacCatalog:
    """A static STAC catalog, walked once and indexed by source id (= collection id).

    Cheap to reuse across windows: the index is built on `open` and queries only bisect a
    sorted time list and test bboxes; the index holds no file open (the reader keeps its own
    cache of open datasets).
    """

    def __init__(
        self,
        items: Iterable[tuple[str, pystac.Item]],
        href: str | None = None,
        *,
        provider: str | None = None,
        access: providers.Access | None = None,
    ):
        self.href = href
        self.provider = provider
        self.access = access or providers.Access()
        # collection -> why its items are not decoded (auto-detection only; logged once)
        self.skipped: dict[str, str] = {}
        by_source: dict[str, list[tuple[ItemRef, pystac.Item]]] = {}
        for source, item in items:
            ref = self._ref(item, source)
            by_source.setdefault(ref.source, []).append((ref, item))
        self._refs: dict[str, list[ItemRef]] = {}
        self._items: dict[str, list[pystac.Item]] = {}
        self._times: dict[str, list[int]] = {}
        for source, pairs in by_source.items():
            pairs.sort(key=lambda p: (p[0].time_ms, p[0].id))
            self._refs[source] = [r for r, _ in pairs]
            self._items[source] = [i for _, i in pairs]
            self._times[source] = [r.time_ms for r, _ in pairs]

    def _ref(self, item: pystac.Item, source: str) -> ItemRef:
        """The item's ItemRef; with no provider forced, an item no profile decodes is kept
        under its collection id (never a registry source, so never read) and its
        collection is logged once and listed in `skipped`."""
        try:
            return item_ref(item, source, provider=self.provider, access=self.access)
        except providers.ProfileError as e:
            if self.provider is not None:
                raise
            collection = item.collection_id or source
            if collection not in self.skipped:
                self.skipped[collection] = str(e)
                log.warning("skipping collection %r: %s", collection, e)
            return _own_item_ref(item, collection, self.access)

    @classmethod
    def open(
        cls,
        path_or_url: str,
        *,
        provider: str | None = None,
        requester_pays: bool = False,
        sign: bool = True,
    ) -> StacCatalog:
        """Read a static catalog (catalog.json or collection.json) or a stac-geoparquet item
        table (`.parquet`) and index its items.

        Args:
            path_or_url: path or URL of the root catalog or collection, or of the table.
            provider: decode every item with this provider's profiles
                (`providers.PROVIDER_NAMES`; --provider); None picks per item.
            requester_pays: allow reads from requester-pays S3 buckets (--requester-pays).
            sign: sign Planetary Computer hrefs before reading (off: --no-sign).

        Returns:
            The indexed catalog. An item's source id is the registry source its profile
            feeds (own contract: its collection id, or its parent catalog's id when it has
            no collection).

        Raises:
            providers.ProfileError: with `provider`, an item it cannot decode.
        """
        path = str(path_or_url)
        access = providers.Access(requester_pays=requester_pays, sign=sign)
        if is_item_table(path):
            pairs = ((_table_item_source(path, i), i) for i in read_item_table(path))
            return cls(pairs, href=path, provider=provider, access=access)
        root = pystac.read_file(path)
        if not isinstance(root, pystac.Catalog):
            raise ValueError(f"{path} is a {type(root).__name__}, not a catalog")

        def walk() -> Iterable[tuple[str, pystac.Item]]:
            for item in root.get_items(recursive=True):
                source = item.collection_id
                if source is None:
                    parent = item.get_parent()
                    source = parent.id if parent is not None else root.id
                yield source, item

        return cls(walk(), href=path, provider=provider, access=access)

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
            or bbox_intersects(refs[i].bbox, bbox_lonlat)
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


# ---------------------------------------------------------------------------------- datasets

# Open datasets kept per process (an LRU keyed by href). One window-year of one granule touches
# ~1,200-2,500 assets, read again for every chip of the tile: a cache smaller than that working
# set would miss on every read of a sequential sweep, so the default holds a few thousand (at
# most half the process's open-file limit). EARTHEMBED_MAX_OPEN_DATASETS overrides it.
MAX_OPEN_DATASETS = 2048

# Set False to read every asset alone through rasterio.warp.reproject, as the reader once did:
# the reference the fast paths (aligned grids in numpy, bands of one grid warped in one call)
# are tested against.
FAST_PATHS = True


def _max_open_default() -> int:
    n = int(os.environ.get("EARTHEMBED_MAX_OPEN_DATASETS") or MAX_OPEN_DATASETS)
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft != resource.RLIM_INFINITY:
            n = min(n, max(16, soft // 2))
    except (ImportError, OSError, ValueError):
        pass
    return max(1, n)


@functools.lru_cache(maxsize=64)
def _epsg_crs(epsg: int) -> CRS:
    return CRS.from_epsg(epsg)


def _file_stamp(href: str) -> tuple[int, ...] | None:
    """Identity of a local file's current content (device, inode, size, times); None if the
    href is remote or virtual (never re-checked) or the file cannot be stat'ed."""
    if href.startswith("/vsi"):
        return None
    if "://" in href:
        if not href.startswith("file://"):
            return None
        href = urllib.parse.unquote(urllib.parse.urlparse(href).path)
    try:
        st = os.stat(href)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _OpenDataset:
    """An open dataset, its lock (held while reading it), and what every read asks of it."""

    __slots__ = (
        "crs",
        "ds",
        "height",
        "href",
        "inverse",
        "lock",
        "nodata",
        "stamp",
        "transform",
        "width",
        "_same_crs",
    )

    def __init__(self, href: str, ds: rasterio.DatasetReader, stamp: tuple[int, ...] | None):
        self.href = href
        self.ds = ds
        self.stamp = stamp
        self.lock = threading.Lock()
        self.crs = ds.crs
        self.transform = ds.transform
        self.inverse = ~ds.transform
        self.width = ds.width
        self.height = ds.height
        self.nodata = ds.nodata
        self._same_crs: dict[int, bool] = {}

    def same_crs(self, epsg: int) -> bool:
        """Whether the dataset's CRS is EPSG:`epsg` (memoized: CRS comparison is slow)."""
        same = self._same_crs.get(epsg)
        if same is None:
            same = self._same_crs[epsg] = bool(self.crs == _epsg_crs(epsg))
        return same


class _DatasetCache:
    """Per-process LRU of open datasets keyed by href; thread-safe.

    A dataset is read under its own lock (GDAL handles are not safe to read concurrently);
    the cache's lock guards only the index. A local file whose stat (inode, size, mtime,
    ctime) changed since it was opened is reopened, so a file fixed or replaced on disk is
    read afresh; evicted or replaced datasets are closed. Open errors are not cached.
    """

    def __init__(self, max_open: int | None = None) -> None:
        self._max_open = max_open
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._open: collections.OrderedDict[str, _OpenDataset] = collections.OrderedDict()

    @property
    def max_open(self) -> int:
        if self._max_open is None:
            self._max_open = _max_open_default()
        return self._max_open

    @max_open.setter
    def max_open(self, n: int) -> None:
        self._max_open = max(1, int(n))
        self._trim()

    def __len__(self) -> int:
        return len(self._open)

    @contextlib.contextmanager
    def dataset(
        self, href: str, resolve: Callable[[], str] | None = None
    ) -> Iterator[_OpenDataset]:
        """The open dataset of `href` (opened if need be, at `resolve()` when given: a signed
        or /vsi path), its lock held while in use."""
        while True:
            entry = self._get(href, resolve)
            with entry.lock:
                if not entry.ds.closed:
                    yield entry
                    return
            self._forget(entry)  # evicted between lookup and lock, or closed elsewhere

    def _forget(self, entry: _OpenDataset) -> None:
        with self._lock:
            if self._open.get(entry.href) is entry:
                del self._open[entry.href]

    def _get(self, href: str, resolve: Callable[[], str] | None = None) -> _OpenDataset:
        stamp = _file_stamp(href)
        with self._lock:
            entry = self._open.get(href)
            if entry is not None and entry.stamp == stamp:
                self._open.move_to_end(href)
                return entry
            stale = self._open.pop(href, None)
        if stale is not None:
            _close(stale)
        ds = rasterio.open(resolve() if resolve is not None else href)
        try:
            entry = _OpenDataset(href, ds, stamp)
        except BaseException:
            ds.close()
            raise
        with self._lock:
            other = self._open.get(href)
            if other is not None and other.stamp == stamp:  # another thread was quicker
                self._open.move_to_end(href)
                drop, entry = [entry], other
            else:
                drop = [self._open.pop(href)] if other is not None else []
                self._open[href] = entry
                drop += self._evict()
        for e in drop:
            _close(e)
        return entry

    def _evict(self) -> list[_OpenDataset]:
        out = []
        while len(self._open) > self.max_open:
            out.append(self._open.popitem(last=False)[1])
        return out

    def _trim(self) -> None:
        with self._lock:
            drop = self._evict()
        for e in drop:
            _close(e)

    def discard(self, href: str) -> None:
        """Forget (and close) the dataset of `href`, e.g. after a read of it failed."""
        with self._lock:
            entry = self._open.pop(href, None)
        if entry is not None:
            _close(entry)

    def clear(self) -> None:
        """Close every open dataset."""
        with self._lock:
            drop = list(self._open.values())
            self._open.clear()
        for e in drop:
            _close(e)


def _close(entry: _OpenDataset) -> None:
    with entry.lock:
        try:
            entry.ds.close()
        except Exception as e:  # a read-only handle: nothing to lose
            log.debug("closing %s: %s", entry.href, e)


_DATASETS = _DatasetCache()
if hasattr(os, "register_at_fork"):
    # A forked child must not share the parent's file offsets (nor inherit a held lock).
    os.register_at_fork(after_in_child=_DATASETS._reset)


def clear_dataset_cache() -> None:
    """Close every dataset the reader holds open in this process."""
    _DATASETS.clear()


def set_max_open_datasets(n: int) -> None:
    """Bound the number of datasets held open in this process (closing the oldest now)."""
    _DATASETS.max_open = n


# ---------------------------------------------------------------------------------- grids


def _source_window(src: _OpenDataset, dst: GridWindow) -> rasterio.windows.Window | None:
    """The dataset pixels covering `dst` plus a margin, clipped to the dataset; None if none."""
    bounds = dst.bounds
    if not src.same_crs(dst.epsg):
        bounds = transform_bounds(_epsg_crs(dst.epsg), src.crs, *bounds, densify_pts=21)
    minx, miny, maxx, maxy = bounds
    inv = src.inverse
    corners = [inv @ (x, y) for x in (minx, maxx) for y in (miny, maxy)]
    cols = [c for c, _ in corners]
    rows = [r for _, r in corners]
    c0 = max(math.floor(min(cols)) - _SRC_MARGIN, 0)
    r0 = max(math.floor(min(rows)) - _SRC_MARGIN, 0)
    c1 = min(math.ceil(max(cols)) + _SRC_MARGIN, src.width)
    r1 = min(math.ceil(max(rows)) + _SRC_MARGIN, src.height)
    if c1 <= c0 or r1 <= r0:
        return None
    return rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)


def _aligned_grid(
    src: _OpenDataset, dst: GridWindow, resampling: Resampling
) -> tuple[int, int, int, int] | None:
    """(col, row, fx, fy) when the dataset's grid is `dst`'s grid coarsened by integer factors.

    `col`, `row`: `dst`'s top-left corner in `dst` pixels from the dataset's top-left corner;
    `fx`, `fy`: source pixel size / `dst` pixel size. Only where the fast path reproduces
    `reproject` exactly: same CRS, north-up, exact integer factors, corners on a common
    lattice; nearest for any factor, bilinear for factors 1 and 2 on the 10 m grid (there
    GDAL's source coordinates are exact binary fractions, so its weights are 1, 3/4, 1/4).
    None otherwise (the caller reprojects).
    """
    if not FAST_PATHS or resampling not in (Resampling.nearest, Resampling.bilinear):
        return None
    if not src.same_crs(dst.epsg):
        return None
    t, p = src.transform, dst.pixel_size
    if t.b != 0 or t.d != 0 or not (t.a > 0 and t.e < 0 and p > 0):
        return None
    fx, fy = t.a / p, -t.e / p
    col, row = (dst.x0 - t.c) / p, (t.f - dst.y0) / p
    if not (fx.is_integer() and fy.is_integer() and col.is_integer() and row.is_integer()):
        return None
    fx, fy, col, row = int(fx), int(fy), int(col), int(row)
    if fx * p != t.a or fy * p != -t.e or t.c + col * p != dst.x0 or t.f - row * p != dst.y0:
        return None
    if resampling == Resampling.bilinear and (
        fx > 2 or fy > 2 or p != PIXEL_SIZE_M or dst.x0 % p or dst.y0 % p
    ):
        return None
    return col, row, fx, fy


def _nearest_aligned(
    src: np.ndarray, col: int, row: int, fx: int, fy: int, shape: tuple[int, int]
) -> np.ndarray:
    """Nearest neighbour onto a grid `fx` x `fy` times finer whose top-left corner is at
    (col, row) fine pixels from `src`'s: each source pixel repeated, NaN outside `src`."""
    h, w = src.shape
    rows = np.arange(row, row + shape[0]) // fy
    cols = np.arange(col, col + shape[1]) // fx
    in_r = (rows >= 0) & (rows < h)
    in_c = (cols >= 0) & (cols < w)
    if not (in_r.any() and in_c.any()):
        return np.full(shape, np.nan, dtype=src.dtype)
    rows = np.minimum(np.maximum(rows, 0), h - 1)
    cols = np.minimum(np.maximum(cols, 0), w - 1)
    out = src.take(rows, axis=0).take(cols, axis=1)
    if not in_r.all():
        out[~in_r] = np.nan
    if not in_c.all():
        out[:, ~in_c] = np.nan
    return out


def _bilinear_taps(n_src: int, off: int, n_dst: int, factor: int) -> tuple[np.ndarray, ...]:
    """GDAL's 4-sample bilinear taps along one axis, for destination pixels off.. off+n_dst-1
    (fine pixels) on a source `factor` times coarser.

    Returns (first tap, second tap, their weights, centre pixel, centre inside): taps and
    centre clipped into the source, a tap outside it weighted 0.
    """
    u = (off + np.arange(n_dst) + 0.5) / factor  # source pixel coordinate of the centre
    i0 = np.floor(u - 0.5).astype(np.intp)
    w0 = 1.5 - (u - i0)
    edge = i0 == -1  # GDAL leans on the first pixel alone there
    i0[edge] = 0
    w0[edge] = 1.0
    i1 = i0 + 1
    w1 = np.where((i1 >= 0) & (i1 < n_src), 1.0 - w0, 0.0)
    w0 = np.where((i0 >= 0) & (i0 < n_src), w0, 0.0)
    centre = np.floor(u).astype(np.intp)
    inside = (centre >= 0) & (centre < n_src)
    top = n_src - 1
    return (
        np.minimum(np.maximum(i0, 0), top),
        np.minimum(np.maximum(i1, 0), top),
        w0,
        w1,
        np.minimum(np.maximum(centre, 0), top),
        inside,
    )


def _bilinear_aligned(
    src: np.ndarray, col: int, row: int, fx: int, fy: int, shape: tuple[int, int]
) -> np.ndarray:
    """What `reproject(..., resampling=bilinear, src_nodata=nan, dst_nodata=nan)` gives onto a
    grid `fx` x `fy` (1 or 2) times finer, corners aligned as in `_nearest_aligned`; `src`
    float32, finite or NaN.

    GDAL's 4-sample kernel: taps outside the source or NaN drop out and the rest are
    renormalized; a destination pixel whose centre falls outside the source or on a NaN
    source pixel stays NaN. Weights are exact binary fractions here, so the products are
    exact; the sum runs in float64 in GDAL's order (UL, UR, LL, LR), then goes to float32.
    """
    if fx == 1 and fy == 1:  # weights 1 and 0: the source pixel itself
        return _nearest_aligned(src, col, row, 1, 1, shape)
    y0, y1, wy0, wy1, cy, in_y = _bilinear_taps(src.shape[0], row, shape[0], fy)
    x0, x1, wx0, wx1, cx, in_x = _bilinear_taps(src.shape[1], col, shape[1], fx)
    wy0, wy1 = wy0[:, None], wy1[:, None]
    mults = (wx0 * wy0, wx1 * wy0, wx0 * wy1, wx1 * wy1)  # UL, UR, LL, LR
    valid = ~np.isnan(src)
    full = bool(valid.all())
    # float32 taps times float64 weights: exact products in float64, as GDAL forms them.
    values = src if full else np.where(valid, src, np.float32(0))
    acc = np.zeros(shape)
    top, bottom = values.take(y0, axis=0), values.take(y1, axis=0)
    acc += top.take(x0, axis=1) * mults[0]
    acc += top.take(x1, axis=1) * mults[1]
    acc += bottom.take(x0, axis=1) * mults[2]
    acc += bottom.take(x1, axis=1) * mults[3]
    keep = in_y[:, None] & in_x[None, :]
    if full:  # every tap inside the source counts: the weights' sum splits by axis
        div = (wy0 + wy1) * (wx0 + wx1)
    else:
        div = np.zeros(shape)
        top, bottom = valid.take(y0, axis=0), valid.take(y1, axis=0)
        div += top.take(x0, axis=1) * mults[0]
        div += top.take(x1, axis=1) * mults[1]
        div += bottom.take(x0, axis=1) * mults[2]
        div += bottom.take(x1, axis=1) * mults[3]
        keep &= valid.take(cy, axis=0).take(cx, axis=1)
    keep &= div >= 1e-5
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (acc / div).astype(np.float32)  # acc / 1.0 is acc: GDAL's two cases agree
    out[~keep] = np.nan
    return out


def _encoding(band: sensors.Band, ref: AssetRef) -> sensors.Encoding:
    """The registry encoding with what the asset's raster:bands (or its profile) state put
    over it (decoding to dB where the profile says the asset holds linear power)."""
    return providers.band_encoding(band.encoding, ref)


_READ_ERRORS = (rasterio.errors.RasterioError, CPLE_BaseError, OSError)


# rasterio's wrapper messages, which only point at the GDAL error underneath.
_GENERIC_ERRORS = ("see previous exception", "read or write failed")


def error_reason(e: BaseException) -> str:
    """A one-line reason for `e` that carries the underlying error: rasterio raises
    "Read failed. See previous exception for details." from GDAL's message, so the chain
    (__cause__, else __context__) is walked and its informative messages kept, outermost
    first, with the innermost (the root cause, e.g. libtiff's) appended when it differs."""
    messages: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur).strip()
        line = text.splitlines()[0] if text else ""
        if line and not any(g in line.lower() for g in _GENERIC_ERRORS) and line not in messages:
            messages.append(line)
        cur = cur.__cause__ or cur.__context__
    if not messages:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if len(messages) == 1:
        return messages[0]
    return f"{messages[0]} ({messages[-1]})"


def _asset_error(item: ItemRef, key: str, href: str, e: BaseException) -> AssetReadError:
    reason = error_reason(e)
    ref = item.assets.get(key)
    if ref is not None and ref.key is not None:  # a provider's asset: name its own key
        reason = providers.explain(reason, ref, item.access)
        key = ref.key
    return AssetReadError(item.id, key, href, providers.redact(reason))


@dataclasses.dataclass
class _Warp:
    """An asset's decoded source window still to be reprojected onto the destination grid."""

    key: str
    href: str
    src: np.ndarray
    transform: Affine
    crs: CRS
    resampling: Resampling


def _opener(ref: AssetRef, access: providers.Access) -> Callable[[], str] | None:
    """How to open a provider's asset (signed, mapped to /vsi); None: its href as it is."""
    if ref.key is None:
        return None
    return functools.partial(providers.open_path, ref, access)


def _mask_unphysical(
    item: ItemRef,
    band: sensors.Band,
    stored: np.ndarray,
    src: np.ndarray,
    masked: dict[str, int] | None,
) -> None:
    """Mask (NaN, in place) decoded values that are not measurements, and count them in
    `masked[band name]`: a saturated integer (the dtype's maximum, e.g. 65535 in a uint16
    reflectance asset) and anything outside the band's physical range (a float 3e38 block).

    Raises:
        AssetReadError: the window's median is outside the range and a unit mistake explains
            it (an asset in DN where its raster:bands state no scale): its frame is
            invalidated with the band and the mistake named, instead of masked silently.
    """
    n = 0
    if np.issubdtype(stored.dtype, np.integer):
        saturated = stored == np.iinfo(stored.dtype).max
        if saturated.any():
            src[saturated] = np.nan
            n += int(saturated.sum())
    bad = sensors.out_of_range(band, src)
    if bad.any():
        lo, hi = band.valid_range
        median = float(np.nanmedian(src))
        if not lo <= median <= hi:
            nonnegative = not (src < 0).any()
            if (mistake := sensors.likely_unit_mistake(band, median, nonnegative)) is not None:
                why = f"{band.name} median {median:.4g} looks like {mistake.looks_like}; {mistake.fix}"
                raise AssetReadError(item.id, band.name, item.assets[band.name].href, why)
        src[bad] = np.nan
        n += int(bad.sum())
    if n and masked is not None:
        masked[band.name] = masked.get(band.name, 0) + n


def _load_asset(
    item: ItemRef,
    key: str,
    dst: GridWindow,
    *,
    encoding: sensors.Encoding | None,
    resampling: Resampling,
    band: sensors.Band | None = None,
    masked: dict[str, int] | None = None,
) -> np.ndarray | _Warp:
    """Read and decode the window of one asset that `dst` needs: the plane on `dst`'s grid
    where a fast path gives it (or the asset misses `dst`), else the `_Warp` to run. With
    `band`, values that are not measurements are masked and counted (`_mask_unphysical`)."""
    ref = item.assets.get(key)
    if ref is None:
        raise AssetReadError(item.id, key, None, f"item has no asset {key!r}")
    if ref.error is not None:
        raise AssetReadError(item.id, ref.key or key, None, ref.error)
    dtype = np.float32 if encoding else np.float64
    options = providers.gdal_options(ref, item.access)
    try:
        with (
            rasterio.Env(**options) if options else contextlib.nullcontext(),
            _DATASETS.dataset(ref.href, _opener(ref, item.access)) as opened,
        ):
            win = _source_window(opened, dst)
            if win is None:
                return np.full(dst.shape, np.nan, dtype=dtype)
            stored = opened.ds.read(1, window=win)
    except _READ_ERRORS as e:
        _DATASETS.discard(ref.href)  # reopen next time: the file may be fixed by then
        raise _asset_error(item, key, ref.href, e) from e
    if encoding is None:
        src = stored.astype(np.float64)
        if opened.nodata is not None:
            src[stored == opened.nodata] = np.nan
    else:
        src = encoding.decode(stored)
        # A nodata code the file itself declares is missing too.
        if opened.nodata is not None and not np.isnan(opened.nodata):
            src[stored == opened.nodata] = np.nan
        if band is not None:
            _mask_unphysical(item, band, stored, src, masked)
    grid = _aligned_grid(opened, dst, resampling)
    if grid is not None and src.dtype == dtype:
        col, row, fx, fy = grid
        col -= int(win.col_off) * fx
        row -= int(win.row_off) * fy
        if resampling == Resampling.nearest:
            return _nearest_aligned(src, col, row, fx, fy, dst.shape)
        # GDAL samples a 1-pixel-wide source as nearest, and inf * 0 weights give NaN.
        if dtype == np.float32 and min(src.shape) >= 2 and not np.isinf(src).any():
            return _bilinear_aligned(src, col, row, fx, fy, dst.shape)
    return _Warp(
        key,
        ref.href,
        src,
        opened.transform @ Affine.translation(win.col_off, win.row_off),
        opened.crs,
        resampling,
    )


def sample_band(item: ItemRef, band: sensors.Band, size: int = 32) -> np.ndarray:
    """About `size` x `size` decoded values of one band over the whole asset: a decimated read
    (GDAL takes the nearest overview of a COG, so a few small range requests), in registry
    units, nodata as NaN, nothing masked as unphysical (what the unit checks look at).

    Raises:
        AssetReadError: the item has no such asset, or it cannot be read.
    """
    ref = item.assets.get(band.name)
    if ref is None or ref.error is not None:
        why = ref.error if ref is not None else f"item has no asset {band.name!r}"
        raise AssetReadError(item.id, band.name, None, why)
    options = providers.gdal_options(ref, item.access)
    try:
        with (
            rasterio.Env(**options) if options else contextlib.nullcontext(),
            _DATASETS.dataset(ref.href, _opener(ref, item.access)) as opened,
        ):
            ds = opened.ds
            shape = (min(size, ds.height), min(size, ds.width))
            stored = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
    except _READ_ERRORS as e:
        _DATASETS.discard(ref.href)
        raise _asset_error(item, band.name, ref.href, e) from e
    values = _encoding(band, ref).decode(stored)
    if opened.nodata is not None and not np.isnan(opened.nodata):
        values[stored == opened.nodata] = np.nan
    return values


def _run_warps(item: ItemRef, warps: Sequence[_Warp], dst: GridWindow) -> list[np.ndarray]:
    """`reproject` the sources of `warps` (one grid, one NaN mask, if more than one) onto
    `dst`; in one call for several, which gives each band what its own call would."""
    w = warps[0]
    src = w.src if len(warps) == 1 else np.stack([x.src for x in warps])
    out = np.full(src.shape[:-2] + dst.shape, np.nan, dtype=src.dtype)
    try:
        reproject(
            src,
            out,
            src_transform=w.transform,
            src_crs=w.crs,
            dst_transform=dst.transform,
            dst_crs=_epsg_crs(dst.epsg),
            resampling=w.resampling,
            src_nodata=np.nan,
            dst_nodata=np.nan,
        )
    except _READ_ERRORS as e:
        if len(warps) == 1:
            raise _asset_error(item, w.key, w.href, e) from e
        return [_run_warps(item, [x], dst)[0] for x in warps]  # name the asset that fails
    return [out] if len(warps) == 1 else list(out)


def _warp_all(item: ItemRef, warps: Sequence[_Warp], dst: GridWindow) -> dict[str, np.ndarray]:
    """Run `warps`, batching those on one source grid with one NaN mask (several bands of a
    30 m scene: their shared per-call overhead dominates small windows)."""
    batches: list[list[_Warp]] = []
    masks: list[np.ndarray] = []
    for w in warps:
        nan = np.isnan(w.src)
        for batch, mask in zip(batches, masks, strict=True):
            b = batch[0]
            if (
                FAST_PATHS
                and b.src.shape == w.src.shape
                and b.src.dtype == w.src.dtype
                and b.resampling == w.resampling
                and b.transform == w.transform
                and b.crs == w.crs
                and np.array_equal(mask, nan)
            ):
                batch.append(w)
                break
        else:
            batches.append([w])
            masks.append(nan)
    out = {}
    for batch in batches:
        out.update(zip((w.key for w in batch), _run_warps(item, batch, dst), strict=True))
    return out


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
    outside the asset's extent are NaN either way. A source on `dst`'s grid (or an integer
    coarsening of it, see `_aligned_grid`) is resampled in numpy with the same result as
    `reproject`; anything else goes through `reproject`.
    """
    got = _load_asset(item, key, dst, encoding=encoding, resampling=resampling)
    return got if isinstance(got, np.ndarray) else _run_warps(item, [got], dst)[0]


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
    sensor: sensors.Sensor,
    item: ItemRef,
    dst: GridWindow,
    *,
    expected: Iterable[str] = (),
    masked: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One item on the padded grid -> (values (H, W, C) registry units, valid (H, W),
    observed (H, W): any band finite).

    `expected`: band names the item must have an asset for (its source's other items have
    them): a dropped asset key raises instead of reading as a missing band. `masked` counts
    the values masked as not measurements, by band name.
    """
    stored = [b for b in sensor.stored_bands if b.name in item.assets]
    if not stored:
        raise AssetReadError(
            item.id,
            ",".join(b.name for b in sensor.stored_bands),
            None,
            f"no asset for any band of {sensor.id!r}; assets {sorted(item.assets)}",
        )
    if dropped := [b for b in expected if b not in item.assets]:
        raise AssetReadError(
            item.id,
            ",".join(dropped),
            None,
            f"no asset for band(s) {', '.join(dropped)} of {sensor.id!r}, which its other "
            f"items have; assets {sorted(item.assets)}",
        )
    missing = np.full(dst.shape, np.nan, dtype=np.float32)
    planes: dict[str, np.ndarray] = {}
    warps: list[_Warp] = []
    for band in stored:
        # Bilinear for continuous bands keeps 20/30 m and 0.1 degree grids smooth on 10 m;
        # categorical layers must keep their codes.
        resampling = Resampling.bilinear if band.kind == "continuous" else Resampling.nearest
        got = _load_asset(
            item,
            band.name,
            dst,
            encoding=_encoding(band, item.assets[band.name]),
            resampling=resampling,
            band=band,
            masked=masked,
        )
        if isinstance(got, np.ndarray):
            planes[band.name] = got
        else:
            warps.append(got)
    planes.update(_warp_all(item, warps, dst))
    for band in sensor.bands:
        if band.derived_from == "elevation" and band.name == "slope":
            elev = planes.get("elevation", missing)
            planes[band.name] = sensors.slope_degrees(elev, dst.pixel_size)
    valid = np.ones(dst.shape, dtype=bool)
    for band in stored:
        valid &= np.isfinite(planes[band.name])
    observed = np.zeros(dst.shape, dtype=bool)
    for plane in planes.values():
        observed |= np.isfinite(plane)
    # Stacking band planes is much faster than writing each into a strided (H, W, C) slot.
    values = np.stack([planes.get(b.name, missing) for b in sensor.bands], axis=-1)
    if sensor.mask.band is not None:
        quality = _read_asset(
            item, sensor.mask.band, dst, encoding=None, resampling=Resampling.nearest
        )
        inside = np.isfinite(quality)
        clear = sensors.mask_from_quality(sensor, np.where(inside, quality, 0).astype(np.int64))
        valid &= inside & clear
    return values, valid, observed


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
    masked: dict[str, int] | None = None,
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
        masked: dict to add, per 'source/band', the count of source pixels masked as not
            measurements: saturated integers, values outside the band's physical range
            (`sensors.Band.valid_range`). A window whose median is outside the range in a
            way a unit mistake explains (DN stated without scale) fails that item's read.

    Returns:
        SourceFrames in registry units and band order, frames in time order. Items of one
        acquisition (datetimes within `SAME_ACQUISITION_MS`) merge into one frame at the
        earliest time, the first clear pixel winning; frames that hold no data in the window
        (outside every footprint) are left out; no items give T = 0 frames. Bands an item has
        no asset for are NaN; derived bands (slope) come from the resampled elevation. A
        failed item invalidates its own frame only. An own-contract item that lacks a band
        asset the source's other items (of this read) have is a failed read, not a missing
        band.
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
    # Bands the own-contract items of this read have: one that lacks them dropped a key.
    own = [r for r in refs if r.provider == providers.OWN]
    expected = tuple(b.name for b in sensor.stored_bands if any(b.name in r.assets for r in own))
    counts: dict[str, int] = {}
    groups = _group_acquisitions(refs, sensor.is_static)
    # Frames go straight into arrays for every acquisition (those with no data here are
    # left out at the end): no per-frame list to stack, whose copy doubled the read's peak.
    frames_v = np.empty((len(groups), *window.shape, len(sensor.bands)), np.float32)
    frames_m = np.empty((len(groups), *window.shape), bool)
    kept = 0
    times, geoms = [], []
    with rasterio.Env(**GDAL_ENV):
        for group in groups:
            values = valid = observed = None
            failed = False
            for ref in sorted(group, key=lambda r: r.id):
                try:
                    v, m, seen = _read_item(
                        sensor,
                        ref,
                        dst,
                        expected=expected if ref.provider == providers.OWN else (),
                        masked=counts,
                    )
                except AssetReadError as e:
                    if on_error == "raise":
                        raise
                    log.warning("invalidating frame of %s: %s", source_id, e)
                    if errors is not None:
                        errors.append(e.short)
                    failed = True
                    break
                v, m, seen = v[crop], m[crop], seen[crop]
                # First clear pixel wins; where nothing is clear yet, keep any observed
                # (e.g. cloudy) values so they stay visible to masked_values() users.
                if values is None:  # nothing taken yet: take what is clear or observed
                    take = m | seen
                    values, valid, observed = v, m, seen
                    if not take.all():
                        values[~take] = np.nan
                    continue
                take = (m & ~valid) | (~valid & ~observed & seen)
                values[take] = v[take]
                observed = np.where(take, seen, observed)
                valid |= m
            if failed or values is None:
                values = np.full((*window.shape, len(sensor.bands)), np.nan, dtype=np.float32)
                valid = np.zeros(window.shape, dtype=bool)
            elif not observed.any():
                continue  # bbox touched, data did not: no observation here
            frames_v[kept], frames_m[kept] = values, valid
            kept += 1
            del values, valid, observed
            times.append(sensors.STATIC_TIME_MS if sensor.is_static else group[0].time_ms)
            geoms.append(_frame_geometry(sensor, group))
    if masked is not None:
        for band, n in counts.items():
            key = f"{source_id}/{band}"
            masked[key] = masked.get(key, 0) + n
    if not kept:
        return _empty_frames(sensor, window)
    if kept < len(groups):  # acquisitions with no data here: a copy of the rest, not a view
        frames_v, frames_m = frames_v[:kept].copy(), frames_m[:kept].copy()
    return SourceFrames(
        source_id,
        frames_v,
        frames_m,
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
        Observations over the window, one SourceFrames per source; `out_of_range` counts the
        values masked as not measurements (see `read_source`).
    """
    if sources is None:
        sources = [s for s in sensors.SOURCE_IDS if s in catalog.sources]
    errors: list[str] = []
    masked: dict[str, int] = {}
    frames = {
        s: read_source(
            catalog, s, window, start_ms, end_ms, on_error=on_error, errors=errors, masked=masked
        )
        for s in sources
    }
    return Observations(sources=frames, window=window, errors=errors, out_of_range=masked)
