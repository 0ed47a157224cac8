"""The simulated multi-sensor Earth: pure numpy physics behind `earthembed simulate`.

Modules: `classes` (land-cover classes and biome presets), `spectra` (band responses, library
spectra, PROSAIL lookup tables), `world` (region, terrain, parcels, land-cover history,
phenology, climate), `render` (schedules, sensors, clouds, the frames written to files),
`labels` (land-cover rasters, sampled points, change polygons). No Beam here.

Truth API (what reader and model tests compare against):

- `make_region(*, seed, years, biome='temperate', region='demo', bbox=None, size_km=None,
  tile_size=DEFAULT_TILE_SIZE, cloud_cover=0.4, sources=ALL) -> SimRegion`
- `load_region(catalog_dir) -> SimRegion`: the region a catalog was simulated from
  (reads `sim_params.json`).
- `clear_sky_truth(region, source_id, time_ms, window) -> np.ndarray (H, W, C) float32`:
  noise-free, cloud-free values on any 10 m `GridWindow` inside the region, in registry units
  and registry band order (cop_dem: elevation, slope; sentinel1: dB before speckle at the
  acquisition's per-pixel incidence; era5_land: the 0.1 degree cell value under each pixel).
  Optical values are the 10 m surface reflectance before clouds, noise and 20/30 m averaging:
  a reader's 20 m band, resampled to 10 m, matches the 2 x 2 block mean of the truth.
- `landcover(region, window, year) -> np.ndarray (H, W) uint8`: class ids (`CLASS_NAMES`).
- `acquisition_times(region, source_id) -> list[int]`: every acquisition time (ms).
- `event_codes(region, window, year_from) -> (H, W) int8`: index into `EVENT_TYPES` + 1 of
  pixels whose class changes from year_from to year_from + 1 (0 where none).
- `peak_lai(region, window, year) -> (H, W) float32`: each pixel's highest LAI of the year.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import shapely

from schemas import sensors
from schemas.grid import parse_bbox, split_by_zone, window_for_geometry
from simulation import classes
from simulation.classes import EVENT_TYPES, get_biome
from simulation.render import acquisition_times, clear_sky_truth
from simulation.world import (
    DEFAULT_SIZE_KM,
    DEFAULT_TILE_SIZE,
    SimRegion,
    align_window,
    centered_window,
    event_codes,
    landcover,
    peak_lai,
    window_lonlat_bounds,
)

PARAMS_FILE = "sim_params.json"
REGIONS = ("demo",)
ALL_SOURCES = tuple(sensors.SOURCE_IDS)

__all__ = [
    "ALL_SOURCES",
    "CLASS_NAMES",
    "EVENT_TYPES",
    "PARAMS_FILE",
    "SimRegion",
    "acquisition_times",
    "class_names",
    "clear_sky_truth",
    "event_codes",
    "landcover",
    "load_region",
    "make_region",
    "peak_lai",
]


def class_names(biome: str) -> dict[int, str]:
    """Class id -> name for a biome preset."""
    return get_biome(biome).class_names


CLASS_NAMES = class_names("temperate")


def _parse_size(size_km: float | str | Sequence[float] | None) -> tuple[float, float]:
    if size_km is None:
        return DEFAULT_SIZE_KM
    if isinstance(size_km, str):
        parts = size_km.lower().replace("*", "x").split("x")
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"--size-km must be like 5.12 or 5.12x2.56; got {size_km!r}") from None
    elif isinstance(size_km, int | float):
        vals = [float(size_km)]
    else:
        vals = [float(v) for v in size_km]
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) <= 0:
        raise ValueError(f"--size-km must be positive, like 5.12 or 5.12x2.56; got {size_km!r}")
    return vals[0], vals[1]


def make_region(
    *,
    seed: int,
    years: Sequence[int],
    biome: str = "temperate",
    region: str | None = "demo",
    bbox: str | Sequence[float] | None = None,
    size_km: float | str | Sequence[float] | None = None,
    tile_size: int = DEFAULT_TILE_SIZE,
    cloud_cover: float = 0.4,
    sources: Sequence[str] = ALL_SOURCES,
) -> SimRegion:
    """A SimRegion from command-line style options.

    Args:
        seed: master seed.
        years: calendar years to simulate.
        biome: 'temperate' (Belgium-like) or 'tropical' (Para, Brazil-like).
        region: 'demo' (the biome's default centre) when bbox is None.
        bbox: lon/lat 'minx,miny,maxx,maxy' (may span UTM zones; each zone gets a window).
        size_km: with `region`, the window size 'W' or 'WxH' km around the centre
            (default 5.12 x 2.56).
        tile_size: granule size in pixels.
        cloud_cover: mean cloud fraction of optical acquisitions (0-1).
        sources: registry source ids to simulate.
    """
    b = get_biome(biome)
    if not 0.0 <= cloud_cover <= 1.0:
        raise ValueError(f"--cloud-cover must be in [0, 1]; got {cloud_cover}")
    if tile_size < 16:
        raise ValueError(f"--tile-size must be >= 16 px; got {tile_size}")
    for s in sources:
        sensors.get_sensor(s)
    if not years:
        raise ValueError("--years is empty")
    if bbox is not None:
        geom = shapely.box(*parse_bbox(bbox))
        windows = tuple(
            align_window(window_for_geometry(part, epsg))
            for epsg, part in split_by_zone(geom).items()
        )
    else:
        if region not in REGIONS:
            raise ValueError(
                f"--sim-region must be one of {REGIONS} (or give --bbox); got {region!r}"
            )
        cx, cy = b.demo_center
        windows = (centered_window(b.demo_epsg, cx, cy, _parse_size(size_km)),)
    return SimRegion(
        seed=int(seed),
        biome=b.name,
        years=tuple(sorted(int(y) for y in years)),
        windows=windows,
        tile_size=int(tile_size),
        cloud_cover=float(cloud_cover),
        bbox=window_lonlat_bounds(windows),
        sources=tuple(sources),
    )


def load_region(catalog_dir: str | Path) -> SimRegion:
    """The SimRegion a catalog was simulated from (its `sim_params.json`)."""
    path = Path(catalog_dir) / PARAMS_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read simulation parameters {path}: {e}") from None
    return SimRegion.from_params(doc["region"])


def region_aoi(region: SimRegion, inset_m: float = 1.0) -> dict:
    """The region's windows as one lon/lat GeoJSON geometry, `inset_m` inside their edges (so
    a job's 10 m grid snaps onto exactly the simulated pixels); one UTM zone only."""
    import numpy as np

    from schemas.grid import utm_to_lonlat

    epsgs = {w.epsg for w in region.windows}
    if len(epsgs) != 1:
        raise ValueError(f"the region spans several UTM zones {sorted(epsgs)}; give an AOI")
    epsg = epsgs.pop()
    boxes = [shapely.box(*w.bounds) for w in region.windows]
    inner = shapely.union_all(boxes).buffer(-inset_m, join_style="mitre").segmentize(50.0)
    lonlat = shapely.transform(
        inner, lambda c: np.column_stack(utm_to_lonlat(c[:, 0], c[:, 1], epsg))
    )
    return shapely.geometry.mapping(lonlat)


# Keep the submodule importable as simulation.classes.
_ = classes
