"""The sensor registry: the only place in the project that knows a sensor.

Every reader, the simulator, the training-data builder and the model ask this module which
bands a source has, in which physical units, at which native resolution, how its stored
integers map to those units, how its quality mask is read, and which per-observation geometry
fields travel with each frame.

Units are the registry's units everywhere in memory ("registry units"): surface reflectance
0-1, backscatter in dB, elevation in m, slope in degrees, temperature in K, precipitation in
m/day. Files may store other encodings (scaled integers); `raster:bands` scale/offset/nodata in
STAC (or the `Encoding` defaults below) say how to decode them.
"""

from __future__ import annotations

import dataclasses
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
    """One band of a source, in registry units."""

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


def _s2(name: str, res: float, center: float, fwhm: float, desc: str) -> Band:
    return Band(
        name,
        "reflectance",
        res,
        (0.0, 1.6),
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
        (0.0, 1.6),
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
        Band("VV", "dB", 10, (-35.0, 10.0), _S1_ENC, description="co-polarized backscatter"),
        Band("VH", "dB", 10, (-40.0, 5.0), _S1_ENC, description="cross-polarized backscatter"),
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
        Band("temperature_2m", "K", 9000, (180.0, 340.0), _F32, description="2 m air temperature"),
        Band(
            "total_precipitation",
            "m/day",
            9000,
            (0.0, 0.2),
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
