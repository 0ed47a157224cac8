"""STAC API search (beam_jobs/io/stac_search.py) against a local STAC API, and item tables.

The API (stac_api_server.py, 127.0.0.1, started and stopped by the `api` fixture) replays the
items of a tiny simulated region (Sentinel-2 and DEM, two 64 x 30 px granules, as in
tests/beam_jobs/test_embed.py) with absolute asset hrefs, in pages of at most 2 items.
`embed --stac-api` over it must write the same bytes as `embed --stac catalog.json`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
import stac_geoparquet.arrow
from stac_api_server import StacApiServer, replay_catalog

from beam_jobs import build_training_data, embed, inference, runner
from beam_jobs.io import stac, stac_search
from schemas.grid import GridWindow

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SIM_BBOX = "4.643759,50.586682,4.660491,50.588896"
AOI = shapely.box(*map(float, SIM_BBOX.split(",")))
PERIOD = "2023-05-01/2023-08-01"
LABEL = "20230501_20230801"
START_MS, END_MS = runner.parse_period(PERIOD)
COLLECTIONS = ("sentinel2_l2a", "cop_dem")


@pytest.fixture(scope="module")
def sim_catalog(embed_sim_catalog) -> Path:
    return embed_sim_catalog  # beam_jobs/conftest.py: SIM_BBOX, the COLLECTIONS


@pytest.fixture(scope="module")
def replayed(sim_catalog) -> tuple[list[dict], list[dict]]:
    return replay_catalog(str(sim_catalog))


@pytest.fixture
def api(replayed):
    items, collections = replayed
    with StacApiServer(items, collections, max_limit=2) as server:
        yield server


def _time_ms(doc: dict) -> int:
    when = dt.datetime.fromisoformat(doc["properties"]["datetime"].replace("Z", "+00:00"))
    return stac.datetime_to_ms(when)


def _expected_ids(items: list[dict]) -> dict[str, set[str]]:
    """By hand: the S2 items of the period, every DEM item (all lie inside the AOI)."""
    return {
        "sentinel2_l2a": {
            d["id"]
            for d in items
            if d["collection"] == "sentinel2_l2a" and START_MS <= _time_ms(d) < END_MS
        },
        "cop_dem": {d["id"] for d in items if d["collection"] == "cop_dem"},
    }


def _search(url: str, **kw):
    kw = {"geometry": AOI, "start_ms": START_MS, "end_ms": END_MS, "backoff_s": 0.01, **kw}
    return stac_search.search_items(url, kw.pop("collections", COLLECTIONS), **kw)


# ------------------------------------------------------------------------------- pure


def test_search_period_closed_interval_and_options():
    assert (
        stac_search.search_period(START_MS, END_MS)
        == "2023-05-01T00:00:00.000Z/2023-07-31T23:59:59.999Z"
    )
    assert stac_search.parse_collections(" sentinel-2-l2a, cop-dem-glo-30") == (
        "sentinel-2-l2a",
        "cop-dem-glo-30",
    )
    check = stac_search.check_search_options
    assert check(None, None, remote_run=True) == ()
    assert check("http://127.0.0.1:8000", "a,b", remote_run=False) == ("a", "b")
    for args, remote, message in [
        ((None, "a"), False, "--collections applies to --stac-api only"),
        (("https://x.org/v1", None), False, "needs --collections"),
        (("https://x.org/v1", "a,,b"), False, "--collections"),
        (("https://x.org/v1", "a b"), False, "'a b' is not a collection id"),
        (("http://x.org/v1", "a"), True, "https URL only"),
        (("x.org/v1", "a"), False, r"--stac-api x.org/v1: not an http\(s\) URL"),
    ]:
        with pytest.raises(ValueError, match=message):
            check(*args, remote_run=remote)


def test_search_geometry_bbox_past_the_vertex_cap():
    small = stac_search.search_geometry(AOI)
    assert small["type"] == "Polygon" and len(small["coordinates"][0]) == 5
    detailed = AOI.buffer(0.01, quad_segs=200)  # > 800 vertices
    searched = shapely.geometry.shape(stac_search.search_geometry(detailed))
    assert searched.equals(shapely.box(*detailed.bounds))


# ------------------------------------------------------------------------------- search


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_search_follows_every_page(api, replayed, method):
    items = _search(api.url, method=method)
    want = _expected_ids(replayed[0])
    n_s2, n_dem = len(want["sentinel2_l2a"]), len(want["cop_dem"])
    assert n_s2 > 5 and n_dem == 2
    got: dict[str, list[str]] = {}
    for item in items:
        got.setdefault(item.collection_id, []).append(item.id)
    assert {k: set(v) for k, v in got.items()} == want
    assert len(items) == n_s2 + n_dem  # each once
    # Pages of 2: ceil(n / 2) requests per collection, every one the same method, all
    # but the first of each collection carrying the token of a `next` link.
    searches = api.search_requests()
    assert len(searches) == math.ceil(n_s2 / 2) + math.ceil(n_dem / 2)
    assert {m for m, _, _ in searches} == {method}
    assert sum("token" in p for _, _, p in searches) == len(searches) - 2
    s2_query = searches[0][2]
    assert s2_query["datetime"] == "2023-05-01T00:00:00.000Z/2023-07-31T23:59:59.999Z"
    assert "datetime" not in searches[-1][2]  # the DEM is static: no period
    assert s2_query["limit"] == stac_search.DEFAULT_PAGE_SIZE


def test_search_retries_429_and_5xx_with_backoff(api, replayed):
    api.fail_next = [503, 429, 502]  # the landing page's first three tries
    items = _search(api.url, collections=("cop_dem",))
    assert sorted(i.id for i in items) == sorted(_expected_ids(replayed[0])["cop_dem"])
    assert [r[1] for r in api.requests[:4]] == ["/"] * 4  # three refused, the fourth answered
    assert api.fail_next == []
    api.fail_next = [500] * 3  # the retries run out: the last answer is in the error
    with pytest.raises(stac_search.StacApiError, match=r"HTTP 500"):
        _search(api.url, collections=("cop_dem",), retries=2)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda a: a.refuse.update({"/search": 400}), "search of 'sentinel2_l2a' failed: HTTP 400"),
        (lambda a: a.refuse.update({"/search": 404}), "search of 'sentinel2_l2a' failed: HTTP 404"),
        (lambda a: a.refuse.update({"/": 403}), "cannot open it as a STAC API: HTTP 403"),
        (lambda a: a.refuse.update({"/": 404}), "cannot open it as a STAC API: HTTP 404"),
        (lambda a: a.conforms_to.clear(), "not a STAC API with item search"),
        (lambda a: a.fail_next.extend([503] * 9), "cannot open it as a STAC API: HTTP 503"),
    ],
)
def test_refusals_name_the_url(api, setup, message):
    setup(api)
    with pytest.raises(stac_search.StacApiError) as err:
        _search(api.url, retries=2)
    text = str(err.value)
    assert text.startswith(f"--stac-api {api.url}: ") and message in text, text
    assert "\n" not in text


def test_unknown_collection_and_empty_search_are_errors(api):
    with pytest.raises(stac_search.StacApiError, match=r"no collection 'sentinel-2-l2a'; it has "):
        _search(api.url, collections=("sentinel2_l2a", "sentinel-2-l2a"))
    assert api.search_requests() == []  # checked before searching
    far = shapely.box(10.0, 10.0, 10.1, 10.1)
    with pytest.raises(stac_search.StacApiError, match="no item of sentinel2_l2a over the AOI"):
        _search(api.url, collections=("sentinel2_l2a",), geometry=far)


def test_nothing_listening_is_a_clear_error():
    with StacApiServer([], []) as server:
        url = server.url  # a port that was free, closed again below
    with pytest.raises(stac_search.StacApiError, match=f"--stac-api {url}: cannot open"):
        _search(url, retries=0)


# ------------------------------------------------------------------------------- item tables


def _refs(cat: stac.StacCatalog) -> dict[str, list]:
    """ItemRefs by source; the datetime string dropped (a table writes it with microseconds,
    the same instant: time_ms compares it)."""

    def norm(r):  # repr: the DEM's nodata is NaN
        props = {k: v for k, v in r.properties.items() if k != "datetime"}
        return repr(dataclasses.replace(r, properties=props))

    return {s: [norm(r) for r in cat.item_refs(s)] for s in cat.sources}


def test_stac_geoparquet_table_reads_as_the_catalog(sim_catalog, replayed, tmp_path):
    """A table written by stac-geoparquet's own writer from the catalog's items reads back
    as the same index, and the same pixels."""
    table = tmp_path / "items.parquet"
    stac_geoparquet.arrow.to_parquet(
        stac_geoparquet.arrow.parse_stac_items_to_arrow(replayed[0]), table
    )
    from_table = stac.StacCatalog.open(str(table))
    from_catalog = stac.StacCatalog.open(str(sim_catalog))
    assert from_table.sources == from_catalog.sources == ("cop_dem", "sentinel2_l2a")
    assert _refs(from_table) == _refs(from_catalog)
    assert len(from_table.item_refs("sentinel2_l2a")) == sum(
        d["collection"] == "sentinel2_l2a" for d in replayed[0]
    )
    window = GridWindow(32631, 616400.0, 5605400.0, 16, 16)
    a = stac.read_observations(from_table, window, START_MS, END_MS)
    b = stac.read_observations(from_catalog, window, START_MS, END_MS)
    for s in COLLECTIONS:
        assert a.sources[s].values.shape[0] > 0
        np.testing.assert_array_equal(a.sources[s].values, b.sources[s].values)
        np.testing.assert_array_equal(a.sources[s].valid, b.sources[s].valid)


def test_write_item_table_is_stac_geoparquet(sim_catalog, tmp_path):
    cat = stac.StacCatalog.open(str(sim_catalog))
    items = [i for s in cat.sources for i in cat.items(s)]
    path = tmp_path / "t.parquet"
    assert stac.write_item_table(items, str(path)) == len(items)
    table = pq.read_table(path)  # pyarrow and stac-geoparquet, not this project, read it
    assert sorted(table.column("id").to_pylist()) == sorted(i.id for i in items)
    assert b"geo" in table.schema.metadata
    docs = list(stac_geoparquet.arrow.stac_table_to_items(table))
    hrefs = {d["id"]: d["assets"]["B04"]["href"] for d in docs if "B04" in d["assets"]}
    first = cat.items("sentinel2_l2a")[0]
    assert hrefs[first.id] == first.assets["B04"].get_absolute_href()
    assert Path(hrefs[first.id]).is_absolute()
    with pytest.raises(ValueError, match=f"{path.parent / 'bad.parquet'}: not a readable"):
        (tmp_path / "bad.parquet").write_text("not parquet")
        stac.StacCatalog.open(str(tmp_path / "bad.parquet"))


# ------------------------------------------------------------------------------- embed


def _embed_argv(out: Path, model: str, *source: str) -> list[str]:
    return [
        *source,
        "--bbox",
        SIM_BBOX,
        "--period",
        PERIOD,
        "--model",
        model,
        "--out",
        str(out),
        "--tile-size",
        "64",
        "--chip-size",
        "64",
        "--halo",
        "8",
        "--batch-size",  # one 80 px chip per tile: no padded model inputs, ~1 GB less memory
        "1",
    ]


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in (out / LABEL).rglob("*.*")}


@pytest.mark.slow
def test_embed_from_the_api_equals_embed_from_the_catalog(
    sim_catalog, api, replayed, shipped_bundle, tmp_path, monkeypatch
):
    """The shipped tiny model over both sources (S2 and DEM): the same COG, quality COG,
    GeoParquet, STAC item and tile marker bytes; the search found every item, in pages of 2,
    before the model loaded."""
    inference.clear_bundle_cache()
    model = str(shipped_bundle)
    static_out, api_out = tmp_path / "static", tmp_path / "api"
    assert embed.run(_embed_argv(static_out, model, "--stac", str(sim_catalog))) == 0

    loads = []
    real_load = inference.load_bundle

    def load(path, compute_dtype="float32"):
        loads.append(len(api.search_requests()))
        return real_load(path, compute_dtype)

    monkeypatch.setattr(inference, "load_bundle", load)
    inference.clear_bundle_cache()
    cols = ",".join(COLLECTIONS)
    argv = _embed_argv(api_out, model, "--stac-api", api.url, "--collections", cols)
    assert embed.run(argv) == 0
    inference.clear_bundle_cache()

    want = _expected_ids(replayed[0])
    n_found = len(want["sentinel2_l2a"]) + len(want["cop_dem"])
    pages = math.ceil(len(want["sentinel2_l2a"]) / 2) + math.ceil(len(want["cop_dem"]) / 2)
    assert loads == [pages] and len(api.search_requests()) == pages  # searched first, once
    table = pq.read_table(api_out / stac_search.SEARCH_ITEMS_FILE)
    assert sorted(table.column("id").to_pylist()) == sorted(want["sentinel2_l2a"] | want["cop_dem"])
    manifest = json.loads((api_out / "manifest.json").read_text())
    assert manifest["stac"] == str(api_out / stac_search.SEARCH_ITEMS_FILE)
    assert manifest["run"]["stac_api"] == {
        "url": api.url,
        "collections": list(COLLECTIONS),
        "items": n_found,
    }

    a, b = _outputs(static_out), _outputs(api_out)
    assert len(a) == 10  # 2 tiles x (COG, quality COG, GeoParquet, item, marker)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name
    rows = pq.read_metadata(next((static_out / LABEL).rglob("*.parquet"))).num_rows
    assert rows > 1000  # not two empty outputs


def test_embed_refusal_is_one_line_before_the_model(api, tmp_path, monkeypatch, capsys):
    def no_model(path, compute_dtype="float32"):
        raise AssertionError("the model loaded before the search failed")

    monkeypatch.setattr(inference, "load_bundle", no_model)
    inference.clear_bundle_cache()
    api.refuse["/search"] = 400
    argv = _embed_argv(tmp_path / "o", "m", "--stac-api", api.url, "--collections", "cop_dem")
    with pytest.raises(SystemExit) as err:
        embed.run(argv)
    assert err.value.code == 2  # a wrong request: one line on stderr, exit 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"earthembed embed: error: --stac-api {api.url}: search of 'cop_dem'")
    assert "HTTP 400" in line and "\n" not in line
    with pytest.raises(SystemExit):
        embed.run(_embed_argv(tmp_path / "o", "m", "--stac-api", api.url))  # no --collections
    assert "needs --collections" in capsys.readouterr().err
    inference.clear_bundle_cache()


# ------------------------------------------------------------------------------- build-training-data


def test_build_training_data_search_writes_the_workers_table(sim_catalog, api, replayed, tmp_path):
    """--stac-api over --years: every S2 item of 2023 and the DEM, in --out's item table,
    whose extent is the catalog's; no land-cover map beside it: uniform sampling."""
    argv = ["--stac-api", api.url, "--collections", ",".join(COLLECTIONS), "--years", "2023"]
    argv += ["--bbox", SIM_BBOX, "--out", str(tmp_path)]
    args, _ = build_training_data._parse_args(argv)
    assert args.patch_size == 128 and args.collection_list == COLLECTIONS
    path = build_training_data._search_api(args, str(tmp_path))
    assert path == str(tmp_path / stac_search.SEARCH_ITEMS_FILE)
    year = [d for d in replayed[0] if d["properties"]["datetime"].startswith("2023")]
    assert len(year) == len(replayed[0]) - 2  # every S2 item is of 2023; the DEM is not
    want = sorted(d["id"] for d in replayed[0])
    assert sorted(pq.read_table(path).column("id").to_pylist()) == want
    extent = build_training_data.catalog_extent(path)
    assert extent.equals(build_training_data.catalog_extent(str(sim_catalog)))
    region = build_training_data.resolve_region(path, 2023, bbox=SIM_BBOX)
    assert region.landcover is None
    assert region.window.lonlat_bounds()[0] <= AOI.bounds[0]
    assert region.window.lonlat_bounds()[2] >= AOI.bounds[2]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--stac-api", "https://x.org/v1", "--collections", "a"], "--stac-api needs --years"),
        (["--stac-api", "https://x.org/v1", "--years", "2023"], "needs --bbox or --aoi"),
        (["--stac-api", "https://x.org/v1", "--years", "2023", "--bbox", SIM_BBOX], "needs --coll"),
        (["--stac", "c.json", "--years", "2023", "--collections", "a"], "--stac-api only"),
        (["--stac", "c.json", "--stac-api", "https://x.org/v1"], "not allowed with argument"),
    ],
)
def test_build_training_data_search_options_are_checked(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit):
        build_training_data._parse_args([*extra, "--out", str(tmp_path)])
    assert message in capsys.readouterr().err
