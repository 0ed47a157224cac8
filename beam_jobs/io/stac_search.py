"""Find a job's items in a STAC API: the AOI and period searched once, when the job starts.

    items = search_items("https://earth-search.aws.element84.com/v1", ["sentinel-2-l2a"],
                         geometry=aoi_lonlat, start_ms=t0, end_ms=t1)
    stac.write_item_table(items, f"{out}/{SEARCH_ITEMS_FILE}")   # workers: StacCatalog.open

`embed --stac-api URL --collections A,B` and `build-training-data` call this while they plan
(before the model loads), write what was found as a stac-geoparquet item table in --out and
hand that table to the workers as their catalog: the reader downstream is the one a static
catalog uses, and the table records exactly which items a run saw (an API's holdings change).

The search goes through pystac-client, one search per collection (a static source, the DEM,
is searched without the period: its tiles carry a production date, not an acquisition date),
by the AOI (`intersects`; its bounding box past `MAX_AOI_VERTICES`) and the period (STAC
intervals are closed, the job's periods end-exclusive: the end is taken 1 ms early), POST by
default (GET where the API answers POST with 405), following every `next` link, GET or POST.
Requests that get 429 or a 5xx are retried with exponential backoff (a urllib3 Retry:
`retries` tries, `backoff_s` * 2^n seconds apart, `Retry-After` respected). Anything else the
API refuses (a 4xx, a landing page that is not a STAC API with item search, a collection it
does not have) raises `StacApiError`, one line naming the URL.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

import pystac
import shapely
import shapely.geometry
from urllib3 import Retry

from beam_jobs.io import providers
from schemas import sensors

log = logging.getLogger(__name__)

# The table a search writes in the job's --out; the job's workers read it as their catalog.
SEARCH_ITEMS_FILE = "stac_items.parquet"
# Items asked per page (an API may cap it): a recorded Earth Search page of 10 Sentinel-2
# items is 134 kB, so a page of 100 is ~1.3 MB.
DEFAULT_PAGE_SIZE = 100
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF_S = 1.0
# (connect, read) seconds per request.
DEFAULT_TIMEOUT_S = (10.0, 120.0)
RETRY_STATUSES = (429, 500, 502, 503, 504)
# An AOI with more vertices is searched by its bounding box (a superset; the reader clips):
# APIs cap request sizes, and a GET query string carries the geometry.
MAX_AOI_VERTICES = 500

_COLLECTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


class StacApiError(ValueError):
    """A STAC API refused a search or is not one; the message names the URL."""


def parse_collections(text: str | None) -> tuple[str, ...]:
    """'A,B' -> ('A', 'B'); ValueError naming --collections when empty or malformed."""
    ids = tuple(s.strip() for s in (text or "").split(","))
    if not text or not all(ids):
        raise ValueError(f"--collections: give collection ids, comma-separated; got {text!r}")
    for cid in ids:
        if not _COLLECTION_ID.fullmatch(cid):
            raise ValueError(f"--collections: {cid!r} is not a collection id")
    return ids


def check_api_url(url: str, *, remote_run: bool = False) -> str:
    """The URL if it can be a STAC API root: http(s) with a host, https for a remote run
    (workers and launchers in the cloud talk to the internet over TLS only). ValueError
    naming --stac-api otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--stac-api {url}: not an http(s) URL")
    if remote_run and parts.scheme != "https":
        raise ValueError(f"--stac-api {url}: a run on Dataflow takes an https URL only")
    return url


def check_search_options(
    stac_api: str | None, collections: str | None, *, remote_run: bool
) -> tuple[str, ...]:
    """A job's --stac-api/--collections -> the collection ids (none without --stac-api);
    ValueError naming the option at fault."""
    if not stac_api:
        if collections:
            raise ValueError("--collections applies to --stac-api only")
        return ()
    if not collections:
        raise ValueError(f"--stac-api {stac_api} needs --collections (the API's collection ids)")
    check_api_url(stac_api, remote_run=remote_run)
    return parse_collections(collections)


def api_retry(retries: int = DEFAULT_RETRIES, backoff_s: float = DEFAULT_BACKOFF_S) -> Retry:
    """Retry 429 and 5xx answers (any method: a search POST changes nothing) with backoff."""
    return Retry(
        total=retries,
        backoff_factor=backoff_s,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer comes back: its status goes in the error
    )


def search_period(start_ms: int, end_ms: int) -> str:
    """[start_ms, end_ms) -> a closed STAC datetime interval 'START/END' in UTC."""

    def iso(ms: int) -> str:
        t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
        return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    return f"{iso(start_ms)}/{iso(end_ms - 1)}"


def search_geometry(geometry: shapely.Geometry) -> dict[str, Any]:
    """A lon/lat AOI -> the `intersects` GeoJSON of the search (its bbox when too detailed)."""
    if shapely.get_num_coordinates(geometry) > MAX_AOI_VERTICES:
        geometry = shapely.box(*geometry.bounds)
    return shapely.geometry.mapping(geometry)


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refusal(url: str, what: str, err: Exception) -> StacApiError:
    status = getattr(err, "status_code", None)
    answer = f"HTTP {status}: " if status else ""
    return StacApiError(f"--stac-api {url}: {what}: {answer}{_one_line(err) or type(err).__name__}")


def _open_client(url: str, retry: Retry, timeout_s: Any):
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    io = StacApiIO(max_retries=retry, timeout=timeout_s)
    try:
        client = Client.open(url, stac_io=io)
    except Exception as e:  # an I/O boundary: whatever the answer was, it is not a STAC API
        raise _refusal(url, "cannot open it as a STAC API", e) from e
    if not client.conforms_to("ITEM_SEARCH"):
        raise StacApiError(
            f"--stac-api {url}: not a STAC API with item search "
            "(its landing page declares no item-search conformance class)"
        )
    return client


def _check_collections(url: str, client, collections: Sequence[str]) -> None:
    """Each collection exists: an unknown id would otherwise search to nothing, silently."""
    for cid in collections:
        try:
            found = client.get_collection(cid)
        except Exception as e:  # I/O boundary
            raise _refusal(url, f"cannot read collection {cid!r}", e) from e
        if found is None:
            try:
                known = sorted(c.id for c in client.get_collections())
            except Exception:  # the listing is only a hint for the message
                known = []
            hint = f"; it has {', '.join(known[:30])}" if known else ""
            raise StacApiError(f"--stac-api {url}: no collection {cid!r}{hint}")


def _search_collection(client, cid: str, query: dict[str, Any], method: str) -> list[dict]:
    from pystac_client.exceptions import APIError

    search = client.search(collections=[cid], method=method, **query)
    try:
        return list(search.items_as_dicts())
    except APIError as e:
        if method == "POST" and getattr(e, "status_code", None) == 405:
            return _search_collection(client, cid, query, "GET")
        raise


def search_items(
    url: str,
    collections: Sequence[str],
    *,
    geometry: shapely.Geometry,
    start_ms: int,
    end_ms: int,
    method: str = "POST",
    page_size: int = DEFAULT_PAGE_SIZE,
    retries: int = DEFAULT_RETRIES,
    backoff_s: float = DEFAULT_BACKOFF_S,
    timeout_s: float | tuple[float, float] = DEFAULT_TIMEOUT_S,
) -> list[pystac.Item]:
    """The items of `collections` over a lon/lat AOI and a period, from a STAC API.

    Args:
        url: the API's root (landing page) URL.
        collections: collection ids; each must exist in the API.
        geometry: the AOI in lon/lat (EPSG:4326).
        start_ms: inclusive start of the period, ms since the epoch.
        end_ms: exclusive end of the period. Static sources (sensors registry) are searched
            without the period.
        method: 'POST' or 'GET' for the first page (`next` links say their own).
        page_size: items asked per page (the API may cap it).
        retries: tries per request on 429/5xx and connection errors.
        backoff_s: backoff factor: waits of backoff_s * 2^n seconds between tries.
        timeout_s: per-request timeout, seconds or (connect, read).

    Returns:
        pystac Items, per collection in the API's order, each once (by collection and id),
        `collection_id` set.

    Raises:
        StacApiError: one line naming the URL: the API refused (a 4xx, or a 429/5xx still
            after the retries), is not a STAC API with item search, lacks a collection, or
            has no item of any of them there and then (a job could only write nodata).
    """
    if method not in ("GET", "POST"):
        raise ValueError(f"method must be GET or POST, not {method!r}")
    client = _open_client(url, api_retry(retries, backoff_s), timeout_s)
    _check_collections(url, client, collections)
    seen: set[tuple[str, str]] = set()
    items: list[pystac.Item] = []
    for cid in collections:
        query: dict[str, Any] = {"intersects": search_geometry(geometry), "limit": page_size}
        source = providers.collection_source(cid)
        static = source is not None and sensors.get_sensor(source).is_static
        if not static:
            query["datetime"] = search_period(start_ms, end_ms)
        try:
            found = _search_collection(client, cid, query, method)
        except Exception as e:  # I/O boundary: any failure of the search is the API's answer
            raise _refusal(url, f"search of {cid!r} failed", e) from e
        n = 0
        for doc in found:
            doc.setdefault("collection", cid)
            key = (doc["collection"], doc["id"])
            if key in seen:
                continue
            seen.add(key)
            items.append(pystac.Item.from_dict(doc, preserve_dict=False))
            n += 1
        log.info("%s: %d items of %s over the AOI%s", url, n, cid, "" if static else " and period")
    if not items:
        raise StacApiError(
            f"--stac-api {url}: no item of {', '.join(collections)} over the AOI in "
            f"{search_period(start_ms, end_ms)}"
        )
    return items
