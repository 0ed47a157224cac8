"""Provider profiles on the real recorded STAC documents of shared/stac_fixtures, and real reads
of synthesized COGs served over HTTP range requests from 127.0.0.1.

Every expected value below was copied by hand from the fixture JSON (asset keys, offsets,
proj:* fields) or computed by hand (DN * scale + offset), never from the code under test.
"""

from __future__ import annotations

import copy
import http.server
import json
import math
import re
import threading
import urllib.parse
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine

from beam_jobs import flags
from beam_jobs.io import providers, stac
from schemas.grid import GridWindow, lonlat_to_utm

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "stac_fixtures"
if not FIXTURES.is_dir():  # a worktree: ../shared beside the checkout
    FIXTURES = Path(__file__).resolve().parents[4] / "shared" / "stac_fixtures"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pystac's storage migration

# ----------------------------------------------------------------- hand-written expectations

ES_S2 = {
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}
PC_S2 = {b: b for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")}
PC_S2["SCL"] = "SCL"
CDSE_S2 = {
    "B02": "B02_10m",
    "B03": "B03_10m",
    "B04": "B04_10m",
    "B05": "B05_20m",
    "B06": "B06_20m",
    "B07": "B07_20m",
    "B08": "B08_10m",
    "B8A": "B8A_20m",
    "B11": "B11_20m",
    "B12": "B12_20m",
    "SCL": "SCL_20m",
}
LANDSAT = {
    "SR_B2": "blue",
    "SR_B3": "green",
    "SR_B4": "red",
    "SR_B5": "nir08",
    "SR_B6": "swir16",
    "SR_B7": "swir22",
    "QA_PIXEL": "qa_pixel",
}
DEM = {"elevation": "data"}
RTC = {"VV": "vv", "VH": "vh"}


def _s2(provider, keys, offset, rule, epsg, transform, asset="B04"):
    return dict(
        provider=provider,
        source="sentinel2_l2a",
        keys=keys,
        band="B04",
        scale=1e-4,
        offset=offset,
        nodata=0,
        rule=rule,
        epsg=epsg,
        asset=keys[asset] if asset else None,
        transform=transform,
    )


def _unsupported(match, epsg=None, transform=None, asset=None):
    return dict(error=match, epsg=epsg, transform=transform, asset=asset)


def _landsat(provider, rule, epsg, transform, **more):
    """Landsat SR: 2.75e-05, -0.2, nodata 0; proj:transform on the item."""
    return dict(
        provider=provider,
        source="landsat_c2l2",
        keys=LANDSAT,
        band="SR_B4",
        scale=2.75e-05,
        offset=-0.2,
        nodata=0,
        rule=rule,
        epsg=epsg,
        asset=None,
        transform=transform,
        **more,
    )


def _dem(provider, transform, asset=None):
    """DEM float32 metres: no scale, offset or nodata stated (the registry's NaN)."""
    return dict(
        provider=provider,
        source="cop_dem",
        keys=DEM,
        band="elevation",
        scale=1.0,
        offset=0.0,
        nodata=math.nan,
        rule="registry",
        epsg=4326,
        asset=asset,
        transform=transform,
    )


ES1_FLAG = "raster_bands+s2_boa_offset:flag"
ES1_C1 = "raster_bands+s2_boa_offset:stated"
PC_NEW = "registry+s2_boa_offset:baseline>=04.00"
GRD = "collection 'sentinel-1-grd' is not supported"
UTM_10 = dict(a=10.0, e=-10.0)

EXPECTED = {
    # ---- CDSE (STAC 1.1: raster:offset on the asset, proj:code on each asset)
    "Copernicus_DSM_COG_10_N00_00_E006_00_DEM": _dem(
        "cdse",
        # GDAL order [x0, dx, 0, y0, 0, dy] on the asset in the JSON
        (0.0002777777777778, 0, 5.9998611111111115, 0, -0.0002777777777778, 1.000138888888889),
        asset="data",
    ),
    "S1A_IW_GRDH_1SDV_20240607T000653_20240607T000718_054210_0697DA_6EE4_COG": _unsupported(
        GRD, asset="vv"
    ),
    "S2A_MSIL2A_20220217T183431_N0510_R027_T13VEK_20240516T022440": _s2(
        "cdse",
        CDSE_S2,
        -0.1,
        "raster_bands+s2_boa_offset:stated",
        32613,
        (10, 0, 499980, 0, -10, 7000020),
    ),
    # ---- Earth Search v0: beta.1 item without baseline field (N0214 in its product id)
    "S2A_28QCH_20200714_0_L2A": _s2(
        "earth-search-v0",
        PC_S2,
        0.0,
        "registry+s2_boa_offset:baseline<04.00",
        32628,
        (10, 0, 300000, 0, -10, 2300040),  # 9 elements in the JSON
    ),
    "S2B_20EPT_20250731_0_L2A": None,  # two items share this id (v0 and v1): see EXPECTED_BY_FILE
    # ---- Earth Search v1
    "Copernicus_DSM_COG_10_S90_00_W180_00_DEM": None,  # ES and PC: see EXPECTED_BY_FILE
    **{
        i: dict(
            provider="earth-search-v1",
            source="sentinel2_l2a",
            keys=ES_S2,
            band="B04",
            scale=1e-4,
            offset=-0.1,
            nodata=0,
            rule="registry+s2_boa_offset:date>=2022-01-25",
            epsg=None,
            asset=None,
            transform=None,
            missing="blue",  # fields response: no assets at all
        )
        for i in (
            "S2C_T13TDE_20250729T180310_L2A",
            "S2C_T13TDE_20250729T175521_L2A",
            "S2C_T13TDE_20250726T175050_L2A",
            "S2B_T13TDE_20250724T180145_L2A",
            "S2B_T13TDE_20250721T174755_L2A",
            "S2C_T13TDE_20250719T180004_L2A",
            "S2A_T13TDE_20250718T175132_L2A",
            "S2C_T13TDE_20250716T175117_L2A",
            "S2B_T13TDE_20250714T180139_L2A",
            "S2A_T13TDE_20250711T175745_L2A",
        )
    },
    "S1A_IW_GRDH_1SSH_20250731T135702_20250731T135722_060328_077F7E": _unsupported(
        GRD,
        4326,
        (0.0002715594582527158, 0, 74.161316, 0, -7.512549313555328e-05, -44.941399),
        "hh",
    ),
    "S1A_IW_GRDH_1SSH_20250731T135637_20250731T135702_060328_077F7E": _unsupported(
        GRD,
        4326,
        (0.00023068644168146817, 0, 74.694458, 0, -8.731635589545467e-05, -46.093655),
        "hh",
    ),
    "S1A_IW_GRDH_1SSH_20250731T135608_20250731T135637_060328_077F7E": _unsupported(
        GRD,
        4326,
        (0.00021179687101870214, 0, 75.395981, 0, -9.711880564090464e-05, -47.53722),
        "hh",
    ),
    "S2B_T20EPT_20250731T131905_L2A": _s2(
        "earth-search-v1", ES_S2, -0.1, ES1_C1, 32720, (10, 0, 600000, 0, -10, 3300040)
    ),
    "S2B_20EPT_20250731_0_L1C": _unsupported(
        "no profile for collection 'sentinel-2-l1c'", 32720, (10, 0, 600000, 0, -10, 3300040), "red"
    ),
    "S2B_T24MUV_20250731T130245_L2A": _s2(
        "earth-search-v1", ES_S2, -0.1, ES1_C1, 32724, (10, 0, 300000, 0, -10, 9500020)
    ),
    "S2B_24MUV_20250731_0_L2A": _s2(
        "earth-search-v1", ES_S2, 0.0, ES1_FLAG, 32724, (10, 0, 300000, 0, -10, 9500020)
    ),
    "S2B_24MUV_20250731_0_L1C": _unsupported(
        "no profile for collection 'sentinel-2-l1c'", 32724, (10, 0, 300000, 0, -10, 9500020), "red"
    ),
    "S2B_T24MVV_20250731T130245_L2A": _s2(
        "earth-search-v1", ES_S2, -0.1, ES1_C1, 32724, (10, 0, 399960, 0, -10, 9500020)
    ),
    "S2A_13TDE_20231008_0_L2A": _s2(
        "earth-search-v1", ES_S2, 0.0, ES1_FLAG, 32613, (10, 0, 399960, 0, -10, 4500000)
    ),
    "LC08_L2SP_033032_20231008_02_T1": _landsat(
        "earth-search-v1",
        "raster_bands",
        32613,
        (30, 0, 449085, 0, -30, 4581915),
        requester_pays=True,
    ),
    # ---- Planetary Computer (no raster:bands on S2: the reader owns the offset)
    "S2A_MSIL2A_20150704T101006_R022_T35XQA_20210411T133707": _s2(
        "planetary-computer",
        PC_S2,
        0.0,
        "registry+s2_boa_offset:baseline<04.00",
        32635,
        (10, 0, 699960, 0, -10, 8100000),
    ),
    "S2B_MSIL2A_20220612T182919_R027_T24XWR_20220613T123251": _s2(
        "planetary-computer", PC_S2, -0.1, PC_NEW, 32624, (10, 0, 499980, 0, -10, 9100020)
    ),
    "S2B_MSIL2A_20250312T014549_R074_T53NKG_20250312T041213": _s2(
        "planetary-computer", PC_S2, -0.1, PC_NEW, 32653, (10, 0, 199980, 0, -10, 700020)
    ),
    **{
        f"S2B_MSIL2A_20230821T073619_R092_{tile}": _s2(
            "planetary-computer", PC_S2, -0.1, PC_NEW, epsg, (10, 0, x0, 0, -10, y0)
        )
        for tile, epsg, x0, y0 in (
            ("T48XWP_20230821T122411", 32648, 499980, 8900040),
            ("T48XWN_20230821T122554", 32648, 499980, 8800020),
            ("T48XVQ_20230821T122413", 32648, 399960, 9000000),
            ("T48XVP_20230821T122422", 32648, 399960, 8900040),
            ("T48XVM_20230821T122410", 32648, 399960, 8700000),
            ("T47XNK_20230821T122415", 32647, 499980, 9000000),
            ("T47XNJ_20230821T122608", 32647, 499980, 8900040),
            ("T47XNH_20230821T122604", 32647, 499980, 8800020),
            ("T47XNG_20230821T122411", 32647, 499980, 8700000),
            ("T47XML_20230821T122553", 32647, 399960, 9100020),
        )
    },
    "S56W072_21_F02DAR_MOS": _unsupported(
        "no profile for collection 'alos-palsar-mosaic'",
        4326,
        (0.00022222222222222223, 0, -72.0, 0, -0.00022222222222222223, -56.0),  # 9 in JSON
    ),
    "era5-pds-2020-12-fc": _unsupported(
        "collection 'era5-pds' is not supported: era5-pds is hourly"
    ),
    "LC09_L2SP_090091_20250310_02_T1": _landsat(
        "planetary-computer", "raster_bands", 32655, (30, 0, 355785, 0, -30, -4821585)
    ),
    "S1A_IW_GRDH_1SDV_20250312T052236_20250312T052301_058267_073394": _unsupported(GRD, asset="vv"),
    "S1A_IW_GRDH_1SDV_20250311T044231_20250311T044249_058252_073302_rtc": dict(
        provider="planetary-computer",
        source="sentinel1",
        keys=RTC,
        band="VV",
        scale=1.0,
        offset=0.0,
        nodata=-32768,
        rule="raster_bands+power_to_db",
        to_db=True,
        epsg=32634,
        asset=None,
        transform=(10, 0, 180600, 0, -10, 3408040),  # 9 elements in the JSON
        shape=(17058, 28320),  # proj:shape, not the swapped s1:shape
    ),
    # ---- USGS LandsatLook (no raster:bands: the registry's Collection 2 scale/offset)
    "LC08_L2SP_028030_20200114_20200824_02_T1_SR": _landsat(
        "usgs-landsatlook", "registry", 32615, (30, 0, 173085, 0, -30, 4904715)
    ),
}
_DEM_S90 = (
    0.002777777777777778,
    0,
    -180.0013888888889,
    0,
    -0.0002777777777777778,
    -88.99986111111112,
)
EXPECTED_BY_FILE = {
    ("earth-search-v0", "S2B_20EPT_20250731_0_L2A"): _s2(
        "earth-search-v0",
        PC_S2,
        0.0,
        "registry+s2_boa_offset:flag",
        32720,
        (10, 0, 600000, 0, -10, 3300040),
    ),
    ("earth-search-v1", "S2B_20EPT_20250731_0_L2A"): _s2(
        "earth-search-v1", ES_S2, 0.0, ES1_FLAG, 32720, (10, 0, 600000, 0, -10, 3300040)
    ),
    **{
        (prov, "Copernicus_DSM_COG_10_S90_00_W180_00_DEM"): _dem(prov, _DEM_S90)
        for prov in ("earth-search-v1", "planetary-computer")
    },
}


def _fixture_items() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(FIXTURES.glob("*/*.json")):
        doc = json.loads(path.read_text())
        if doc.get("type") == "FeatureCollection":
            out += [(path.parent.name, f) for f in doc["features"]]
        elif doc.get("type") == "Feature":
            out.append((path.parent.name, doc))
    return out


ITEMS = _fixture_items()


def _expected(provider_dir: str, item_id: str) -> dict:
    return EXPECTED_BY_FILE.get((provider_dir, item_id)) or EXPECTED[item_id]


def test_every_fixture_item_has_a_hand_written_expectation():
    assert len(ITEMS) == 48
    for provider_dir, doc in ITEMS:
        assert _expected(provider_dir, doc["id"]) is not None, doc["id"]


@pytest.mark.parametrize("migrate", [False, True], ids=["as-recorded", "pystac-migrated"])
@pytest.mark.parametrize("provider_dir,doc", ITEMS, ids=[f"{p}/{d['id'][:40]}" for p, d in ITEMS])
def test_fixture_item_band_mapping_rule_crs_and_transform(provider_dir, doc, migrate):
    want = _expected(provider_dir, doc["id"])
    # CRS and transform, as the JSON states them (asset-level first, then the item).
    asset = doc.get("assets", {}).get(want["asset"]) if want.get("asset") else None
    proj = providers.projection(doc["properties"], asset)
    assert proj.epsg == want["epsg"]
    if want["transform"] is None:
        assert proj.transform is None
    else:
        assert proj.transform == pytest.approx(Affine(*want["transform"]), abs=1e-12)
    if "shape" in want:
        assert proj.shape == want["shape"]

    item = pystac.Item.from_dict(copy.deepcopy(doc), migrate=migrate)
    if "error" in want:
        with pytest.raises(providers.ProfileError, match=re.escape(want["error"])) as e:
            stac.item_ref(item)
        assert doc["id"] in str(e.value)
        return
    ref = stac.item_ref(item)
    assert ref.provider == want["provider"]
    assert ref.source == want["source"]
    assert {band: a.key for band, a in ref.assets.items()} == want["keys"]
    assert ref.epsg == want["epsg"]
    a = ref.assets[want["band"]]
    assert a.scale == pytest.approx(want["scale"])
    assert a.offset == pytest.approx(want["offset"])
    if math.isnan(want["nodata"]):
        assert math.isnan(a.nodata)
    else:
        assert a.nodata == want["nodata"]
    assert a.rule == want["rule"]
    assert a.to_db == want.get("to_db", False)
    assert a.requester_pays == want.get("requester_pays", False)
    assert a.signer == ("planetary-computer" if ref.provider == "planetary-computer" else None)
    if "missing" in want:
        assert f"asset {want['missing']!r}" in ref.assets["B02"].error
    else:
        assert all(r.error is None for r in ref.assets.values())
        if want["asset"]:  # the mapped asset's href is the JSON's
            assert a.href == doc["assets"][want["asset"]]["href"]


def test_transform_forms():
    six = (10.0, 0.0, 600000.0, 0.0, -10.0, 3300040.0)
    assert providers.affine_of(six) == Affine(*six)
    assert providers.affine_of([*six, 0, 0, 1]) == Affine(*six)
    # GDAL geotransform order (CDSE's DEM): x0, dx, 0, y0, 0, dy
    assert providers.affine_of([6.0, 0.25, 0.0, 1.0, 0.0, -0.25]) == Affine(
        0.25, 0, 6.0, 0, -0.25, 1.0
    )
    with pytest.raises(ValueError, match="6 or 9"):
        providers.affine_of([1, 2, 3])


def test_s2_offset_never_applied_twice():
    """Earth Search v1's flag wins over its raster:bands -0.1; baselines compare as numbers."""
    fields = {"raster:bands": [{"scale": 0.0001, "offset": -0.1, "nodata": 0}]}

    def offset(props, asset=fields, item_id="x"):
        d = providers._Decision(1e-4, -0.1, 0)
        for rule in ("raster_bands", "s2_boa_offset"):
            providers.RULES[rule](providers.ItemFields(item_id, props, None), "B04", asset, d)
        return d.offset

    assert offset({"earthsearch:boa_offset_applied": True}) == 0.0
    assert offset({"earthsearch:boa_offset_applied": False}) == -0.1
    assert (
        offset({"s2:processing_baseline": "10.00"}, asset={}) == -0.1
    )  # "10.00" < "04.00" as text
    assert offset({"s2:processing_baseline": "03.99"}, asset={}) == 0.0
    assert offset({}, asset={}, item_id="S2A_MSIL2A_20211201T000000_N0301_R1") == 0.0


def test_flag_mirror_lists_every_provider():
    assert flags.PROVIDER_NAMES == providers.PROVIDER_NAMES


# ---------------------------------------------------------------------------------- access


def test_gdal_paths():
    assert providers.gdal_path("https://a.b/c.tif") == "/vsicurl/https://a.b/c.tif"
    assert providers.gdal_path("s3://usgs-landsat/x/y.TIF") == "/vsis3/usgs-landsat/x/y.TIF"
    assert providers.gdal_path("gs://bucket/k.tif") == "/vsigs/bucket/k.tif"
    assert providers.gdal_path("az://container/k.tif") == "/vsiaz/container/k.tif"
    assert providers.gdal_path("file:///tmp/a%20b.tif") == "/tmp/a b.tif"
    assert providers.gdal_path("/data/x.tif") == "/data/x.tif"


def test_requester_pays_needs_the_flag():
    ref = providers.AssetRef("s3://usgs-landsat/a/B4.TIF", key="red", requester_pays=True)
    with pytest.raises(providers.AccessError, match="--requester-pays"):
        providers.open_path(ref, providers.Access())
    allowed = providers.Access(requester_pays=True)
    assert providers.open_path(ref, allowed) == "/vsis3/usgs-landsat/a/B4.TIF"
    assert providers.gdal_options(ref, allowed) == {"AWS_REQUEST_PAYER": "requester"}
    assert providers.gdal_options(ref, providers.Access()) == {}


def test_planetary_computer_signing_only_for_pc_items(monkeypatch):
    import planetary_computer

    calls = []

    def fake_sign(href):
        calls.append(href)
        return href + "?se=2099-01-01&sig=secret"

    monkeypatch.setattr(planetary_computer, "sign", fake_sign)
    pc = providers.AssetRef(
        "https://x.blob.core.windows.net/c/B04.tif", key="B04", signer="planetary-computer"
    )
    es = providers.AssetRef("https://sentinel-cogs.s3.us-west-2.amazonaws.com/B04.tif", key="red")
    assert providers.open_path(pc, providers.Access()).endswith("B04.tif?se=2099-01-01&sig=secret")
    assert providers.open_path(pc, providers.Access(sign=False)) == "/vsicurl/" + pc.href
    assert providers.open_path(es, providers.Access()) == "/vsicurl/" + es.href
    assert calls == [pc.href]
    assert providers.redact("HTTP 403 on https://x/B04.tif?se=1&sig=secret") == (
        "HTTP 403 on https://x/B04.tif?<redacted>"
    )


# ------------------------------------------------------------ a local HTTP server with Range


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Static files with single byte-range support; `/pc/...` needs `sig=valid` (else 403)."""

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        rng = self.headers.get("Range")
        self.server.log.append((self.command, url.path, url.query, rng))
        if url.path.startswith("/pc/") and urllib.parse.parse_qs(url.query).get("sig") != ["valid"]:
            self.send_error(403, "AuthenticationFailed")
            return
        path = self.server.root / url.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m:
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            chunk = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            chunk = data
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if body:
            self.wfile.write(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    httpd.root = tmp_path
    httpd.log = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
        stac.clear_dataset_cache()


@pytest.fixture
def pc_signer(monkeypatch):
    """planetary_computer.sign without the network: a token the local server accepts."""
    import planetary_computer

    monkeypatch.setattr(
        planetary_computer, "sign", lambda href: href + "?st=2025&se=2099&sig=valid"
    )


def _doc(provider_dir: str, item_id: str) -> dict:
    return copy.deepcopy(next(d for p, d in ITEMS if p == provider_dir and d["id"] == item_id))


# Window: 8 x 8 px at 10 m; a COG of each asset covers it with 120 m to spare on each side.
SIDE = 8
SPARE_M = 120


def _serve_item(server, prefix, provider_dir, item_id, values, *, res, epsg, origin, dtype, nodata):
    """Rewrite the item's mapped assets to COGs on the local server; return (item, window).

    `values[band]` is a callable (rows, cols) -> stored array; the COGs lie on the item's
    own grid (`origin` + multiples of `res[band]`) around a window near the footprint's
    centre (on a 60 m lattice from `origin`, so every resolution aligns)."""
    doc = _doc(provider_dir, item_id)
    lon = (doc["bbox"][0] + doc["bbox"][2]) / 2
    lat = (doc["bbox"][1] + doc["bbox"][3]) / 2
    if epsg == 4326:
        window_epsg = 32632
        cx, cy = lonlat_to_utm(lon, lat, window_epsg)
        x0, y0 = 10 * round(float(cx) / 10), 10 * round(float(cy) / 10)
    else:
        window_epsg = epsg
        cx, cy = lonlat_to_utm(lon, lat, epsg)
        x0 = origin[0] + 60 * round((float(cx) - origin[0]) / 60)
        y0 = origin[1] - 60 * round((origin[1] - float(cy)) / 60)
    window = GridWindow(window_epsg, x0, y0, SIDE, SIDE)
    folder = server.root / prefix / item_id
    folder.mkdir(parents=True)
    base = f"http://127.0.0.1:{server.server_address[1]}/{prefix}/{item_id}"
    for band, key in values.items():
        r = res[band]
        if epsg == 4326:  # a geographic COG around the window's centre
            clon, clat = (lon, lat)
            n = 40
            col0 = math.floor((clon - origin[0]) / r) - n // 2
            row0 = math.floor((origin[1] - clat) / r) - n // 2
            transform = Affine(r, 0, origin[0] + col0 * r, 0, -r, origin[1] - row0 * r)
        else:
            k = math.ceil(SPARE_M / r)
            n = 2 * k + math.ceil(SIDE * 10 / r)
            transform = Affine(r, 0, x0 - k * r, 0, -r, y0 + k * r)
        rows, cols = np.mgrid[0:n, 0:n]
        with rasterio.open(
            folder / f"{key[0]}.tif",
            "w",
            driver="COG",
            width=n,
            height=n,
            count=1,
            dtype=dtype[band],
            crs=f"EPSG:{epsg}",
            transform=transform,
            nodata=nodata.get(band),
            blocksize=16,
        ) as dst:
            dst.write(np.asarray(key[1](rows, cols), dtype=dtype[band])[None])
        doc["assets"][key[0]]["href"] = f"{base}/{key[0]}.tif"
    return pystac.Item.from_dict(doc), window


def _read(item, window, source, access=None, on_error="raise", errors=None):
    catalog = stac.StacCatalog([(item.collection_id, item)], access=access)
    t = catalog.item_refs(source)[0].time_ms
    return stac.read_source(catalog, source, window, t - 1, t + 1, on_error=on_error, errors=errors)


def _const(v):
    return lambda r, c: np.full(r.shape, v)


def _s2_values(keys, b04, rest=2000, scl=4):
    """B04 = `b04` DN, every other band `rest` DN, SCL = `scl` (4: vegetation, clear)."""
    out = {b: (k, _const(b04 if b == "B04" else rest)) for b, k in keys.items() if b != "SCL"}
    out["SCL"] = (keys["SCL"], _const(scl))
    return out


S2_RES = {b: 10 if b in ("B02", "B03", "B04", "B08") else 20 for b in PC_S2}
S2_DTYPE = {b: "uint16" for b in PC_S2} | {"SCL": "uint8"}
S2_NODATA = {b: 0 for b in PC_S2}


@pytest.mark.parametrize(
    "provider_dir,item_id,keys,origin,epsg,b04,b05",
    [
        # PC at baseline 04.00: the reader subtracts the offset: 1500 * 1e-4 - 0.1 = 0.05
        (
            "planetary-computer",
            "S2B_MSIL2A_20220612T182919_R027_T24XWR_20220613T123251",
            PC_S2,
            (499980, 9100020),
            32624,
            0.05,
            0.1,  # 2000 * 1e-4 - 0.1
        ),
        # PC at baseline 02.12: no offset: 1500 * 1e-4 = 0.15
        (
            "planetary-computer",
            "S2A_MSIL2A_20150704T101006_R022_T35XQA_20210411T133707",
            PC_S2,
            (699960, 8100000),
            32635,
            0.15,
            0.2,
        ),
        # Earth Search v1 with the flag set: offset already removed: 0.15, not 0.05
        (
            "earth-search-v1",
            "S2B_24MUV_20250731_0_L2A",
            ES_S2,
            (300000, 9500020),
            32724,
            0.15,
            0.2,
        ),
        # Earth Search v1 collection 1: no flag, raster:bands -0.1: 0.05
        (
            "earth-search-v1",
            "S2B_T24MUV_20250731T130245_L2A",
            ES_S2,
            (300000, 9500020),
            32724,
            0.05,
            0.1,
        ),
        # CDSE: raster:offset -0.1 on the asset: 0.05
        (
            "cdse",
            "S2A_MSIL2A_20220217T183431_N0510_R027_T13VEK_20240516T022440",
            CDSE_S2,
            (499980, 7000020),
            32613,
            0.05,
            0.1,
        ),
    ],
)
def test_s2_over_http_range_requests(
    server, pc_signer, provider_dir, item_id, keys, origin, epsg, b04, b05
):
    prefix = "pc" if provider_dir == "planetary-computer" else provider_dir
    values = _s2_values(keys, 1500)
    item, window = _serve_item(
        server,
        prefix,
        provider_dir,
        item_id,
        values,
        res=S2_RES,
        epsg=epsg,
        origin=origin,
        dtype=S2_DTYPE,
        nodata=S2_NODATA,
    )
    frames = _read(item, window, "sentinel2_l2a")
    assert frames.values.shape == (1, SIDE, SIDE, 10)
    np.testing.assert_allclose(frames.values[0, ..., 2], b04, atol=1e-6)  # B04
    np.testing.assert_allclose(frames.values[0, ..., 3], b05, atol=1e-6)  # B05 (20 m)
    assert frames.valid.all()
    ranges = [r for _, _, _, r in server.log if r]
    assert ranges and all(r.startswith("bytes=") for r in ranges)  # GDAL read by ranges
    if prefix == "pc":  # every request carried the (fake) SAS token
        assert all("sig=valid" in q for _, _, q, _ in server.log)


def test_s2_nodata_and_cloud_are_invalid_not_zero(server):
    """DN 0 is nodata (NaN, invalid); SCL 9 (cloud high) keeps the values but not validity."""
    item_id = "S2B_T24MUV_20250731T130245_L2A"
    values = _s2_values(ES_S2, 1500)
    # 10 m band: a nodata pixel at (row 12 + 2, col 12 + 3) of the COG = (2, 3) of the window
    values["B04"] = ("red", lambda r, c: np.where((r == 14) & (c == 15), 0, 1500))
    # 20 m SCL: cloud over window rows 4-5, cols 0-1 (COG pixel 6 + 2, 6 + 0)
    values["SCL"] = ("scl", lambda r, c: np.where((r == 8) & (c == 6), 9, 4))
    item, window = _serve_item(
        server,
        "es",
        "earth-search-v1",
        item_id,
        values,
        res=S2_RES,
        epsg=32724,
        origin=(300000, 9500020),
        dtype=S2_DTYPE,
        nodata=S2_NODATA,
    )
    f = _read(item, window, "sentinel2_l2a")
    b04 = f.values[0, ..., 2]
    assert np.isnan(b04[2, 3]) and not f.valid[0, 2, 3]
    assert np.isfinite(np.delete(b04.ravel(), 2 * SIDE + 3)).all()
    assert not f.valid[0, 4:6, 0:2].any()
    np.testing.assert_allclose(b04[4:6, 0:2], 0.05, atol=1e-6)
    assert f.valid[0].sum() == SIDE * SIDE - 1 - 4


def test_s1_rtc_linear_power_to_db(server, pc_signer):
    item_id = "S1A_IW_GRDH_1SDV_20250311T044231_20250311T044249_058252_073302_rtc"

    # COG pixel (12 + 1, 12 + 1) nodata -32768, (12 + 2, 12 + 2) zero power: both missing.
    def vv(r, c):
        return np.where((r == 13) & (c == 13), -32768, np.where((r == 14) & (c == 14), 0, 0.1))

    values = {"VV": ("vv", vv), "VH": ("vh", _const(0.01))}
    item, window = _serve_item(
        server,
        "pc",
        "planetary-computer",
        item_id,
        values,
        res={"VV": 10, "VH": 10},
        epsg=32634,
        origin=(180600, 3408040),
        dtype={"VV": "float32", "VH": "float32"},
        nodata={"VV": -32768, "VH": -32768},
    )
    f = _read(item, window, "sentinel1")
    vv_db, vh_db = f.values[0, ..., 0], f.values[0, ..., 1]
    assert np.isnan(vv_db[1, 1]) and np.isnan(vv_db[2, 2])
    assert not f.valid[0, 1, 1] and not f.valid[0, 2, 2]
    ok = np.ones((SIDE, SIDE), bool)
    ok[1, 1] = ok[2, 2] = False
    np.testing.assert_allclose(vv_db[ok], -10.0, atol=1e-5)  # 10 log10(0.1)
    np.testing.assert_allclose(vh_db, -20.0, atol=1e-5)  # 10 log10(0.01)


@pytest.mark.parametrize(
    "provider_dir,item_id,origin,epsg",
    [
        ("earth-search-v1", "LC08_L2SP_033032_20231008_02_T1", (449085, 4581915), 32613),
        ("planetary-computer", "LC09_L2SP_090091_20250310_02_T1", (355785, -4821585), 32655),
        (
            "usgs-landsatlook",
            "LC08_L2SP_028030_20200114_20200824_02_T1_SR",
            (173085, 4904715),
            32615,
        ),
    ],
)
def test_landsat_over_http(server, pc_signer, provider_dir, item_id, origin, epsg):
    """SR DN 10000 -> 10000 * 2.75e-5 - 0.2 = 0.075; DN 20000 -> 0.35; QA_PIXEL 21824: clear."""
    prefix = "pc" if provider_dir == "planetary-computer" else provider_dir
    values = {b: (k, _const(20000 if b == "SR_B5" else 10000)) for b, k in LANDSAT.items()}
    values["QA_PIXEL"] = ("qa_pixel", _const(21824))  # bits 6, 8, 10, 12, 14: clear, low conf.
    res = {b: 30 for b in LANDSAT}
    item, window = _serve_item(
        server,
        prefix,
        provider_dir,
        item_id,
        values,
        res=res,
        epsg=epsg,
        origin=origin,
        dtype={b: "uint16" for b in LANDSAT},
        nodata={b: 0 for b in LANDSAT} | {"QA_PIXEL": 1},
    )
    f = _read(item, window, "landsat_c2l2")
    np.testing.assert_allclose(f.values[0, ..., 2], 0.075, atol=1e-6)  # SR_B4
    np.testing.assert_allclose(f.values[0, ..., 3], 0.35, atol=1e-6)  # SR_B5
    assert f.valid.all()


def test_cdse_dem_geographic_over_http(server):
    """A float32 DEM in EPSG:4326 (GDAL-order proj:transform in the item) -> 10 m UTM."""
    item_id = "Copernicus_DSM_COG_10_N00_00_E006_00_DEM"
    r = 0.0002777777777778
    item, window = _serve_item(
        server,
        "cdse",
        "cdse",
        item_id,
        {"elevation": ("data", _const(250.0))},
        res={"elevation": r},
        epsg=4326,
        origin=(5.9998611111111115, 1.000138888888889),
        dtype={"elevation": "float32"},
        nodata={},
    )
    f = _read(item, window, "cop_dem")
    np.testing.assert_allclose(f.values[0, ..., 0], 250.0, atol=1e-4)
    np.testing.assert_allclose(f.values[0, ..., 1], 0.0, atol=1e-4)  # flat: slope 0


# ---------------------------------------------------------------------------------- errors


def _pc_s2(server, monkeypatch, token):
    import planetary_computer

    monkeypatch.setattr(
        planetary_computer, "sign", lambda href: href + f"?se=2000-01-01&sig={token}"
    )
    return _serve_item(
        server,
        "pc",
        "planetary-computer",
        "S2B_MSIL2A_20220612T182919_R027_T24XWR_20220613T123251",
        _s2_values(PC_S2, 1500),
        res=S2_RES,
        epsg=32624,
        origin=(499980, 9100020),
        dtype=S2_DTYPE,
        nodata=S2_NODATA,
    )


def test_expired_signature_is_a_clear_error_without_the_token(server, monkeypatch):
    item, window = _pc_s2(server, monkeypatch, "expired-secret")
    with pytest.raises(stac.AssetReadError) as e:
        _read(item, window, "sentinel2_l2a")
    msg = str(e.value)
    assert "S2B_MSIL2A_20220612T182919_R027_T24XWR_20220613T123251" in msg
    assert "'B02'" in msg and "403" in msg and "SAS token was refused" in msg
    assert "expired-secret" not in msg
    assert any(q.endswith("sig=expired-secret") for _, _, q, _ in server.log)  # it was tried


def test_absent_signature_dead_letters_the_frame(server, monkeypatch):
    item, window = _pc_s2(server, monkeypatch, "valid")
    errors: list[str] = []
    f = _read(item, window, "sentinel2_l2a", providers.Access(sign=False), "invalidate", errors)
    assert not f.valid.any() and np.isnan(f.values).all()  # never zeros
    assert len(errors) == 1 and "/B02: " in errors[0] and "drop --no-sign" in errors[0]
    assert all(q == "" for _, _, q, _ in server.log)  # nothing was signed


def test_missing_band_asset_names_item_and_asset(server):
    values = _s2_values(ES_S2, 1500)
    del values["B8A"]  # not served: and dropped from the item below
    item, window = _serve_item(
        server,
        "es",
        "earth-search-v1",
        "S2B_T24MUV_20250731T130245_L2A",
        values,
        res=S2_RES,
        epsg=32724,
        origin=(300000, 9500020),
        dtype=S2_DTYPE,
        nodata=S2_NODATA,
    )
    del item.assets["nir08"]
    obs = stac.read_observations(
        stac.StacCatalog([(item.collection_id, item)]),
        window,
        stac.datetime_to_ms(item.datetime) - 1,
        stac.datetime_to_ms(item.datetime) + 1,
        sources=["sentinel2_l2a"],
    )
    errors = obs.errors  # what embed dead-letters a chip with
    assert errors == [
        "S2B_T24MUV_20250731T130245_L2A/nir08: earth-search-v1/sentinel-2-c1-l2a profile expects "
        f"asset 'nir08' for B8A; the item has {sorted(item.assets)}"
    ]
    assert not obs.sources["sentinel2_l2a"].valid.any()


def test_requester_pays_href_without_the_flag_is_a_clear_error():
    doc = _doc("earth-search-v1", "LC08_L2SP_033032_20231008_02_T1")
    item = pystac.Item.from_dict(doc)
    catalog = stac.StacCatalog([(item.collection_id, item)])  # no --requester-pays
    x, y = lonlat_to_utm(-104.5, 40.2, 32613)
    window = GridWindow(32613, 10 * round(float(x) / 10), 10 * round(float(y) / 10), SIDE, SIDE)
    t = catalog.item_refs("landsat_c2l2")[0].time_ms
    with pytest.raises(
        stac.AssetReadError, match="requester-pays bucket: pass --requester-pays"
    ) as e:
        stac.read_source(catalog, "landsat_c2l2", window, t - 1, t + 1)
    assert "LC08_L2SP_033032_20231008_02_T1" in str(e.value) and "'blue'" in str(e.value)
    assert e.value.href.startswith("s3://usgs-landsat/")


def test_unknown_or_wrong_collection():
    l1c = pystac.Item.from_dict(_doc("earth-search-v1", "S2B_24MUV_20250731_0_L1C"))
    # auto-detection: kept out of every registry source, logged, listed
    cat = stac.StacCatalog([(l1c.collection_id, l1c)])
    assert cat.sources == ("sentinel-2-l1c",)
    assert "no profile for collection 'sentinel-2-l1c'" in cat.skipped["sentinel-2-l1c"]
    # a forced provider: an error naming item and collection
    with pytest.raises(providers.ProfileError, match="S2B_24MUV_20250731_0_L1C.*'sentinel-2-l1c'"):
        stac.StacCatalog([(l1c.collection_id, l1c)], provider="earth-search-v1")
    pc = pystac.Item.from_dict(
        _doc("planetary-computer", "S2B_MSIL2A_20250312T014549_R074_T53NKG_20250312T041213")
    )
    with pytest.raises(
        providers.ProfileError, match="cdse has no profile for collection 'sentinel-1-rtc'"
    ):
        providers.resolve_profile("x", "sentinel-1-rtc", {}, provider="cdse")
    # the wrong provider forced on a PC item: its asset keys are not Earth Search's
    ref = stac.item_ref(pc, provider="earth-search-v1")
    assert "expects asset 'blue' for B02" in ref.assets["B02"].error
    # a collection several providers serve, from an item that does not say whose
    bare = pystac.Item.from_dict({**_doc("planetary-computer", pc.id), "links": [], "assets": {}})
    with pytest.raises(
        providers.ProfileError, match="served by earth-search-v1, planetary-computer, cdse"
    ):
        stac.item_ref(bare)
    with pytest.raises(providers.ProfileError, match="unknown provider 'nasa'"):
        stac.item_ref(pc, provider="nasa")
