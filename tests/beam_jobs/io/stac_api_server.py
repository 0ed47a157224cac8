"""A small STAC API on 127.0.0.1 for tests: /, /conformance, /collections, /search.

It replays item dicts (for example a static catalog's items with absolute asset hrefs) the
way the public APIs do (ARCHITECTURE.md, Sources; ../shared/stac_fixtures/README.md, 9.):
GET /search with query parameters and a GET `next` link carrying `token`, POST /search with a
JSON body and a POST `next` link whose body carries `token` (`merge: false`, as Earth Search
v1); pages of at most `max_limit` items, sorted by (datetime, id); filters on `collections`,
`ids`, `bbox`, `intersects` and `datetime` (closed interval, `..` open). Failures are
injected per path: `refuse[path] = status` answers every request with that status, and
`fail_next` (a list of statuses) answers the next requests, any path, with them (a 429 carries
`Retry-After: 0`); `conforms_to` is what the landing page declares. Every request is logged in
`requests` as (method, path, params).

    with StacApiServer(items, collections) as api:
        Client.open(api.url).search(...)
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import shapely
import shapely.geometry

CONFORMS_TO = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _item_interval(item: Mapping) -> tuple[dt.datetime, dt.datetime]:
    props = item["properties"]
    if props.get("datetime"):
        t = _parse_time(props["datetime"])
        return t, t
    return _parse_time(props["start_datetime"]), _parse_time(props["end_datetime"])


def _matches(item: Mapping, query: Mapping[str, Any]) -> bool:
    if query.get("collections") and item.get("collection") not in query["collections"]:
        return False
    if query.get("ids") and item["id"] not in query["ids"]:
        return False
    area = None
    if query.get("bbox"):
        area = shapely.box(*[float(v) for v in query["bbox"]])
    elif query.get("intersects"):
        area = shapely.geometry.shape(query["intersects"])
    if area is not None and not shapely.geometry.shape(item["geometry"]).intersects(area):
        return False
    if query.get("datetime"):
        lo, _, hi = str(query["datetime"]).partition("/")
        start, end = _item_interval(item)
        if lo not in ("", "..") and end < _parse_time(lo):
            return False
        if hi and hi != ".." and start > _parse_time(hi):
            return False
    return True


def _get_query(params: Mapping[str, list[str]]) -> dict[str, Any]:
    """GET /search query string -> the POST body's form."""
    q: dict[str, Any] = {}
    for key, values in params.items():
        value = values[-1]
        if key in ("collections", "ids"):
            q[key] = value.split(",")
        elif key == "bbox":
            q[key] = [float(v) for v in value.split(",")]
        elif key == "intersects":
            q[key] = json.loads(value)
        elif key == "limit":
            q[key] = int(value)
        else:
            q[key] = value
    return q


def _query_string(query: Mapping[str, Any]) -> dict[str, str]:
    """The POST body's form -> GET /search query parameters."""
    out = {}
    for key, value in query.items():
        if key in ("collections", "ids", "bbox"):
            out[key] = ",".join(str(v) for v in value)
        elif key == "intersects":
            out[key] = json.dumps(value)
        else:
            out[key] = str(value)
    return out


class StacApiServer:
    """A threaded HTTP STAC API over `items` (dicts), started on enter, stopped on exit."""

    def __init__(
        self,
        items: Iterable[Mapping],
        collections: Iterable[Mapping],
        *,
        max_limit: int = 100,
        default_limit: int = 10,
    ):
        self.items = sorted((dict(i) for i in items), key=lambda i: (_item_interval(i)[0], i["id"]))
        self.collections = {c["id"]: dict(c) for c in collections}
        self.max_limit = max_limit
        self.default_limit = default_limit
        self.conforms_to = list(CONFORMS_TO)
        self.refuse: dict[str, int] = {}
        self.fail_next: list[int] = []
        self.requests: list[tuple[str, str, dict]] = []
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "the server is not running"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> StacApiServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet test output
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                url = urllib.parse.urlsplit(self.path)
                params = urllib.parse.parse_qs(url.query)
                server._answer(self, "GET", url.path, _get_query(params))

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                server._answer(self, "POST", urllib.parse.urlsplit(self.path).path, body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = None

    def search_requests(self) -> list[tuple[str, str, dict]]:
        """The requests made to /search, in order."""
        return [r for r in self.requests if r[1] == "/search"]

    # ------------------------------------------------------------------ routes

    def _answer(self, handler, method: str, path: str, params: dict) -> None:
        path = path.rstrip("/") or "/"
        with self._lock:
            self.requests.append((method, path, params))
            status = self.fail_next.pop(0) if self.fail_next else self.refuse.get(path)
        if status is not None:
            headers = {"Retry-After": "0"} if status == 429 else {}
            self._send(handler, status, {"code": str(status), "description": "refused"}, headers)
            return
        if path == "/":
            self._send(handler, 200, self._landing())
        elif path == "/conformance":
            self._send(handler, 200, {"conformsTo": self.conforms_to})
        elif path == "/collections":
            cols = [self._collection(c) for c in self.collections]
            self._send(handler, 200, {"collections": cols, "links": []})
        elif path.startswith("/collections/") and path.count("/") == 2:
            cid = path.split("/")[2]
            if cid in self.collections:
                self._send(handler, 200, self._collection(cid))
            else:
                self._send(handler, 404, {"code": "NotFound", "description": f"no {cid}"})
        elif path == "/search" and method in ("GET", "POST"):
            self._send(handler, 200, self._search(method, params))
        else:
            self._send(handler, 404, {"code": "NotFound", "description": path})

    def _landing(self) -> dict:
        base = self.url
        return {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": "test-stac-api",
            "description": "a STAC API replaying recorded items (tests)",
            "conformsTo": self.conforms_to,
            "links": [
                {"rel": "self", "href": f"{base}/", "type": "application/json"},
                {"rel": "root", "href": f"{base}/", "type": "application/json"},
                {"rel": "conformance", "href": f"{base}/conformance"},
                {"rel": "data", "href": f"{base}/collections", "type": "application/json"},
                {
                    "rel": "search",
                    "href": f"{base}/search",
                    "type": "application/geo+json",
                    "method": "GET",
                },
                {
                    "rel": "search",
                    "href": f"{base}/search",
                    "type": "application/geo+json",
                    "method": "POST",
                },
            ],
        }

    def _collection(self, cid: str) -> dict:
        doc = dict(self.collections[cid])
        doc["links"] = [
            {"rel": "self", "href": f"{self.url}/collections/{cid}"},
            {"rel": "root", "href": f"{self.url}/"},
            {"rel": "items", "href": f"{self.url}/collections/{cid}/items"},
        ]
        return doc

    def _search(self, method: str, params: dict) -> dict:
        query = {k: v for k, v in params.items() if k not in ("limit", "token")}
        limit = min(int(params.get("limit") or self.default_limit), self.max_limit)
        start = int(str(params.get("token") or "next:0").split(":")[1])
        found = [i for i in self.items if _matches(i, query)]
        page = found[start : start + limit]
        links = [{"rel": "root", "href": f"{self.url}/"}]
        if start + limit < len(found):
            token = f"next:{start + limit}"
            if method == "GET":
                qs = urllib.parse.urlencode(
                    {**_query_string(query), "limit": limit, "token": token}
                )
                href = f"{self.url}/search?{qs}"
                links.append({"rel": "next", "href": href, "method": "GET"})
            else:
                links.append(
                    {
                        "rel": "next",
                        "href": f"{self.url}/search",
                        "method": "POST",
                        "body": {**query, "limit": limit, "token": token},
                        "merge": False,
                    }
                )
        return {
            "type": "FeatureCollection",
            "features": page,
            "links": links,
            "numberMatched": len(found),
            "numberReturned": len(page),
        }

    @staticmethod
    def _send(handler, status: int, doc: Mapping, headers: Mapping[str, str] | None = None):
        data = json.dumps(doc).encode()
        handler.send_response(status)
        ctype = "application/geo+json" if "features" in doc else "application/json"
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)


def replay_catalog(catalog_json: str) -> tuple[list[dict], list[dict]]:
    """A static catalog's items as an API returns them (absolute asset hrefs, `collection`
    set, the API's own links), and its collections."""
    import pystac

    root = pystac.read_file(catalog_json)
    items = []
    for item in root.get_items(recursive=True):
        doc = item.to_dict(include_self_link=False, transform_hrefs=False)
        for key, asset in item.assets.items():
            doc["assets"][key]["href"] = asset.get_absolute_href()
        doc["collection"] = item.collection_id
        doc["links"] = []
        items.append(doc)
    collections = [
        c.to_dict(include_self_link=False, transform_hrefs=False)
        for c in root.get_children()
        if isinstance(c, pystac.Collection)
    ]
    return items, collections
