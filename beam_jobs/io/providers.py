"""Provider profiles: how an item of a real STAC catalog decodes into registry bands, and how
its hrefs are reached.

Real catalogs differ from this project's own contract (collection id = registry source id,
asset key = band name, `raster:bands` on every asset) in every detail that decides a pixel's
value: asset keys (`red` on Earth Search v1, `B04` on Planetary Computer, `B04_10m` on CDSE),
the Sentinel-2 +1000 DN offset of processing baseline >= 04.00 (left to the reader by Planetary
Computer, already removed by Earth Search v1 while its `raster:bands` still state -0.1, stated
as `raster:offset` by CDSE), linear power in Sentinel-1 RTC, nodata codes, `proj:epsg` vs
`proj:code`, and where the bytes live (SAS-signed Azure blobs, requester-pays S3 buckets).
shared/stac_fixtures/README.md lists them with the recorded documents that show each.

A `Profile` is data: the provider's collection id, the registry source it feeds, which asset
key holds each registry band (and the quality layer), an optional stored encoding that
replaces the registry's, and the names of the decoding rules (`RULES`) it applies, in order:

    raster_bands        scale/offset/nodata stated by the asset (raster:bands or STAC 1.1
                        raster:scale/raster:offset/nodata) override the encoding
    s2_boa_offset       Sentinel-2's offset decided once per item, never applied twice:
                        `*:boa_offset_applied` true -> 0 (pixels already corrected, whatever
                        raster:bands says); else a stated offset; else processing baseline
                        >= 04.00 -> -0.1 and < 04.00 -> 0 (compared as numbers; from
                        `s2:processing_baseline`, `sentinel:processing_baseline`,
                        `processing:version` or the `_Nxxyy_` of a product id); else the
                        acquisition date against 2022-01-25, when baseline 04.00 began
    power_to_db         linear power (RTC gamma0) -> 10 log10, values <= 0 missing
    sar_polarizations   a polarization the item does not list in `sar:polarizations` is
                        not expected (its band stays NaN); a listed one must be there

A `Provider` groups profiles and says how to recognise its items (URL fragments of the self
link and asset hrefs, property prefixes). `resolve_profile` picks the profile of an item from
its fields, or from a provider named on the command line (`--provider`); `decode_assets` turns
an item's assets into `AssetRef`s keyed by registry band. Adding a provider is adding a
`Provider` to `PROVIDERS`; the reader (beam_jobs/io/stac.py) does not change.

Access: `gdal_path` maps https, s3://, gs://, az:// hrefs onto GDAL's /vsicurl/, /vsis3/,
/vsigs/, /vsiaz/ (credentials come only from the environment GDAL reads: AWS_*, GOOGLE_*,
AZURE_*). A requester-pays asset is read only with `Access.requester_pays` (--requester-pays,
which sets AWS_REQUEST_PAYER=requester); Planetary Computer hrefs are signed through the
`planetary-computer` package just before they are opened (`Access.sign`, on unless --no-sign).
Signed URLs never reach logs or errors: `redact` strips query strings from messages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from affine import Affine

from schemas import sensors

log = logging.getLogger(__name__)

OWN = "earthembed"  # this project's own contract (the simulator's catalogs)
PC_SIGNER = "planetary-computer"

# ESA switched to processing baseline 04.00 (DN offset +1000) on 2022-01-25.
S2_OFFSET_SINCE = dt.datetime(2022, 1, 25, tzinfo=dt.UTC)
S2_BOA_OFFSET = -0.1  # BOA_ADD_OFFSET -1000 at scale 1e-4

# Buckets that charge the reader, for hrefs whose item does not say so (storage:requester_pays).
REQUESTER_PAYS_BUCKETS = ("usgs-landsat", "sentinel-s2-l2a", "sentinel-s2-l1c", "sentinel-s1-l1c")


class ProfileError(ValueError):
    """An item no profile can decode (unknown, unsupported or ambiguous collection)."""


class AccessError(OSError):
    """An href that may not or cannot be opened as it stands (e.g. requester pays, no flag)."""


@dataclasses.dataclass(frozen=True)
class AssetRef:
    """One asset: where it is and how its first band is encoded.

    `scale`/`offset`/`nodata` are what the asset states (own contract) or what the profile
    decided (providers); None leaves the registry's value. `key` is the provider's asset key
    (for errors), `rule` the decoding rules that decided, `error` why an expected asset is
    missing (the read raises it, naming item and asset).
    """

    href: str
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    key: str | None = None
    to_db: bool = False
    rule: str = ""
    requester_pays: bool = False
    signer: str | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Access:
    """How hrefs may be reached (plain data: ships with the Beam DoFns)."""

    requester_pays: bool = False  # --requester-pays: let S3 bill this account
    sign: bool = True  # sign Planetary Computer hrefs (--no-sign turns it off)


@dataclasses.dataclass(frozen=True)
class Profile:
    """One provider collection mapped onto one registry source.

    Args:
        collection: the provider's collection id.
        source: registry source id it feeds.
        assets: registry band (or quality layer) name -> the provider's asset key.
        rules: names of `RULES`, applied in order to every registry band (not to the
            quality layer, which is read raw).
        encoding: how the provider stores the bands, when not as the registry says.
        unsupported: why the collection cannot be decoded (the profile exists to say so).
    """

    collection: str
    source: str
    assets: Mapping[str, str] = dataclasses.field(default_factory=dict)
    rules: tuple[str, ...] = ("raster_bands",)
    encoding: sensors.Encoding | None = None
    unsupported: str | None = None


@dataclasses.dataclass(frozen=True)
class Provider:
    """A STAC provider: its profiles and the fields that identify its items."""

    name: str
    title: str
    profiles: tuple[Profile, ...]
    url_parts: tuple[str, ...] = ()  # fragments of self-link or asset hrefs
    property_prefixes: tuple[str, ...] = ()
    signer: str | None = None

    def profile(self, collection: str) -> Profile | None:
        return next((p for p in self.profiles if p.collection == collection), None)


# ---------------------------------------------------------------------------------- data

_S2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
_S2_ES_V1 = {
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
_S2_SAME = {**{b: b for b in _S2_BANDS}, "SCL": "SCL"}
_S2_CDSE = {
    **{b: f"{b}_{10 if b in ('B02', 'B03', 'B04', 'B08') else 20}m" for b in _S2_BANDS},
    "SCL": "SCL_20m",
}
_S2_RULES = ("raster_bands", "s2_boa_offset")
_LANDSAT = {
    "SR_B2": "blue",
    "SR_B3": "green",
    "SR_B4": "red",
    "SR_B5": "nir08",
    "SR_B6": "swir16",
    "SR_B7": "swir22",
    "QA_PIXEL": "qa_pixel",
}
_DEM = {"elevation": "data"}
_S1 = {"VV": "vv", "VH": "vh"}
# Planetary Computer RTC: float32 gamma0 in linear power, -32768 where there is no data.
_RTC_ENC = sensors.Encoding(dtype="float32", scale=1.0, offset=0.0, nodata=-32768)
_GRD_WHY = (
    "Sentinel-1 GRD holds uncalibrated amplitude DN (calibration LUTs and terrain flattening "
    "are not applied); the registry's sentinel1 is terrain-corrected backscatter in dB: use "
    "Planetary Computer's sentinel-1-rtc"
)

PROVIDERS: Mapping[str, Provider] = {
    p.name: p
    for p in (
        Provider(
            "earth-search-v1",
            "Element84 Earth Search v1",
            (
                Profile("sentinel-2-l2a", "sentinel2_l2a", _S2_ES_V1, _S2_RULES),
                Profile("sentinel-2-c1-l2a", "sentinel2_l2a", _S2_ES_V1, _S2_RULES),
                Profile("landsat-c2-l2", "landsat_c2l2", _LANDSAT),
                Profile("cop-dem-glo-30", "cop_dem", _DEM),
                Profile("sentinel-1-grd", "sentinel1", unsupported=_GRD_WHY),
            ),
            url_parts=(
                "earth-search.aws.element84.com/v1",
                "sentinel-cogs.s3.us-west-2.amazonaws.com",
                "e84-earth-search-sentinel-data",
            ),
            property_prefixes=("earthsearch:",),
        ),
        Provider(
            "earth-search-v0",
            "Element84 Earth Search v0 (retired)",
            (Profile("sentinel-s2-l2a-cogs", "sentinel2_l2a", _S2_SAME, _S2_RULES),),
            url_parts=("earth-search.aws.element84.com/v0",),
            property_prefixes=("sentinel:",),
        ),
        Provider(
            "planetary-computer",
            "Microsoft Planetary Computer",
            (
                Profile("sentinel-2-l2a", "sentinel2_l2a", _S2_SAME, _S2_RULES),
                Profile(
                    "sentinel-1-rtc",
                    "sentinel1",
                    _S1,
                    ("raster_bands", "power_to_db", "sar_polarizations"),
                    encoding=_RTC_ENC,
                ),
                Profile("landsat-c2-l2", "landsat_c2l2", _LANDSAT),
                Profile("cop-dem-glo-30", "cop_dem", _DEM),
                Profile("sentinel-1-grd", "sentinel1", unsupported=_GRD_WHY),
                Profile(
                    "era5-pds",
                    "era5_land",
                    unsupported=(
                        "era5-pds is hourly ERA5 (31 km, not ERA5-Land) in Zarr, one asset per "
                        "variable and month; the registry's era5_land is monthly means of "
                        "temperature_2m (K) and total_precipitation (m/day) read from rasters: "
                        "aggregate it to monthly GeoTIFFs first"
                    ),
                ),
            ),
            url_parts=("planetarycomputer.microsoft.com", ".blob.core.windows.net"),
            property_prefixes=("msft:",),
            signer=PC_SIGNER,
        ),
        Provider(
            "cdse",
            "Copernicus Data Space Ecosystem",
            (
                Profile("sentinel-2-l2a", "sentinel2_l2a", _S2_CDSE, _S2_RULES),
                Profile("cop-dem-glo-30-dged-cog", "cop_dem", _DEM),
                Profile("sentinel-1-grd", "sentinel1", unsupported=_GRD_WHY),
            ),
            url_parts=("s3://eodata/", "dataspace.copernicus.eu", "datahub.creodias.eu"),
        ),
        Provider(
            "usgs-landsatlook",
            "USGS LandsatLook STAC server",
            (Profile("landsat-c2l2-sr", "landsat_c2l2", _LANDSAT),),
            url_parts=("landsatlook.usgs.gov",),
        ),
    )
}
PROVIDER_NAMES: tuple[str, ...] = (OWN, *PROVIDERS)


# ---------------------------------------------------------------------------------- fields


def collection_source(collection: str) -> str | None:
    """The registry source a collection id feeds: itself for this project's own contract,
    else the one source every provider's profile of that id names (None: unknown or
    ambiguous). Used before any item is seen, e.g. to search a static source without a period."""
    if collection in sensors.SENSORS:
        return collection
    found = {
        p.source
        for provider in PROVIDERS.values()
        if (p := provider.profile(collection)) is not None and p.unsupported is None
    }
    return found.pop() if len(found) == 1 else None


def _float_or_none(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)  # also parses "nan" / "inf", which some writers use for nodata
    except (TypeError, ValueError):
        return None


def stated_encoding(fields: Mapping[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(scale, offset, nodata) an asset states for its first band: raster extension 1.x
    `raster:bands`, else STAC 1.1 `bands[0]` or asset-level `raster:scale`/`raster:offset`/
    `nodata`; None where it states nothing."""
    band: Mapping[str, Any] = {}
    if fields.get("raster:bands"):
        band = fields["raster:bands"][0]
        scale, offset, nodata = band.get("scale"), band.get("offset"), band.get("nodata")
    else:
        if fields.get("bands"):
            band = fields["bands"][0]
        scale = band.get("raster:scale", fields.get("raster:scale"))
        offset = band.get("raster:offset", fields.get("raster:offset"))
        nodata = band.get("nodata", fields.get("nodata"))
    return _float_or_none(scale), _float_or_none(offset), _float_or_none(nodata)


def epsg_of(fields: Mapping[str, Any]) -> int | None:
    """`proj:epsg` (integer) or `proj:code` ("EPSG:32613"; null on CDSE S1) -> EPSG code."""
    if fields.get("proj:epsg") is not None:
        return int(fields["proj:epsg"])
    code = fields.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        return int(code.split(":")[1])
    return None


def affine_of(values: Sequence[float] | None) -> Affine | None:
    """`proj:transform` -> Affine: 6 elements (a, b, c, d, e, f), 9 (a 3 x 3 matrix whose last
    row is 0 0 1), or GDAL geotransform order (x0, dx, 0, y0, 0, dy), which CDSE's DEM uses
    (told apart by its zero 5th element: in affine order that is the y pixel size)."""
    if not values:
        return None
    t = [float(v) for v in values]
    if len(t) == 9:
        if t[6:] != [0.0, 0.0, 1.0]:
            raise ValueError(f"proj:transform {values}: last row is not 0, 0, 1")
        t = t[:6]
    if len(t) != 6:
        raise ValueError(f"proj:transform {values}: expected 6 or 9 numbers")
    if t[4] == 0.0 and t[1] != 0.0 and t[5] != 0.0:  # GDAL order
        return Affine.from_gdal(*t)
    return Affine(*t)


@dataclasses.dataclass(frozen=True)
class Projection:
    """What an item (or one of its assets) states of its grid."""

    epsg: int | None
    transform: Affine | None
    shape: tuple[int, int] | None


def projection(properties: Mapping[str, Any], asset: Mapping[str, Any] | None = None) -> Projection:
    """The grid of `asset` (its own proj:* fields first, then the item's properties)."""
    asset = asset or {}

    def get(name: str) -> Any:
        return asset[name] if asset.get(name) is not None else properties.get(name)

    epsg = epsg_of(asset)
    if epsg is None and asset.get("proj:code", "") is not None:  # an explicit null stays null
        epsg = epsg_of(properties)
    shape = get("proj:shape")
    return Projection(
        epsg,
        affine_of(get("proj:transform")),
        (int(shape[0]), int(shape[1])) if shape else None,
    )


def _version(text: Any) -> tuple[int, ...] | None:
    """'04.00' -> (4, 0); '5.52' -> (5, 52); None if not a dotted number."""
    if not isinstance(text, str) or not re.fullmatch(r"\d+(\.\d+)*", text.strip()):
        return None
    return tuple(int(p) for p in text.strip().split("."))


def s2_baseline(item_id: str, properties: Mapping[str, Any]) -> tuple[int, ...] | None:
    """An item's Sentinel-2 processing baseline as numbers ((4, 0) for '04.00'), or None."""
    for key in ("s2:processing_baseline", "sentinel:processing_baseline", "processing:version"):
        v = _version(properties.get(key))
        if v is not None:
            return v
    for text in (properties.get("sentinel:product_id"), properties.get("s2:product_uri"), item_id):
        m = re.search(r"_N(\d\d)(\d\d)_", str(text or ""))
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def _offset_applied_flag(properties: Mapping[str, Any]) -> bool | None:
    for key in ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied"):
        if properties.get(key) is not None:
            return bool(properties[key])
    return None


# ---------------------------------------------------------------------------------- rules


@dataclasses.dataclass
class _Decision:
    """A band's decoding while the rules run."""

    scale: float
    offset: float
    nodata: float | None
    to_db: bool = False
    rules: list[str] = dataclasses.field(default_factory=list)
    expected: bool = True


@dataclasses.dataclass(frozen=True)
class ItemFields:
    """What the rules read of an item (free of pystac)."""

    id: str
    properties: Mapping[str, Any]
    time: dt.datetime | None


def _rule_raster_bands(item: ItemFields, band: str, asset: Mapping[str, Any], d: _Decision):
    scale, offset, nodata = stated_encoding(asset)
    if scale is not None:
        d.scale = scale
    if offset is not None:
        d.offset = offset
    if nodata is not None:
        d.nodata = nodata
    d.rules.append("raster_bands" if (scale, offset, nodata) != (None,) * 3 else "registry")


def _rule_s2_boa_offset(item: ItemFields, band: str, asset: Mapping[str, Any], d: _Decision):
    props = item.properties
    flag = _offset_applied_flag(props)
    stated = stated_encoding(asset)[1]
    baseline = s2_baseline(item.id, props)
    if flag:
        d.offset, why = 0.0, "flag"  # already removed upstream: a stated -0.1 would be twice
    elif stated is not None:
        d.offset, why = stated, "stated"
    elif baseline is not None:
        new = baseline >= (4, 0)
        d.offset, why = (S2_BOA_OFFSET, "baseline>=04.00") if new else (0.0, "baseline<04.00")
    elif item.time is not None:
        new = item.time >= S2_OFFSET_SINCE
        d.offset, why = (S2_BOA_OFFSET, "date>=2022-01-25") if new else (0.0, "date<2022-01-25")
    else:
        why = "registry"
    d.rules.append(f"s2_boa_offset:{why}")


def _rule_power_to_db(item: ItemFields, band: str, asset: Mapping[str, Any], d: _Decision):
    d.to_db = True
    d.rules.append("power_to_db")


def _rule_sar_polarizations(item: ItemFields, band: str, asset: Mapping[str, Any], d: _Decision):
    pols = item.properties.get("sar:polarizations")
    if pols is not None and band.upper() not in {str(p).upper() for p in pols}:
        d.expected = False


RULES: Mapping[str, Callable[[ItemFields, str, Mapping[str, Any], _Decision], None]] = {
    "raster_bands": _rule_raster_bands,
    "s2_boa_offset": _rule_s2_boa_offset,
    "power_to_db": _rule_power_to_db,
    "sar_polarizations": _rule_sar_polarizations,
}


# ---------------------------------------------------------------------------------- choosing


def _item_urls(links: Sequence[Any], hrefs: Sequence[str]) -> list[str]:
    urls = [str(getattr(link, "href", "") or "") for link in links]
    return urls + [h for h in hrefs if h]


def _detected(properties: Mapping[str, Any], urls: Sequence[str]) -> list[Provider]:
    """Providers whose URL fragments or property prefixes the item shows, in PROVIDERS order."""
    found = []
    for p in PROVIDERS.values():
        by_url = any(part in u for part in p.url_parts for u in urls)
        by_prop = (
            any(k.startswith(p.property_prefixes) for k in properties)
            if p.property_prefixes
            else False
        )
        if by_url or by_prop:
            found.append(p)
    return found


def resolve_profile(
    item_id: str,
    collection: str | None,
    properties: Mapping[str, Any],
    urls: Sequence[str] = (),
    provider: str | None = None,
) -> tuple[str, Profile | None]:
    """(provider name, profile) for an item; profile None means the project's own contract.

    Args:
        item_id: for error messages.
        collection: the item's collection id (or its parent catalog's id).
        properties: the item's properties.
        urls: its link and asset hrefs (self link host, asset hosts identify providers).
        provider: a name from PROVIDER_NAMES to force (--provider); None detects it.

    Raises:
        ProfileError naming the item and collection: an unknown provider, a collection the
        provider has no profile for, an unsupported one (with the reason), or a collection
        several providers serve when the item does not say whose it is.
    """
    coll = collection or ""
    if provider is not None:
        if provider == OWN:
            if coll not in sensors.SENSORS:
                raise ProfileError(
                    f"item {item_id!r}: collection {coll!r} is not a registry source "
                    f"({', '.join(sensors.SOURCE_IDS)}), as --provider {OWN} requires"
                )
            return OWN, None
        if provider not in PROVIDERS:
            raise ProfileError(f"unknown provider {provider!r}; known: {', '.join(PROVIDER_NAMES)}")
        return provider, _usable(item_id, PROVIDERS[provider], coll)
    if coll in sensors.SENSORS:
        return OWN, None
    detected = _detected(properties, urls)
    for p in detected:
        if p.profile(coll) is not None:
            return p.name, _usable(item_id, p, coll)
    serving = [p for p in PROVIDERS.values() if p.profile(coll) is not None]
    if len(serving) == 1:
        return serving[0].name, _usable(item_id, serving[0], coll)
    if serving:
        raise ProfileError(
            f"item {item_id!r}: collection {coll!r} is served by "
            f"{', '.join(p.name for p in serving)} and the item does not say which; "
            "pass --provider"
        )
    raise ProfileError(
        f"item {item_id!r}: no profile for collection {coll!r}"
        + (f" of {detected[0].name}" if detected else "")
        + f"; known: {', '.join(sorted({p.collection for v in PROVIDERS.values() for p in v.profiles}))}"
    )


def _usable(item_id: str, provider: Provider, collection: str) -> Profile:
    prof = provider.profile(collection)
    if prof is None:
        raise ProfileError(
            f"item {item_id!r}: provider {provider.name} has no profile for collection "
            f"{collection!r}; its collections: {', '.join(p.collection for p in provider.profiles)}"
        )
    if prof.unsupported:
        raise ProfileError(
            f"item {item_id!r}: {provider.name} collection {collection!r} is not supported: "
            f"{prof.unsupported}"
        )
    return prof


def _is_requester_pays(href: str, asset: Mapping[str, Any], properties: Mapping[str, Any]) -> bool:
    if not href.startswith("s3://"):
        return False
    for where in (asset, properties):
        if where.get("storage:requester_pays") is not None:
            return bool(where["storage:requester_pays"])
    bucket = href[5:].split("/", 1)[0]
    return bucket in REQUESTER_PAYS_BUCKETS


def decode_assets(
    provider_name: str,
    profile: Profile,
    item: ItemFields,
    assets: Mapping[str, tuple[str, Mapping[str, Any]]],
) -> dict[str, AssetRef]:
    """Registry band (and quality layer) -> AssetRef, as `profile` decodes this item.

    Args:
        provider_name: the provider (decides signing).
        profile: the collection's profile.
        item: id, properties and time of the item.
        assets: asset key -> (absolute href, the asset's extra fields).

    Returns:
        One AssetRef per band the profile maps and the item is expected to have; an expected
        asset the item lacks gets an AssetRef whose `error` names the asset (the read raises).
    """
    sensor = sensors.get_sensor(profile.source)
    signer = PROVIDERS[provider_name].signer if provider_name in PROVIDERS else None
    out: dict[str, AssetRef] = {}
    for name, key in profile.assets.items():
        is_mask = name == sensor.mask.band
        href, fields = assets.get(key, ("", {}))
        if is_mask:
            d = _Decision(1.0, 0.0, stated_encoding(fields)[2])
        else:
            enc = profile.encoding or sensor.band(name).encoding
            d = _Decision(enc.scale, enc.offset, enc.nodata)
            for rule in profile.rules:
                RULES[rule](item, name, fields, d)
        if not d.expected and key not in assets:
            continue
        error = None
        if key not in assets:
            error = (
                f"{provider_name}/{profile.collection} profile expects asset {key!r} for "
                f"{name}; the item has {sorted(assets) or 'no assets'}"
            )
        out[name] = AssetRef(
            href,
            None if is_mask else d.scale,
            None if is_mask else d.offset,
            d.nodata,
            key=key,
            to_db=d.to_db,
            rule="+".join(d.rules),
            requester_pays=_is_requester_pays(href, fields, item.properties),
            signer=signer,
            error=error,
        )
    return out


# ---------------------------------------------------------------------------------- decoding


@dataclasses.dataclass(frozen=True)
class DbEncoding(sensors.Encoding):
    """An Encoding whose physical value is stored linear power: decodes to 10 log10 (dB)."""

    def decode(self, stored: np.ndarray) -> np.ndarray:
        linear = super().decode(stored)
        with np.errstate(divide="ignore", invalid="ignore"):
            db = (np.float32(10.0) * np.log10(linear)).astype(np.float32)
        db[~(linear > 0)] = np.nan  # log of 0, negatives and NaN: no backscatter to speak of
        return db


def band_encoding(enc: sensors.Encoding, ref: AssetRef) -> sensors.Encoding:
    """The registry encoding with what the asset (or its profile) states put over it."""
    fields = {
        "scale": enc.scale if ref.scale is None else ref.scale,
        "offset": enc.offset if ref.offset is None else ref.offset,
        "nodata": enc.nodata if ref.nodata is None else ref.nodata,
    }
    if ref.to_db:
        return DbEncoding(dtype=enc.dtype, **fields)
    return dataclasses.replace(enc, **fields)


# ---------------------------------------------------------------------------------- access

_SCHEMES = {"s3": "/vsis3/", "gs": "/vsigs/", "az": "/vsiaz/"}


def gdal_path(href: str) -> str:
    """An href -> the path GDAL opens: http(s) via /vsicurl/, s3:// /vsis3/, gs:// /vsigs/,
    az:// /vsiaz/; local paths, file:// URLs and /vsi paths as they are."""
    scheme = href.split("://", 1)[0].lower() if "://" in href else ""
    if scheme in ("http", "https"):
        return "/vsicurl/" + href
    if scheme in _SCHEMES:
        return _SCHEMES[scheme] + href.split("://", 1)[1]
    if scheme == "file":
        return urllib.parse.unquote(urllib.parse.urlparse(href).path)
    return href


def sign_href(href: str, signer: str | None) -> str:
    """`href` signed by `signer` (the planetary-computer package's SAS tokens), or as is."""
    if signer != PC_SIGNER or not href.startswith(("http://", "https://")):
        return href
    import planetary_computer  # only where a Planetary Computer item is read

    return planetary_computer.sign(href)


def open_path(ref: AssetRef, access: Access) -> str:
    """The GDAL path to open for `ref`, signed if its provider signs and `access` allows.

    Raises:
        AccessError: a requester-pays asset without `access.requester_pays`.
    """
    if ref.requester_pays and not access.requester_pays:
        raise AccessError(
            "requester-pays bucket: pass --requester-pays to be billed for the reads "
            "(AWS credentials come from the environment)"
        )
    href = sign_href(ref.href, ref.signer) if access.sign else ref.href
    return gdal_path(href)


def gdal_options(ref: AssetRef, access: Access) -> dict[str, str]:
    """GDAL config options reading `ref` needs beyond the reader's defaults."""
    if ref.requester_pays and access.requester_pays:
        return {"AWS_REQUEST_PAYER": "requester"}
    return {}


def explain(reason: str, ref: AssetRef, access: Access) -> str:
    """A read failure's reason, redacted, with what to do about a refused signature."""
    reason = redact(reason)
    if ref.signer == PC_SIGNER and re.search(r"\b40[13]\b", reason):
        if access.sign:
            reason += " (the Planetary Computer SAS token was refused: expired or absent)"
        else:
            reason += " (a Planetary Computer href read unsigned: drop --no-sign)"
    return reason


_QUERY = re.compile(r"(\w+://[^\s?'\"]+)\?[^\s'\"]*")


def redact(text: str) -> str:
    """`text` with the query string of every URL in it replaced (SAS tokens, signatures)."""
    return _QUERY.sub(r"\1?<redacted>", text)
