"""Spectra: band responses, library endmembers and PROSAIL canopy lookup tables.

Every optical value the simulator renders is a band-convolved spectrum at 1 nm over
400-2500 nm. Vegetated classes come from PROSAIL (PROSPECT-5 leaves in a SAIL canopy over the
biome's soil) tabulated against LAI, once per process. Non-vegetated surfaces come from
typical values of public spectral libraries. Bands are Gaussian responses built from the
registry's centre wavelength and FWHM, for Sentinel-2 and Landsat alike.

Columns of every table: the Sentinel-2 bands then the Landsat bands, in registry order
(`BAND_COLUMNS` gives each source's slice).
"""

from __future__ import annotations

import functools

import numpy as np
import prosail

from schemas import sensors
from simulation import classes as C

WAVELENGTHS = np.arange(400, 2501, dtype=np.float64)  # nm; PROSAIL's 1 nm grid
LAI_GRID = np.linspace(0.0, 8.0, 33)  # LUT nodes, 0.25 apart
LAI_STEP = float(LAI_GRID[1] - LAI_GRID[0])

# Sun and view geometry of the LUT: a mid-latitude morning overpass seen near nadir.
_TTS, _TTO, _PSI = 35.0, 5.0, 90.0


def _columns() -> dict[str, slice]:
    out, start = {}, 0
    for sid in sensors.OPTICAL_SOURCES:
        n = len(sensors.get_sensor(sid).stored_bands)
        out[sid] = slice(start, start + n)
        start += n
    return out


BAND_COLUMNS: dict[str, slice] = _columns()
NUM_COLUMNS = sum(s.stop - s.start for s in BAND_COLUMNS.values())


# ---------------------------------------------------------------------------------- bands


def band_response(center_nm: float, fwhm_nm: float) -> np.ndarray:
    """A Gaussian spectral response on WAVELENGTHS, normalized to sum 1."""
    sigma = fwhm_nm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    w = np.exp(-0.5 * ((WAVELENGTHS - center_nm) / sigma) ** 2)
    return w / w.sum()


@functools.cache
def response_matrix() -> np.ndarray:
    """(2101, NUM_COLUMNS): the responses of every optical column (S2 then Landsat bands)."""
    cols = []
    for sid in sensors.OPTICAL_SOURCES:
        for band in sensors.get_sensor(sid).stored_bands:
            cols.append(band_response(band.center_nm, band.fwhm_nm))
    return np.stack(cols, axis=1)


def convolve(spectrum: np.ndarray) -> np.ndarray:
    """(..., 2101) spectra -> (..., NUM_COLUMNS) band reflectances."""
    return np.asarray(spectrum) @ response_matrix()


# ---------------------------------------------------------------------------------- library

# Typical reflectance (0-1) at anchor wavelengths (nm), linearly interpolated to 1 nm.
# Values are read off representative spectra of public libraries:
#  - water: USGS Spectral Library v7 (Kokaly et al. 2017) and Sentinel-2 inland-water
#    reflectances for a moderately turbid lake (peak ~0.06 in the green, ~0 beyond 900 nm);
#  - asphalt, concrete, red clay roof tile, charcoal/ash: ECOSTRESS Spectral Library v1
#    (Meerdink et al. 2019), man-made materials and burned-surface samples;
#  - loam (Belgian loess soil) and red oxisol: ECOSTRESS soils (Alfisol/Oxisol) and USGS
#    soil spectra (rising from ~0.06 at 400 nm to ~0.3 at 1600 nm, clay absorption at 2200 nm);
#  - rock: USGS limestone and granite outcrops (bright and flat, carbonate dip beyond 2200 nm);
#  - cloud: typical Sentinel-2 L2A values over thick water clouds (bright, darker in SWIR
#    where droplets absorb).
LIBRARY_ANCHORS: dict[str, tuple[tuple[float, float], ...]] = {
    "water": (
        (400, 0.040),
        (450, 0.048),
        (500, 0.053),
        (560, 0.058),
        (600, 0.045),
        (665, 0.030),
        (705, 0.025),
        (750, 0.012),
        (800, 0.008),
        (865, 0.006),
        (1000, 0.003),
        (1600, 0.002),
        (2500, 0.001),
    ),
    "asphalt": (
        (400, 0.050),
        (500, 0.060),
        (600, 0.068),
        (700, 0.076),
        (800, 0.085),
        (1000, 0.095),
        (1600, 0.115),
        (2200, 0.105),
        (2500, 0.100),
    ),
    "concrete": (
        (400, 0.180),
        (500, 0.240),
        (600, 0.275),
        (700, 0.295),
        (900, 0.315),
        (1200, 0.335),
        (1600, 0.345),
        (2200, 0.300),
        (2500, 0.280),
    ),
    "roof_tile": (
        (400, 0.060),
        (500, 0.070),
        (580, 0.100),
        (620, 0.220),
        (700, 0.300),
        (900, 0.380),
        (1600, 0.450),
        (2200, 0.400),
        (2500, 0.380),
    ),
    "char": (
        (400, 0.030),
        (600, 0.040),
        (800, 0.050),
        (1000, 0.060),
        (1600, 0.090),
        (2200, 0.100),
        (2500, 0.100),
    ),
    "loam": (
        (400, 0.060),
        (500, 0.090),
        (600, 0.140),
        (700, 0.185),
        (800, 0.215),
        (1000, 0.255),
        (1400, 0.280),
        (1600, 0.320),
        (1900, 0.270),
        (2200, 0.280),
        (2500, 0.260),
    ),
    "oxisol": (
        (400, 0.040),
        (500, 0.060),
        (600, 0.120),
        (700, 0.180),
        (800, 0.200),
        (1000, 0.220),
        (1400, 0.250),
        (1600, 0.290),
        (1900, 0.240),
        (2200, 0.270),
        (2500, 0.250),
    ),
    "rock": (
        (400, 0.200),
        (500, 0.255),
        (600, 0.295),
        (700, 0.315),
        (900, 0.335),
        (1600, 0.375),
        (2100, 0.340),
        (2200, 0.300),
        (2500, 0.280),
    ),
    "cloud": (
        (400, 0.660),
        (500, 0.650),
        (600, 0.640),
        (800, 0.620),
        (1000, 0.580),
        (1300, 0.500),
        (1600, 0.400),
        (2000, 0.300),
        (2200, 0.280),
        (2500, 0.250),
    ),
}

# Built-up surface: a mixture of roads, pavements and roofs (fractions of the impervious part).
URBAN_MIX = {"asphalt": 0.40, "concrete": 0.35, "roof_tile": 0.25}


def library_spectrum(name: str) -> np.ndarray:
    """(2101,) reflectance of a library endmember on WAVELENGTHS."""
    try:
        anchors = LIBRARY_ANCHORS[name]
    except KeyError:
        raise KeyError(f"no library spectrum {name!r}; have {sorted(LIBRARY_ANCHORS)}") from None
    wl, refl = zip(*anchors, strict=True)
    return np.interp(WAVELENGTHS, wl, refl)


@functools.cache
def endmembers() -> dict[str, np.ndarray]:
    """Band-convolved library endmembers: name -> (NUM_COLUMNS,) float32 (plus 'urban')."""
    out = {k: convolve(library_spectrum(k)).astype(np.float32) for k in LIBRARY_ANCHORS}
    urban = sum(w * library_spectrum(k) for k, w in URBAN_MIX.items())
    out["urban"] = convolve(urban).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------- PROSAIL


def _prosail(leaf: C.Leaf, lai: float, soil: np.ndarray) -> np.ndarray:
    """One PROSAIL spectrum (2101,) for a leaf, LAI and dry soil spectrum."""
    return prosail.run_prosail(
        n=leaf.n,
        cab=leaf.cab,
        car=leaf.car,
        cbrown=0.0 if leaf.cab > 10 else 0.8,
        cw=leaf.cw,
        cm=leaf.cm,
        lai=float(lai),
        lidfa=leaf.leaf_angle,
        hspot=leaf.hspot,
        tts=_TTS,
        tto=_TTO,
        psi=_PSI,
        typelidf=2,
        rsoil=leaf.rsoil,
        psoil=leaf.psoil,
        # Dry soil from the library; wet soil about 40% darker (water fills the pores).
        soil_spectrum1=soil,
        soil_spectrum2=0.6 * soil,
        factor="SDR",
    )


@functools.cache
def canopy_luts(biome: str) -> tuple[np.ndarray, np.ndarray]:
    """PROSAIL reflectance vs LAI for every class of a biome, band-convolved.

    Args:
        biome: a preset name ('temperate', 'tropical').

    Returns:
        (green, brown): float32 (NUM_CLASSES, len(LAI_GRID), NUM_COLUMNS). `green` uses the
        class's leaves, `brown` the same canopy of senescent leaves over the same soil. Rows of
        classes without a canopy hold the soil under LAI 0 (unused).
    """
    b = C.get_biome(biome)
    soil = library_spectrum(b.soil)
    green = np.zeros((C.NUM_CLASSES, len(LAI_GRID), NUM_COLUMNS), np.float32)
    brown = np.zeros_like(green)
    rmat = response_matrix()
    for cls in b.classes:
        senescent = C.Leaf(
            **{
                **C.BROWN_LEAF.__dict__,
                "psoil": cls.leaf.psoil,
                "rsoil": cls.leaf.rsoil,
                "leaf_angle": cls.leaf.leaf_angle,
            }
        )
        g = np.stack([_prosail(cls.leaf, lai, soil) for lai in LAI_GRID])
        s = np.stack([_prosail(senescent, lai, soil) for lai in LAI_GRID])
        green[cls.id] = g @ rmat
        brown[cls.id] = s @ rmat
    return green, brown


def lookup(lut: np.ndarray, class_ids: np.ndarray, lai: np.ndarray) -> np.ndarray:
    """Linear interpolation of a (classes, LAI, bands) LUT at per-pixel class and LAI.

    Args:
        lut: (NUM_CLASSES, len(LAI_GRID), K) table.
        class_ids: (N,) int class per pixel.
        lai: (N,) float LAI per pixel (clipped to the grid).

    Returns:
        (N, K) float32.
    """
    pos = np.clip(lai, LAI_GRID[0], LAI_GRID[-1]) / LAI_STEP
    i0 = np.minimum(pos.astype(np.int64), len(LAI_GRID) - 2)
    w = (pos - i0).astype(np.float32)[:, None]
    return (1.0 - w) * lut[class_ids, i0] + w * lut[class_ids, i0 + 1]
