"""The simulated world: region, terrain, parcels, land cover per year, change events, phenology.

Everything here is a pure function of the region parameters and absolute zone coordinates, so
any window of the 10 m grid renders the same values wherever it is cut (tiles are seamless)
and a reader test can recompute the truth under any window it reads.

- Terrain: fractal OpenSimplex noise (metres), driving temperature (lapse rate) and the
  timing of green-up (Hopkins' law: later uphill and poleward).
- Parcels: a jittered-grid Voronoi tessellation (~240 m cells). A parcel's class comes from
  smooth "land use" fields (urban, forest, wetness) and the terrain at its seed point, so
  forests, towns and wetlands form blocks. Pixels near a parcel edge mix both parcels.
- Years: each transition y -> y+1 applies labelled change events to chosen parcels
  (deforestation, urban expansion, fire and regrowth, reservoir level change, crop rotation).
- Surface state at time t: class, LAI (double-logistic cycles with harvest, mowing), brown
  leaf fraction and the fractions of water, impervious surface, char and rock per pixel.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import math

import numpy as np
import opensimplex

from schemas.grid import PIXEL_SIZE_M, GridWindow, Tile, utm_to_lonlat, zone_of_epsg
from simulation import classes as C

PARCEL_SIZE_M = 240.0
# Coarse rasters (20 m, 30 m) nest in the 10 m grid when windows start on multiples of 60 m.
ALIGN_M = 60.0
MS_PER_DAY = 86_400_000
DEFAULT_TILE_SIZE = 2048
DEFAULT_SIZE_KM = (5.12, 2.56)
# Event rates per transition, as a fraction of eligible parcels (at least one when eligible).
EVENT_RATES = {
    "deforestation": 0.06,
    "urban_expansion": 0.04,
    "fire_regrowth": 0.05,
    "reservoir_change": 0.5,
    "crop_rotation": 0.35,
}
# Regions with at least this many parcels get every class (other than burned) at least once.
MIN_PARCELS_FOR_ALL_CLASSES = 60
# Water level: water where the distance to the parcel edge exceeds the level (m).
WATER_LEVEL_M = 18.0
WATER_LEVEL_SEASONAL_M = 12.0
RESERVOIR_SHIFT_M = (25.0, 45.0)
# Single-octave OpenSimplex standard deviation (measured on a large sample).
_SIMPLEX_STD = 0.3686


# ---------------------------------------------------------------------------------- hashing


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (ints, strings), stable across processes and platforms."""
    h = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") >> 1


def rng_for(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded by `stable_seed(*parts)`."""
    return np.random.default_rng(stable_seed(*parts))


_GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on uint64 arrays (wrapping arithmetic)."""
    h = (h ^ (h >> np.uint64(30))) * _M1
    h = (h ^ (h >> np.uint64(27))) * _M2
    return h ^ (h >> np.uint64(31))


def hash_uniform(key: int, *ints: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) values, a pure function of (key, ints...) elementwise."""
    arrays = np.broadcast_arrays(*[np.asarray(a, dtype=np.int64) for a in ints])
    h = np.full(arrays[0].shape, np.uint64(key & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    for a in arrays:
        h = _mix(h + _GOLD + a.astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# ---------------------------------------------------------------------------------- noise


@functools.lru_cache(maxsize=4096)
def _simplex(seed: int) -> opensimplex.OpenSimplex:
    return opensimplex.OpenSimplex(seed % (1 << 62))


def fbm(
    xs: np.ndarray,
    ys: np.ndarray,
    *,
    seed: int,
    wavelength: float,
    octaves: int,
    gain: float = 0.5,
) -> np.ndarray:
    """Fractal noise on a grid, ~unit standard deviation: (len(ys), len(xs)) float32.

    Args:
        xs: (W,) absolute x coordinates (m). ys: (H,) absolute y coordinates (m).
        seed: noise seed; each octave uses its own permutation.
        wavelength: the largest feature size (m); each octave halves it.
        octaves: number of octaves.
        gain: amplitude ratio between octaves.
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    total = np.zeros((len(ys), len(xs)), dtype=np.float64)
    amp, var = 1.0, 0.0
    for o in range(octaves):
        wl = wavelength / (2.0**o)
        # Offsets per octave keep the lattices of different octaves from lining up.
        total += amp * _simplex(seed + 7919 * o).noise2array(xs / wl + 0.37 * o, ys / wl)
        var += amp * amp
        amp *= gain
    return (total / (_SIMPLEX_STD * math.sqrt(var))).astype(np.float32)


def fbm_points(
    x: np.ndarray, y: np.ndarray, *, seed: int, wavelength: float, octaves: int, gain: float = 0.5
) -> np.ndarray:
    """`fbm` at scattered points: (N,) float64 (same field as `fbm` on a grid)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    out = np.zeros(x.shape, dtype=np.float64)
    amp, var = 1.0, 0.0
    for o in range(octaves):
        wl = wavelength / (2.0**o)
        gen = _simplex(seed + 7919 * o)
        out += amp * np.array(
            [gen.noise2(a / wl + 0.37 * o, b / wl) for a, b in zip(x, y, strict=True)]
        )
        var += amp * amp
        amp *= gain
    return out / (_SIMPLEX_STD * math.sqrt(var))


@functools.cache
def fbm_quantiles(octaves: int, gain: float = 0.5) -> np.ndarray:
    """Empirical quantiles (0..1 in 1001 steps) of `fbm` values, to hit target fractions."""
    xs = np.arange(384) * 97.0
    v = fbm(xs, xs, seed=12345, wavelength=1000.0, octaves=octaves, gain=gain)
    return np.quantile(v, np.linspace(0.0, 1.0, 1001))


def fbm_threshold(fraction_above: float, octaves: int) -> float:
    """The fbm value exceeded by `fraction_above` of a large field."""
    q = fbm_quantiles(octaves)
    return float(np.interp(1.0 - np.clip(fraction_above, 0.0, 1.0), np.linspace(0, 1, 1001), q))


# ---------------------------------------------------------------------------------- time


def time_to_year_doy(time_ms: int | float) -> tuple[int, float]:
    """ms since epoch -> (year, fractional day of year from 0)."""
    t = dt.datetime.fromtimestamp(time_ms / 1000.0, tz=dt.UTC)
    start = dt.datetime(t.year, 1, 1, tzinfo=dt.UTC)
    return t.year, (t - start).total_seconds() / 86400.0


def year_start_ms(year: int) -> int:
    return int(dt.datetime(year, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


# ---------------------------------------------------------------------------------- region


@dataclasses.dataclass(frozen=True)
class SimRegion:
    """Everything that defines a simulation; `sim_params.json` holds it.

    Attributes:
        seed: the master seed.
        biome: preset name ('temperate', 'tropical').
        years: simulated calendar years (a contiguous span is modelled from min to max).
        windows: one 10 m grid window per UTM zone the region touches.
        tile_size: simulation granule size in pixels (grid tiles of this size).
        cloud_cover: mean cloud fraction of optical acquisitions.
        bbox: the region's lon/lat bounds.
        sources: simulated registry source ids.
    """

    seed: int
    biome: str
    years: tuple[int, ...]
    windows: tuple[GridWindow, ...]
    tile_size: int = DEFAULT_TILE_SIZE
    cloud_cover: float = 0.4
    bbox: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    sources: tuple[str, ...] = (
        "sentinel2_l2a",
        "sentinel1",
        "landsat_c2l2",
        "cop_dem",
        "era5_land",
    )

    @property
    def biome_preset(self) -> C.Biome:
        return C.get_biome(self.biome)

    @property
    def year_span(self) -> tuple[int, ...]:
        return tuple(range(min(self.years), max(self.years) + 1))

    @property
    def center_lonlat(self) -> tuple[float, float]:
        minx, miny, maxx, maxy = self.bbox
        return (0.5 * (minx + maxx), 0.5 * (miny + maxy))

    def window_for(self, epsg: int) -> GridWindow:
        for w in self.windows:
            if w.epsg == epsg:
                return w
        raise ValueError(
            f"the region has no window in EPSG:{epsg}; zones {[w.epsg for w in self.windows]}"
        )

    def granules(self) -> list[tuple[Tile, GridWindow]]:
        """(grid tile, the part of the region window inside it) for every zone, in order."""
        out = []
        span = self.tile_size * PIXEL_SIZE_M
        for w in self.windows:
            minx, miny, maxx, maxy = w.bounds
            for row in range(math.ceil(maxy / span) - 1, math.floor(miny / span) - 1, -1):
                for col in range(math.floor(minx / span), math.ceil(maxx / span)):
                    tile = Tile(w.epsg, col, row, self.tile_size)
                    tx0, ty0, tx1, ty1 = tile.window.bounds
                    x0, x1 = max(minx, tx0), min(maxx, tx1)
                    y0, y1 = max(miny, ty0), min(maxy, ty1)
                    if x1 <= x0 or y1 <= y0:
                        continue
                    width = int(round((x1 - x0) / PIXEL_SIZE_M))
                    height = int(round((y1 - y0) / PIXEL_SIZE_M))
                    out.append((tile, GridWindow(w.epsg, x0, y1, width, height)))
        return out

    def to_params(self) -> dict:
        """JSON-able parameters (the `region` part of sim_params.json)."""
        return {
            "seed": self.seed,
            "biome": self.biome,
            "years": list(self.years),
            "windows": [w.to_dict() for w in self.windows],
            "tile_size": self.tile_size,
            "cloud_cover": self.cloud_cover,
            "bbox": list(self.bbox),
            "sources": list(self.sources),
        }

    @classmethod
    def from_params(cls, d: dict) -> SimRegion:
        return cls(
            seed=int(d["seed"]),
            biome=str(d["biome"]),
            years=tuple(int(y) for y in d["years"]),
            windows=tuple(GridWindow.from_dict(w) for w in d["windows"]),
            tile_size=int(d["tile_size"]),
            cloud_cover=float(d["cloud_cover"]),
            bbox=tuple(float(v) for v in d["bbox"]),
            sources=tuple(d["sources"]),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_params(), sort_keys=True)


def _snap_down(v: float, step: float) -> float:
    return math.floor(v / step + 1e-9) * step


def _snap_up(v: float, step: float) -> float:
    return math.ceil(v / step - 1e-9) * step


def align_window(window: GridWindow) -> GridWindow:
    """The smallest window holding `window` whose edges lie on multiples of ALIGN_M."""
    minx, miny, maxx, maxy = window.bounds
    x0, y0 = _snap_down(minx, ALIGN_M), _snap_down(miny, ALIGN_M)
    x1, y1 = _snap_up(maxx, ALIGN_M), _snap_up(maxy, ALIGN_M)
    return GridWindow(
        window.epsg,
        x0,
        y1,
        int(round((x1 - x0) / PIXEL_SIZE_M)),
        int(round((y1 - y0) / PIXEL_SIZE_M)),
    )


def centered_window(epsg: int, cx: float, cy: float, size_km: tuple[float, float]) -> GridWindow:
    """A window of size_km (width, height) around a zone point, its corner on the 60 m lattice."""
    w = int(round(size_km[0] * 1000 / PIXEL_SIZE_M))
    h = int(round(size_km[1] * 1000 / PIXEL_SIZE_M))
    if w < 1 or h < 1:
        raise ValueError(f"--size-km too small: {size_km}")
    x0 = _snap_down(cx - w * PIXEL_SIZE_M / 2, ALIGN_M)
    y1 = _snap_up(cy + h * PIXEL_SIZE_M / 2, ALIGN_M)
    return GridWindow(epsg, x0, y1, w, h)


def window_lonlat_bounds(windows: tuple[GridWindow, ...]) -> tuple[float, float, float, float]:
    bounds = np.array([w.lonlat_bounds() for w in windows])
    return (
        float(bounds[:, 0].min()),
        float(bounds[:, 1].min()),
        float(bounds[:, 2].max()),
        float(bounds[:, 3].max()),
    )


# ---------------------------------------------------------------------------------- world


@dataclasses.dataclass
class _Events:
    """Events of one transition y -> y+1 over the parcel table."""

    kind: np.ndarray  # (nj, ni) int8: 0 none, else index in EVENT_TYPES + 1
    doy: np.ndarray  # (nj, ni) float: day of year y the event happens (abrupt events)


class World:
    """The parcel table and land-use history of one UTM zone of a region.

    Parcel (i, j) is the Voronoi cell of a seed point jittered inside grid cell
    [i*S, (i+1)*S) x [j*S, (j+1)*S), S = PARCEL_SIZE_M, in zone coordinates. The table covers
    the region's window in that zone plus a margin; windows outside it raise ValueError.
    """

    MARGIN_CELLS = 3

    def __init__(self, region: SimRegion, epsg: int):
        self.region = region
        self.epsg = epsg
        self.biome = region.biome_preset
        self.window = region.window_for(epsg)
        self.key = stable_seed(region.seed, "world", epsg)
        minx, miny, maxx, maxy = self.window.bounds
        m = self.MARGIN_CELLS
        self.i0 = math.floor(minx / PARCEL_SIZE_M) - m
        self.j0 = math.floor(miny / PARCEL_SIZE_M) - m
        self.ni = math.floor(maxx / PARCEL_SIZE_M) + m + 1 - self.i0
        self.nj = math.floor(maxy / PARCEL_SIZE_M) + m + 1 - self.j0
        jj, ii = np.meshgrid(
            np.arange(self.j0, self.j0 + self.nj),
            np.arange(self.i0, self.i0 + self.ni),
            indexing="ij",
        )
        self.cell_i, self.cell_j = ii, jj
        self.seed_x = (ii + 0.15 + 0.7 * self._u(ii, jj, 1)) * PARCEL_SIZE_M
        self.seed_y = (jj + 0.15 + 0.7 * self._u(ii, jj, 2)) * PARCEL_SIZE_M
        self.inside = (
            (self.seed_x >= minx)
            & (self.seed_x < maxx)
            & (self.seed_y >= miny)
            & (self.seed_y < maxy)
        )
        self._macro_fields()
        self.years = region.year_span
        base = self._base_classes()
        self.classes, self.events, self.level = self._history(base)
        # Per-parcel phenology jitter: days and LAI scale; mowing days for hay meadows.
        self.day_shift = (self._u(ii, jj, 10) - 0.5) * 12.0
        self.lai_scale = 0.85 + 0.3 * self._u(ii, jj, 11)
        self.mown = self._u(ii, jj, 12)
        self.cut1 = 150.0 + 20.0 * self._u(ii, jj, 13)
        self.cut2 = 210.0 + 25.0 * self._u(ii, jj, 14)
        self.urban_s1 = self._u(ii, jj, 15)
        # Soil roughness (tillage, clods) shifts radar soil backscatter per parcel (dB).
        self.soil_rough_db = -4.5 + 6.0 * self._u(ii, jj, 16)

    # -- parcel attributes --------------------------------------------------------------------

    def _u(self, ii: np.ndarray, jj: np.ndarray, salt: int) -> np.ndarray:
        return hash_uniform(self.key, ii, jj, np.full_like(ii, salt))

    def _macro_fields(self) -> None:
        x, y, s = self.seed_x.ravel(), self.seed_y.ravel(), self.region.seed
        shape = self.seed_x.shape
        self.elev_z = elevation_z(x, y, s).reshape(shape)
        self.urban_z = fbm_points(
            x, y, seed=stable_seed(s, "urban"), wavelength=2200.0, octaves=2
        ).reshape(shape)
        self.forest_z = fbm_points(
            x, y, seed=stable_seed(s, "forest"), wavelength=2600.0, octaves=2
        ).reshape(shape)
        self.wet_z = fbm_points(
            x, y, seed=stable_seed(s, "wet"), wavelength=1500.0, octaves=2
        ).reshape(shape)

    def _base_classes(self) -> np.ndarray:
        """Class of every parcel in the first year, from land-use fields and terrain."""
        tropical = self.biome.name == "tropical"
        e, u, f, w = self.elev_z, self.urban_z, self.forest_z, self.wet_z
        r1 = self._u(self.cell_i, self.cell_j, 3)
        r2 = self._u(self.cell_i, self.cell_j, 4)
        forest_thr = 0.2 if tropical else 0.75
        cls = np.zeros(e.shape, dtype=np.uint8)
        # Agricultural matrix first; special land uses overwrite it in priority order.
        ag = np.cumsum([0.30, 0.26, 0.12, 0.24, 0.08])
        ag_cls = np.array([C.CROP_A, C.CROP_B, C.DOUBLE_CROP, C.GRASSLAND, C.BARE_SOIL])
        cls[:] = ag_cls[np.minimum(np.searchsorted(ag, r2, side="right"), 4)]
        cls[e > 1.6] = C.ROCK
        forest_score = f + 0.4 * e
        cls[(forest_score > forest_thr - 0.3) & (forest_score <= forest_thr)] = C.SHRUBLAND
        forest = forest_score > forest_thr
        evergreen = (e > 0.4) | (r1 < 0.35) if not tropical else (r1 < 0.85)
        cls[forest & evergreen] = C.EVERGREEN_FOREST
        cls[forest & ~evergreen] = C.DECIDUOUS_FOREST
        cls[u > 1.25] = C.BUILT_UP
        cls[w < -1.45] = C.WETLAND
        cls[w < -1.8] = C.WATER
        if self.inside.sum() >= MIN_PARCELS_FOR_ALL_CLASSES:
            self._ensure_all_classes(cls)
        return cls

    def _ensure_all_classes(self, cls: np.ndarray) -> None:
        """Give every class (but burned) at least one parcel inside the region, where it fits."""
        scores = {
            C.WATER: -self.wet_z,
            C.WETLAND: -self.wet_z,
            C.BUILT_UP: self.urban_z,
            C.EVERGREEN_FOREST: self.forest_z + self.elev_z,
            C.DECIDUOUS_FOREST: self.forest_z - self.elev_z,
            C.SHRUBLAND: self.forest_z,
            C.ROCK: self.elev_z,
        }
        rnd = self._u(self.cell_i, self.cell_j, 5)
        for c in range(1, C.NUM_CLASSES):
            if c == C.BURNED or (cls[self.inside] == c).any():
                continue
            score = scores.get(c, rnd).copy()
            counts = np.bincount(cls[self.inside], minlength=C.NUM_CLASSES)
            # Take the parcel from a class that can spare it.
            score[~self.inside | (counts[cls] <= 2)] = -np.inf
            if np.isfinite(score).any():
                cls[np.unravel_index(np.argmax(score), cls.shape)] = c

    def _history(self, base: np.ndarray) -> tuple[np.ndarray, list[_Events], np.ndarray]:
        """Classes per year, events per transition, water level per year."""
        n = len(self.years)
        classes = np.zeros((n, *base.shape), dtype=np.uint8)
        level = np.zeros((n, *base.shape), dtype=np.float32)
        classes[0] = base
        level[0] = WATER_LEVEL_M
        events: list[_Events] = []
        code = {name: k + 1 for k, name in enumerate(C.EVENT_TYPES)}
        rot_a, rot_b = self.biome.rotation
        ii, jj = self.cell_i, self.cell_j
        for k in range(n - 1):
            cur = classes[k]
            nxt = cur.copy()
            kind = np.zeros(base.shape, dtype=np.int8)
            lo, hi = self.biome.event_doy
            doy = lo + (hi - lo) * self._u(ii, jj, 100 + k)
            taken = ~self.inside.copy()

            def choose(eligible, name, score, _k=k, _taken=taken):
                elig = eligible & ~_taken
                count = int(elig.sum())
                if count == 0:
                    return np.zeros_like(elig)
                nsel = max(1, int(round(EVENT_RATES[name] * count)))
                s = np.where(elig, score, -np.inf).ravel()
                idx = np.argsort(-s, kind="stable")[:nsel]
                sel = np.zeros(elig.size, dtype=bool)
                sel[idx] = True
                sel = sel.reshape(elig.shape)
                _taken |= sel
                return sel

            # Burned parcels regrow into shrubland the year after the fire.
            regrow = (cur == C.BURNED) & self.inside
            nxt[regrow] = C.SHRUBLAND
            kind[regrow] = code["fire_regrowth"]
            taken |= regrow
            rnd = self._u(ii, jj, 200 + k)
            sel = choose(np.isin(cur, C.FORESTS), "deforestation", rnd)
            nxt[sel], kind[sel] = C.BARE_SOIL, code["deforestation"]
            fire_src = (C.EVERGREEN_FOREST, C.DECIDUOUS_FOREST, C.SHRUBLAND)
            sel = choose(np.isin(cur, fire_src), "fire_regrowth", self._u(ii, jj, 300 + k))
            nxt[sel], kind[sel] = C.BURNED, code["fire_regrowth"]
            urban_src = (C.CROP_A, C.CROP_B, C.DOUBLE_CROP, C.GRASSLAND, C.BARE_SOIL)
            sel = choose(np.isin(cur, urban_src), "urban_expansion", self.urban_z + rnd)
            nxt[sel], kind[sel] = C.BUILT_UP, code["urban_expansion"]
            sel = choose(np.isin(cur, (rot_a, rot_b)), "crop_rotation", self._u(ii, jj, 400 + k))
            nxt[sel & (cur == rot_a)] = rot_b
            nxt[sel & (cur == rot_b)] = rot_a
            kind[sel] = code["crop_rotation"]
            # Reservoirs: draw down when full, refill when low.
            lev = level[k].copy()
            sel = choose(cur == C.WATER, "reservoir_change", self._u(ii, jj, 500 + k))
            lo_s, hi_s = RESERVOIR_SHIFT_M
            shift = lo_s + (hi_s - lo_s) * self._u(ii, jj, 600 + k)
            lev[sel] = np.where(level[k][sel] > WATER_LEVEL_M, WATER_LEVEL_M, lev[sel] + shift[sel])
            kind[sel] = code["reservoir_change"]
            classes[k + 1] = nxt
            level[k + 1] = lev
            events.append(_Events(kind=kind, doy=doy))
        return classes, events, level

    # -- lookups --------------------------------------------------------------------------------

    def year_index(self, year: int) -> int:
        return int(np.clip(year - self.years[0], 0, len(self.years) - 1))

    def check_window(self, window: GridWindow) -> None:
        if window.epsg != self.epsg:
            raise ValueError(f"window EPSG:{window.epsg} is not this world's EPSG:{self.epsg}")
        minx, miny, maxx, maxy = window.bounds
        lo_x, lo_y = (self.i0 + 1) * PARCEL_SIZE_M, (self.j0 + 1) * PARCEL_SIZE_M
        hi_x = (self.i0 + self.ni - 1) * PARCEL_SIZE_M
        hi_y = (self.j0 + self.nj - 1) * PARCEL_SIZE_M
        if minx < lo_x or miny < lo_y or maxx > hi_x or maxy > hi_y:
            raise ValueError(
                f"window {window.bounds} lies outside the simulated region "
                f"{self.window.bounds} (EPSG:{self.epsg})"
            )


@functools.lru_cache(maxsize=8)
def get_world(region: SimRegion, epsg: int) -> World:
    """The (cached) world of one zone of a region."""
    return World(region, epsg)


# ---------------------------------------------------------------------------------- terrain


def elevation_z(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Normalized terrain (~unit std) at scattered zone points."""
    return fbm_points(x, y, seed=stable_seed(seed, "terrain"), wavelength=4000.0, octaves=5)


def elevation_grid(region: SimRegion, window: GridWindow) -> np.ndarray:
    """(H, W) float32 elevation (m) at the pixel centres of a window."""
    b = region.biome_preset
    xs = window.x0 + (np.arange(window.width) + 0.5) * window.pixel_size
    ys = window.y0 - (np.arange(window.height) + 0.5) * window.pixel_size
    z = fbm(xs, ys, seed=stable_seed(region.seed, "terrain"), wavelength=4000.0, octaves=5)
    return np.maximum(b.elev_base + b.elev_amp * z, 1.0).astype(np.float32)


def elevation_points(region: SimRegion, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    b = region.biome_preset
    return np.maximum(b.elev_base + b.elev_amp * elevation_z(x, y, region.seed), 1.0)


# ---------------------------------------------------------------------------------- climate


def temperature_k(biome: C.Biome, lat: np.ndarray, elev: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """Monthly-mean 2 m temperature (K) from latitude, season and a 6.5 K/km lapse rate."""
    # Hemisphere flips the season; poleward cooling ~0.6 K per degree at mid-latitudes.
    south = np.asarray(lat) < 0
    phase = np.where(south & (biome.t_amp > 2.0), 182.5, 0.0)
    season = biome.t_amp * np.cos(2 * np.pi * (np.asarray(doy) - biome.t_peak_doy - phase) / 365.25)
    lat_term = -0.6 * (np.abs(lat) - abs(biome.ref_lat))
    return biome.t_mean_sea_level + season + lat_term - 0.0065 * np.asarray(elev)


def precipitation_m_day(biome: C.Biome, doy: np.ndarray) -> np.ndarray:
    """Mean daily precipitation (m/day) from the biome's wet-season cycle."""
    return np.maximum(
        biome.precip_mean
        + biome.precip_amp * np.cos(2 * np.pi * (np.asarray(doy) - biome.wet_peak_doy) / 365.25),
        0.0,
    )


def year_anomaly(seed: int, year: int) -> float:
    """A year's phenology anomaly in days (warm springs green up early)."""
    return float(rng_for(seed, "year-anomaly", year).normal(0.0, 3.0))


# ---------------------------------------------------------------------------------- window fields


@dataclasses.dataclass
class WindowFields:
    """Time-invariant per-pixel fields of one window (flattened, row-major)."""

    window: GridWindow
    p1: np.ndarray  # (N,) flat parcel index of the nearest seed
    p2: np.ndarray  # (N,) second nearest (the neighbour across the edge)
    frac1: np.ndarray  # (N,) area fraction of parcel p1 in the pixel (0.5..1)
    edge_dist: np.ndarray  # (N,) distance (m) from the pixel centre to p1's boundary
    edge_dist2: np.ndarray  # (N,) distance from the pixel centre into p2 (negative)
    elevation: np.ndarray  # (N,) m
    day_jitter: np.ndarray  # (N,) days
    lai_jitter: np.ndarray  # (N,) multiplicative
    texture: np.ndarray  # (N,) ~unit noise, fine scale (urban fabric)
    lat: np.ndarray  # (N,) latitude of the pixel centres

    @property
    def edge(self) -> np.ndarray:
        return np.flatnonzero(self.frac1 < 0.999)


@functools.lru_cache(maxsize=16)
def window_fields(region: SimRegion, window: GridWindow) -> WindowFields:
    """Parcels, mixing fractions, elevation and jitter fields of a window (cached)."""
    world = get_world(region, window.epsg)
    world.check_window(window)
    xs = window.x0 + (np.arange(window.width) + 0.5) * window.pixel_size
    ys = window.y0 - (np.arange(window.height) + 0.5) * window.pixel_size
    ci = np.floor(xs / PARCEL_SIZE_M).astype(np.int64) - world.i0
    cj = np.floor(ys / PARCEL_SIZE_M).astype(np.int64) - world.j0
    X, Y = np.meshgrid(xs, ys)
    best = np.full(X.shape, np.inf)
    second = np.full(X.shape, np.inf)
    p1 = np.zeros(X.shape, dtype=np.int64)
    p2 = np.zeros(X.shape, dtype=np.int64)
    for dj in (-1, 0, 1):
        for di in (-1, 0, 1):
            idx = (cj[:, None] + dj) * world.ni + (ci[None, :] + di)
            sx = world.seed_x.ravel()[idx]
            sy = world.seed_y.ravel()[idx]
            d2 = (X - sx) ** 2 + (Y - sy) ** 2
            is_best = d2 < best
            is_second = ~is_best & (d2 < second)
            second = np.where(is_best, best, np.where(is_second, d2, second))
            p2 = np.where(is_best, p1, np.where(is_second, idx, p2))
            best = np.where(is_best, d2, best)
            p1 = np.where(is_best, idx, p1)
    # Distance to the bisector between the two nearest seeds: the parcel edge.
    sx1, sy1 = world.seed_x.ravel()[p1], world.seed_y.ravel()[p1]
    sx2, sy2 = world.seed_x.ravel()[p2], world.seed_y.ravel()[p2]
    sep = np.hypot(sx2 - sx1, sy2 - sy1)
    edge = (second - best) / (2.0 * np.maximum(sep, 1e-6))
    # A straight edge at distance d from the centre of a 10 m pixel leaves ~0.5 + d/10 inside.
    frac1 = np.clip(0.5 + edge / window.pixel_size, 0.5, 1.0)
    seed = region.seed
    day_jitter = 2.0 * fbm(
        xs, ys, seed=stable_seed(seed, "day-jitter"), wavelength=400.0, octaves=2
    )
    lai_jitter = 1.0 + 0.08 * fbm(
        xs, ys, seed=stable_seed(seed, "lai-jitter"), wavelength=90.0, octaves=2
    )
    texture = fbm(xs, ys, seed=stable_seed(seed, "texture"), wavelength=60.0, octaves=2)
    # Per-pixel latitude (not the window's), so the poleward delay is seamless across tiles.
    _, lat = utm_to_lonlat(X.ravel(), Y.ravel(), window.epsg)
    return WindowFields(
        window=window,
        p1=p1.ravel(),
        p2=p2.ravel(),
        frac1=frac1.ravel(),
        edge_dist=edge.ravel(),
        edge_dist2=-edge.ravel(),
        elevation=elevation_grid(region, window).ravel(),
        day_jitter=day_jitter.ravel().astype(np.float64),
        lai_jitter=lai_jitter.ravel().astype(np.float64),
        texture=texture.ravel().astype(np.float64),
        lat=np.asarray(lat, dtype=np.float64),
    )


# ---------------------------------------------------------------------------------- land cover


def parcel_class(world: World, parcels: np.ndarray, year: int) -> np.ndarray:
    return world.classes[world.year_index(year)].ravel()[parcels]


def landcover_flat(
    world: World, parcels: np.ndarray, edge_dist: np.ndarray, year: int
) -> np.ndarray:
    """Annual land-cover label of pixels (by their parcel and distance inside it)."""
    k = world.year_index(year)
    cls = world.classes[k].ravel()[parcels].copy()
    level = world.level[k].ravel()[parcels]
    # Exposed reservoir shores are bare soil for the year.
    cls[(cls == C.WATER) & (edge_dist <= level)] = C.BARE_SOIL
    return cls


def landcover(region: SimRegion, window: GridWindow, year: int) -> np.ndarray:
    """(H, W) uint8 land-cover class of every pixel of a window in a year (dominant parcel)."""
    f = window_fields(region, window)
    world = get_world(region, window.epsg)
    return landcover_flat(world, f.p1, f.edge_dist, year).reshape(window.shape).astype(np.uint8)


def event_codes(region: SimRegion, window: GridWindow, year_from: int) -> np.ndarray:
    """(H, W) int8 event code (index in EVENT_TYPES + 1, 0 none) of transition year_from -> +1.

    Only pixels whose land cover changes carry a code: a reservoir event marks the shore ring
    that flips between water and bare soil, not the whole lake.
    """
    world = get_world(region, window.epsg)
    k = year_from - world.years[0]
    if not 0 <= k < len(world.events):
        raise ValueError(f"no transition from {year_from}; years {world.years}")
    f = window_fields(region, window)
    a = landcover_flat(world, f.p1, f.edge_dist, year_from)
    b = landcover_flat(world, f.p1, f.edge_dist, year_from + 1)
    code = world.events[k].kind.ravel()[f.p1]
    return np.where(a != b, code, 0).astype(np.int8).reshape(window.shape)


# ---------------------------------------------------------------------------------- surface state


@dataclasses.dataclass
class SurfaceState:
    """What a set of pixels looks like at one time (all (N,) arrays)."""

    cls: np.ndarray  # class whose canopy LUT applies
    lai: np.ndarray  # total LAI (green + brown)
    brown: np.ndarray  # brown fraction of the LAI
    water: np.ndarray  # open-water fraction
    impervious: np.ndarray
    char: np.ndarray
    rock: np.ndarray
    moisture_veg: np.ndarray  # 0..1 relative vegetation water (radar volume term)


def _cycle_lai(cycles, t: np.ndarray, cls_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    green = np.zeros(t.shape)
    brown = np.zeros(t.shape)
    for cy in cycles:
        tt = t[cls_mask]
        up = _sigmoid((tt - cy.sos) / cy.r_up)
        down = _sigmoid((tt - cy.eos) / cy.r_down)
        g = cy.lai_max * up * (1.0 - down)
        if cy.harvest is not None or cy.brown_days > 0:
            drop_day = cy.harvest if cy.harvest is not None else cy.eos + cy.brown_days
            dropped = _sigmoid((tt - drop_day) / 4.0)
            b = cy.lai_max * up * np.clip(down - dropped, 0.0, None)
        else:
            b = np.zeros_like(g)
        if cy.harvest is not None:
            after = tt >= cy.harvest
            g = np.where(after, 0.0, g)
            # Stubble and residue after the harvest, slowly ploughed in.
            b = np.where(after, 0.35 * np.exp(-(tt - cy.harvest) / 50.0), b)
        green[cls_mask] += g
        brown[cls_mask] += b
    return green, brown


def surface_state(
    region: SimRegion,
    world: World,
    fields: WindowFields,
    idx: np.ndarray | None,
    time_ms: int,
    *,
    second: bool = False,
) -> SurfaceState:
    """Surface state of pixels `idx` (flat indices into the window; None = all) at a time.

    Args:
        second: use each pixel's neighbouring parcel (for the mixed part of edge pixels).
    """
    sel = slice(None) if idx is None else idx
    parcels = (fields.p2 if second else fields.p1)[sel]
    edge_dist = (fields.edge_dist2 if second else fields.edge_dist)[sel]
    # The neighbour's pixel part lies just beyond its edge: ~half a pixel inside it.
    if second:
        edge_dist = np.full(parcels.shape, 0.5 * fields.window.pixel_size)
    biome = world.biome
    year, doy = time_to_year_doy(time_ms)
    k = world.year_index(year)
    nk = len(world.years)
    flat = lambda a: a.ravel()[parcels]  # noqa: E731
    cls = world.classes[k].ravel()[parcels].copy()
    since_event = np.full(parcels.shape, np.inf)
    if k < nk - 1 and year == world.years[k]:
        ev = world.events[k]
        kind, evdoy = flat(ev.kind), flat(ev.doy)
        to_cls = world.classes[k + 1].ravel()[parcels]
        # Clearing, construction and fire happen on a day; rotations and regrowth between years.
        abrupt = (np.isin(kind, [1, 2]) | ((kind == 3) & (to_cls == C.BURNED))) & (to_cls != cls)
        hit = abrupt & (doy >= evdoy)
        cls[hit] = to_cls[hit]
        since_event[hit] = doy - evdoy[hit]
    if k > 0 and year == world.years[k]:
        prev = world.events[k - 1]
        burned = (cls == C.BURNED) & (np.isinf(since_event))
        since_event[burned] = doy + 365.0 - flat(prev.doy)[burned]
    # Timing: parcel jitter, pixel jitter, terrain and latitude delay, the year's anomaly.
    delay = (
        flat(world.day_shift)
        + fields.day_jitter[sel]
        + biome.delay_per_100m * (fields.elevation[sel] - biome.elev_base) / 100.0
        + biome.delay_per_deg * (np.abs(fields.lat[sel]) - abs(biome.ref_lat))
        + year_anomaly(region.seed, year)
    )
    t = doy - delay
    n = parcels.shape[0]
    green = np.zeros(n)
    brown = np.zeros(n)
    for lc in biome.classes:
        m = cls == lc.id
        if not m.any():
            continue
        g, b = _cycle_lai(lc.cycles, t, m)
        green[m] = lc.lai_min + g[m]
        brown[m] = b[m]
        if lc.mown_fraction > 0:
            mown = m & (flat(world.mown) < lc.mown_fraction)
            cut = np.zeros(n)
            for cday in (flat(world.cut1), flat(world.cut2)):
                cut += np.where(t > cday, np.exp(-(t - cday) / 20.0), 0.0)
            green[mown] *= np.clip(1.0 - 0.6 * cut[mown], 0.3, 1.0)
    scale = flat(world.lai_scale) * fields.lai_jitter[sel]
    green *= scale
    brown *= scale
    water = np.zeros(n)
    impervious = np.zeros(n)
    char = np.zeros(n)
    rock = np.zeros(n)
    # Open water with a seasonal shoreline; the exposed shore is wet mud (wetland soil).
    is_water = cls == C.WATER
    if is_water.any():
        dry_peak = biome.wet_peak_doy + 182.0
        seasonal = WATER_LEVEL_SEASONAL_M * np.cos(2 * np.pi * (doy - dry_peak) / 365.25)
        level = world.level[k].ravel()[parcels] + seasonal
        wet = is_water & (edge_dist > level)
        water[wet] = 1.0
        shore = is_water & ~wet
        cls[shore] = C.WETLAND
        green[shore] = 0.15
        brown[shore] = 0.0
        green[wet] = 0.0
        brown[wet] = 0.0
    flood = (cls == C.WETLAND) & ~is_water
    if flood.any():
        wl = biome.by_id(C.WETLAND)
        season = 0.5 + 0.5 * np.cos(2 * np.pi * (doy - biome.wet_peak_doy - 30.0) / 365.25)
        water[flood] = wl.flood_max * season * np.clip(0.6 + 0.4 * fields.texture[sel][flood], 0, 1)
    urban = cls == C.BUILT_UP
    if urban.any():
        imp = biome.by_id(C.BUILT_UP).impervious
        impervious[urban] = np.clip(imp + 0.15 * fields.texture[sel][urban], 0.35, 0.97)
    rock[cls == C.ROCK] = 1.0
    burned = cls == C.BURNED
    if burned.any():
        s = since_event[burned]
        s = np.where(np.isfinite(s), s, 400.0)
        # Char fades within months; the shrub canopy recovers over a year or two.
        char[burned] = 0.9 * np.exp(-s / 90.0)
        green[burned] *= 1.0 - np.exp(-s / 240.0)
        brown[burned] *= 1.0 - np.exp(-s / 240.0)
    lai = green + brown
    return SurfaceState(
        cls=cls.astype(np.int64),
        lai=lai,
        brown=np.where(lai > 0, brown / np.maximum(lai, 1e-6), 0.0),
        water=water,
        impervious=impervious,
        char=char,
        rock=rock,
        moisture_veg=np.where(lai > 0, green / np.maximum(lai, 1e-6), 0.0),
    )


def window_lonlat_center(window: GridWindow) -> tuple[float, float]:
    cx, cy = window.x0 + window.width * window.pixel_size / 2, window.y0 - window.height * 5.0
    lon, lat = utm_to_lonlat(cx, cy, window.epsg)
    return float(lon), float(lat)


def hemisphere(epsg: int) -> str:
    return zone_of_epsg(epsg)[1]


def peak_lai(
    region: SimRegion, window: GridWindow, year: int, step_days: float = 5.0
) -> np.ndarray:
    """(H, W) float32: each pixel's highest LAI (green + brown) of a calendar year.

    The LAI is sampled every `step_days` days at noon UTC; edge pixels mix the two parcels'
    LAI by area as the optical rendering mixes their reflectance. A continuous per-pixel
    truth for regression tasks (nothing in the rendering reads it).
    """
    world = get_world(region, window.epsg)
    f = window_fields(region, window)
    e = f.edge
    best = np.zeros(f.p1.shape)
    for day in np.arange(0.0, 365.0, step_days):
        t = year_start_ms(year) + int(day * MS_PER_DAY) + MS_PER_DAY // 2
        lai = surface_state(region, world, f, None, t).lai
        if e.size:
            lai2 = surface_state(region, world, f, e, t, second=True).lai
            lai[e] = f.frac1[e] * lai[e] + (1.0 - f.frac1[e]) * lai2
        best = np.maximum(best, lai)
    return best.reshape(window.shape).astype(np.float32)
