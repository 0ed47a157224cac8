"""The sensor registry: the only place in the project that knows a sensor.

Every reader, the simulator, the training-data builder and the model ask this module which
bands a source has, in which physical units, at which native resolution, how its stored
integers map to those units, how its quality mask is read, and which per-observation geometry
fields travel with each frame.

Units are the registry's units everywhere in memory ("registry units"): surface reflectance
0-1, backscatter in dB, elevation in m, slope in degrees, temperature in K, precipitation in
m/day. Files may store other encodings (scaled integers); `raster:bands` scale/offset/nodata in
STAC (or the `Encoding` defaults below) say how to decode them.

Physical ranges (`Band.valid_range`): a decoded value outside its band's range is not a
measurement (saturation, a fill value nobody declared, a float 3e38, a unit mistake) and every
reader masks it (NaN) and counts it. The ranges are wide on purpose, so that no real pixel
falls outside:
- reflectance -0.1..1.6: Sentinel-2 L2A (baseline >= 04.00) stores DN with a -1000 offset, so
  legitimately dark pixels (water, shadow) reach -0.1 (DN 1); bright snow, cloud tops and
  specular glints reach ~1.5. A saturated uint16 (65535) decodes to 6.45 (S2) or 1.602
  (Landsat), so the range also masks saturated blocks.
- backscatter -40..+30 dB: the GRD noise-equivalent sigma0 is -22..-26 dB and calm water
  reaches ~-35 dB after thermal-noise removal, so values below -40 dB are a processing floor
  (Presto's tables clip at -50 dB), not a measurement; double bounce reaches ~+20 dB;
- elevation -500..9000 m (Dead Sea shore -430 m, Everest 8849 m); slope 0..90 degrees;
- 2 m temperature 170..340 K (a monthly mean never leaves 184-330 K on Earth);
- precipitation 0..1 m/day (the wettest month on record averages ~0.3 m/day).

Unit checks (`unit_mistake`): a table or scene whose median lies outside a band's physical
range, or outside the typical range for the unit where a known unit mistake explains it
(reflectance x 10000, percent, linear power instead of dB, degrees Celsius, mm/day), names
the band and the mistake.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Literal

import numpy as np

Temporal = Literal["acquisition", "monthly", "static"]
ModelTransform = Literal["identity", "log1p"]


@dataclasses.dataclass(frozen=True)
class Encoding:
    """How a band is stored in a file: physical = stored * scale + offset; nodata is stored."""

    dtype: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None

    def decode(self, stored: np.ndarray) -> np.ndarray:
        """Stored values -> float32 physical values, NaN at nodata."""
        out = stored.astype(np.float32) * np.float32(self.scale) + np.float32(self.offset)
        if self.nodata is not None:
            if np.isnan(self.nodata):
                pass  # NaN stays NaN through scale/offset.
            else:
                out[stored == self.nodata] = np.nan
        return out

    def encode(self, physical: np.ndarray) -> np.ndarray:
        """Physical values (NaN = missing) -> stored dtype, nodata where NaN."""
        dtype = np.dtype(self.dtype)
        raw = (np.asarray(physical, dtype=np.float64) - self.offset) / self.scale
        missing = ~np.isfinite(raw)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            lo, hi = info.min, info.max
            if self.nodata is not None:
                # Keep the nodata code out of the valid range.
                if self.nodata == lo:
                    lo += 1
                elif self.nodata == hi:
                    hi -= 1
            raw = np.clip(np.round(np.where(missing, 0, raw)), lo, hi)
        out = raw.astype(dtype)
        if self.nodata is not None:
            out[missing] = self.nodata
        return out


@dataclasses.dataclass(frozen=True)
class Band:
    """One band of a source, in registry units; `valid_range` is its physical range (values
    outside are masked by every reader, see the module docstring)."""

    name: str
    unit: str
    resolution_m: float
    valid_range: tuple[float, float]
    encoding: Encoding
    kind: Literal["continuous", "categorical"] = "continuous"
    description: str = ""
    # Applied before normalization (build_training_data, model): y = log1p(x * transform_scale).
    model_transform: ModelTransform = "identity"
    transform_scale: float = 1.0
    # Derived bands are computed by the reader from other bands, never read from an asset.
    derived_from: str | None = None
    # Centre wavelength in nm for optical bands (used by the simulator's band responses).
    center_nm: float | None = None
    fwhm_nm: float | None = None


@dataclasses.dataclass(frozen=True)
class Mask:
    """How a source's quality layer marks a pixel as unusable."""

    kind: Literal["scl_classes", "qa_bits", "nodata"]
    band: str | None = None  # asset key of the quality layer, if any
    # scl_classes: class values that are NOT clear. qa_bits: bit positions that mark bad pixels.
    invalid_values: tuple[int, ...] = ()
    invalid_bits: tuple[int, ...] = ()
    resolution_m: float | None = None
    encoding: Encoding | None = None  # how the quality layer is stored


@dataclasses.dataclass(frozen=True)
class Sensor:
    """A source of observations."""

    id: str
    title: str
    bands: tuple[Band, ...]
    temporal: Temporal
    mask: Mask
    geometry: tuple[str, ...]  # per-observation geometry fields (floats), in this order
    native_resolution_m: float
    revisit_days: float | None
    description: str = ""

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)

    @property
    def stored_bands(self) -> tuple[Band, ...]:
        """Bands read from assets (derived bands excluded)."""
        return tuple(b for b in self.bands if b.derived_from is None)

    @property
    def is_static(self) -> bool:
        return self.temporal == "static"

    def band(self, name: str) -> Band:
        """The band called `name`; KeyError naming the sensor and its bands otherwise."""
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(f"unknown band {name!r} for sensor {self.id!r}; bands: {self.band_names}")

    def band_index(self, name: str) -> int:
        return self.band_names.index(self.band(name).name)


# Sentinel-2 L2A: processing baseline >= 04.00 adds BOA_ADD_OFFSET = -1000, so
# reflectance = DN / 10000 - 0.1; DN 0 is nodata.
_S2_ENC = Encoding(dtype="uint16", scale=1e-4, offset=-0.1, nodata=0)
# Landsat Collection 2 Level-2 surface reflectance: DN * 2.75e-5 - 0.2; DN 0 is fill.
_LS_ENC = Encoding(dtype="uint16", scale=2.75e-5, offset=-0.2, nodata=0)
# Sentinel-1 backscatter stored as int16 hundredths of a dB.
_S1_ENC = Encoding(dtype="int16", scale=0.01, offset=0.0, nodata=-32768)
_F32 = Encoding(dtype="float32", nodata=float("nan"))


REFLECTANCE_RANGE = (-0.1, 1.6)
BACKSCATTER_RANGE_DB = (-40.0, 30.0)


def _s2(name: str, res: float, center: float, fwhm: float, desc: str) -> Band:
    return Band(
        name,
        "reflectance",
        res,
        REFLECTANCE_RANGE,
        _S2_ENC,
        description=desc,
        center_nm=center,
        fwhm_nm=fwhm,
    )


def _ls(name: str, center: float, fwhm: float, desc: str) -> Band:
    return Band(
        name,
        "reflectance",
        30.0,
        REFLECTANCE_RANGE,
        _LS_ENC,
        description=desc,
        center_nm=center,
        fwhm_nm=fwhm,
    )


SENTINEL2_L2A = Sensor(
    id="sentinel2_l2a",
    title="Sentinel-2 MSI Level-2A surface reflectance",
    bands=(
        _s2("B02", 10, 492.4, 66, "blue"),
        _s2("B03", 10, 559.8, 36, "green"),
        _s2("B04", 10, 664.6, 31, "red"),
        _s2("B05", 20, 704.1, 15, "red edge 1"),
        _s2("B06", 20, 740.5, 15, "red edge 2"),
        _s2("B07", 20, 782.8, 20, "red edge 3"),
        _s2("B08", 10, 832.8, 106, "near infrared"),
        _s2("B8A", 20, 864.7, 21, "narrow near infrared"),
        _s2("B11", 20, 1613.7, 91, "shortwave infrared 1"),
        _s2("B12", 20, 2202.4, 175, "shortwave infrared 2"),
    ),
    temporal="acquisition",
    # Scene classification: 0 nodata, 1 saturated, 2 dark area, 3 cloud shadow, 4 vegetation,
    # 5 not vegetated, 6 water, 7 unclassified, 8 cloud medium, 9 cloud high, 10 cirrus, 11 snow.
    mask=Mask(
        kind="scl_classes",
        band="SCL",
        invalid_values=(0, 1, 3, 8, 9, 10),
        resolution_m=20,
        encoding=Encoding(dtype="uint8", nodata=0),
    ),
    geometry=("sun_zenith", "sun_azimuth"),
    native_resolution_m=10,
    revisit_days=5,
)

SENTINEL1 = Sensor(
    id="sentinel1",
    title="Sentinel-1 C-band SAR GRD, terrain-corrected backscatter",
    bands=(
        Band("VV", "dB", 10, BACKSCATTER_RANGE_DB, _S1_ENC, description="co-polarized backscatter"),
        Band(
            "VH", "dB", 10, BACKSCATTER_RANGE_DB, _S1_ENC, description="cross-polarized backscatter"
        ),
    ),
    temporal="acquisition",
    mask=Mask(kind="nodata"),
    # orbit_direction: 1.0 ascending, 0.0 descending.
    geometry=("incidence_angle", "orbit_direction"),
    native_resolution_m=10,
    revisit_days=6,
)

LANDSAT_C2L2 = Sensor(
    id="landsat_c2l2",
    title="Landsat 8/9 Collection 2 Level-2 surface reflectance",
    bands=(
        _ls("SR_B2", 482.0, 60, "blue"),
        _ls("SR_B3", 561.4, 57, "green"),
        _ls("SR_B4", 654.6, 38, "red"),
        _ls("SR_B5", 864.7, 28, "near infrared"),
        _ls("SR_B6", 1608.9, 85, "shortwave infrared 1"),
        _ls("SR_B7", 2200.7, 187, "shortwave infrared 2"),
    ),
    temporal="acquisition",
    # QA_PIXEL bits: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow, 5 snow,
    # 6 clear, 7 water.
    mask=Mask(
        kind="qa_bits",
        band="QA_PIXEL",
        invalid_bits=(0, 1, 2, 3, 4),
        resolution_m=30,
        encoding=Encoding(dtype="uint16", nodata=1),  # bit 0 = fill
    ),
    geometry=("sun_zenith", "sun_azimuth"),
    native_resolution_m=30,
    revisit_days=8,
)

COP_DEM = Sensor(
    id="cop_dem",
    title="Copernicus GLO-30 digital elevation model",
    bands=(
        Band("elevation", "m", 30, (-500.0, 9000.0), _F32, description="height above the geoid"),
        Band(
            "slope",
            "deg",
            30,
            (0.0, 90.0),
            _F32,
            description="terrain slope, derived from elevation on the target grid",
            derived_from="elevation",
        ),
    ),
    temporal="static",
    mask=Mask(kind="nodata"),
    geometry=(),
    native_resolution_m=30,
    revisit_days=None,
)

ERA5_LAND = Sensor(
    id="era5_land",
    title="ERA5-Land monthly means",
    bands=(
        Band("temperature_2m", "K", 9000, (170.0, 340.0), _F32, description="2 m air temperature"),
        Band(
            "total_precipitation",
            "m/day",
            9000,
            (0.0, 1.0),
            _F32,
            description="mean daily total precipitation",
            model_transform="log1p",
            transform_scale=1000.0,  # log1p of mm/day
        ),
    ),
    temporal="monthly",
    mask=Mask(kind="nodata"),
    geometry=(),
    native_resolution_m=9000,
    revisit_days=30,
)

SENSORS: Mapping[str, Sensor] = {
    s.id: s for s in (SENTINEL2_L2A, SENTINEL1, LANDSAT_C2L2, COP_DEM, ERA5_LAND)
}
SOURCE_IDS: tuple[str, ...] = tuple(SENSORS)
# Cloud-masked optical sources (a quality layer, not only nodata), in registry order.
OPTICAL_SOURCES: tuple[str, ...] = tuple(s.id for s in SENSORS.values() if s.mask.kind != "nodata")
# Sources that observe the surface at an acquisition time (optical and radar), in registry
# order; not climate (monthly) or the DEM (static).
SURFACE_SOURCES: tuple[str, ...] = tuple(
    s.id for s in SENSORS.values() if s.temporal == "acquisition"
)

# A static source's single frame carries this timestamp (ms); its Sensor.is_static says so.
STATIC_TIME_MS = 0


def get_sensor(source_id: str) -> Sensor:
    """The registry entry for `source_id`; KeyError listing the known sources otherwise."""
    try:
        return SENSORS[source_id]
    except KeyError:
        raise KeyError(f"unknown source {source_id!r}; known sources: {SOURCE_IDS}") from None


def model_transform(source_id: str, values: np.ndarray) -> np.ndarray:
    """Apply each band's model transform to (..., C) values in registry units."""
    sensor = get_sensor(source_id)
    out = np.array(values, dtype=np.float32, copy=True)
    for i, band in enumerate(sensor.bands):
        if band.model_transform == "log1p":
            out[..., i] = np.log1p(np.maximum(out[..., i], 0.0) * band.transform_scale)
    return out


def slope_degrees(elevation: np.ndarray, pixel_size: float) -> np.ndarray:
    """cop_dem's derived `slope` band: degrees from an (H, W) elevation grid (central differences).

    The one definition, used by readers (slope on the target grid) and the simulator (truth).
    """
    z = np.asarray(elevation, dtype=np.float64)
    if min(z.shape) < 2:
        return np.full(z.shape, np.nan, dtype=np.float32)
    dz_dy, dz_dx = np.gradient(z, pixel_size)
    return np.degrees(np.arctan(np.hypot(dz_dx, dz_dy))).astype(np.float32)


def mask_from_quality(sensor: Sensor, quality: np.ndarray) -> np.ndarray:
    """Quality layer (SCL classes or QA bits) -> boolean clear mask (True = usable)."""
    q = np.asarray(quality)
    if sensor.mask.kind == "scl_classes":
        return ~np.isin(q, sensor.mask.invalid_values)
    if sensor.mask.kind == "qa_bits":
        bad = np.zeros(q.shape, dtype=bool)
        for bit in sensor.mask.invalid_bits:
            bad |= ((q.astype(np.int64) >> bit) & 1).astype(bool)
        return ~bad
    raise ValueError(f"sensor {sensor.id!r} has no quality layer (mask kind {sensor.mask.kind!r})")


# ---------------------------------------------------------------------------------- units


def out_of_range(band: Band, values: np.ndarray) -> np.ndarray:
    """bool mask of finite values outside the band's physical range (NaN is not counted)."""
    v = np.asarray(values)
    lo, hi = band.valid_range
    with np.errstate(invalid="ignore"):
        return np.isfinite(v) & ((v < lo) | (v > hi))


@dataclasses.dataclass(frozen=True)
class UnitMistake:
    """A common way to hand a band over in the wrong unit, and how to undo it."""

    looks_like: str  # what the values look like, e.g. "reflectance x 10000 (DN)"
    fix: str  # what to do, e.g. "divide by 10000"
    scale: float = 1.0  # registry = given * scale + offset (or 10 log10(given) with db)
    offset: float = 0.0
    db: bool = False  # linear power -> dB; only where no value is negative
    # The mistaken values can lie inside the physical range (linear power 0.05 is a valid
    # dB value): checked even then, where the median is outside the typical range.
    inside_range: bool = False

    def convert(self, median: float) -> float:
        if self.db:
            return 10.0 * math.log10(median) if median > 0 else -math.inf
        return median * self.scale + self.offset


# Per registry unit: the range a median over many pixels or points lies in, and the mistakes
# checked for (the first whose conversion lands the median in that range is named).
TYPICAL_MEDIAN: Mapping[str, tuple[float, float]] = {
    "reflectance": (0.005, 0.8),
    "dB": (-30.0, -1.0),
    "K": (200.0, 320.0),
    "m/day": (0.0, 0.1),
}
UNIT_MISTAKES: Mapping[str, tuple[UnitMistake, ...]] = {
    "reflectance": (
        UnitMistake("reflectance x 10000 (DN)", "divide by 10000", scale=1e-4),
        UnitMistake("percent reflectance", "divide by 100", scale=1e-2),
    ),
    "dB": (UnitMistake("linear power", "convert to dB (10 * log10)", db=True, inside_range=True),),
    "K": (UnitMistake("degrees Celsius", "add 273.15", offset=273.15),),
    "m/day": (UnitMistake("mm/day", "divide by 1000", scale=1e-3, inside_range=True),),
}


def likely_unit_mistake(band: Band, median: float, nonnegative: bool) -> UnitMistake | None:
    """The unit mistake that brings `median` into the unit's typical range, if one does."""
    lo, hi = TYPICAL_MEDIAN.get(band.unit, band.valid_range)
    for m in UNIT_MISTAKES.get(band.unit, ()):
        if m.db and not nonnegative:
            continue
        if lo <= m.convert(median) <= hi:
            return m
    return None


def unit_mistake(band: Band, values: np.ndarray, *, strict: bool = True) -> str | None:
    """Why `values` (many pixels or points of one band) do not look like registry units, as
    a phrase naming the band ("B04 median 1131 looks like reflectance x 10000 (DN); divide by
    10000"); None when they do (or hold no finite value).

    A median outside the physical range is always reported (with the likely mistake when one
    explains it); with `strict`, so is a median inside it but outside the unit's typical range
    that a mistake hiding inside the range explains (linear power 0.05 is a valid dB value,
    0.5 mm/day a valid m/day one). Readers of single scenes pass strict=False: a small window
    may be atypical.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return None
    median = float(np.median(v))
    lo, hi = band.valid_range
    outside = not lo <= median <= hi
    mistake = likely_unit_mistake(band, median, bool((v >= 0).all()))
    typical_lo, typical_hi = TYPICAL_MEDIAN.get(band.unit, band.valid_range)
    atypical = strict and not typical_lo <= median <= typical_hi
    if mistake is not None and (outside or (atypical and mistake.inside_range)):
        return f"{band.name} median {median:.4g} looks like {mistake.looks_like}; {mistake.fix}"
    if outside:
        return (
            f"{band.name} median {median:.4g} is outside the physical range "
            f"{lo:g}..{hi:g} {band.unit}"
        )
    return None
