"""The point observation table: pixel time series for users who hold no imagery.

Parquet, long format, one row per (point, source, time) (ARCHITECTURE.md, Sources):

| column | type | |
|---|---|---|
| point_id | string | |
| lon, lat | float64 | EPSG:4326 |
| source | string | a registry source id |
| time | timestamp[ms, UTC] | null for static sources |
| one column per band | float32 | named as in the registry, registry units, NaN = missing |

Reading gives `Observations` over a point set: each source's `SourceFrames` has H = N points
(all points of the file, in order of first appearance) and W = 1, its T frames are the union of
that source's times, and a (frame, point) is valid where a row exists with at least one finite
band. Per-frame geometry is not part of the table (it is NaN after reading).

Decisions: columns that are neither fixed columns nor registry band names are ignored with a
warning (extraction tables often carry labels or ids), or raise with `strict=True`; a source
whose band columns are all absent is an error, a single absent band column is a NaN channel;
a static source's time is ignored (its frame is at `sensors.STATIC_TIME_MS`); duplicate
(point, source, time) rows are an error.

Checks (`check_units`, on by default): lon must lie in -180..180 and lat in -90..90 (the
error names the column and the row, and a likely lon/lat swap); each band column of a source,
over that source's rows, must look like registry units (`sensors.unit_mistake`: a median
outside the band's physical range, or a known unit mistake such as reflectance x 10000 or
linear power, is an error naming the band and the fix); single values outside the physical
range are then masked (NaN) and counted in a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas import sensors
from schemas.grid import utm_to_lonlat
from schemas.observations import Observations, SourceFrames

if TYPE_CHECKING:
    import pandas as pd

POINT_TABLE_SCHEMA_FIELDS: tuple[pa.Field, ...] = (
    pa.field("point_id", pa.string(), nullable=False),
    pa.field("lon", pa.float64(), nullable=False),
    pa.field("lat", pa.float64(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("time", pa.timestamp("ms", tz="UTC")),  # null for static sources
)
FIXED_COLUMNS: tuple[str, ...] = tuple(f.name for f in POINT_TABLE_SCHEMA_FIELDS)


def band_columns(sources: Sequence[str] | None = None) -> tuple[str, ...]:
    """Band column names of `sources` (default: the whole registry), registry order, unique."""
    out: list[str] = []
    for sid in sources or sensors.SOURCE_IDS:
        for name in sensors.get_sensor(sid).band_names:
            if name not in out:
                out.append(name)
    return tuple(out)


def point_table_schema(sources: Sequence[str] | None = None) -> pa.Schema:
    """The point table schema: fixed columns, then a float32 column per band of `sources`."""
    bands = [pa.field(b, pa.float32()) for b in band_columns(sources)]
    return pa.schema([*POINT_TABLE_SCHEMA_FIELDS, *bands])


# ---------------------------------------------------------------------------------- reading


def _column(table: pa.Table, name: str, path: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise ValueError(
            f"{path}: missing column {name!r}; a point table needs {list(FIXED_COLUMNS)} "
            f"and band columns; it has {table.column_names}"
        )
    return table.column(name)


def _bad_type(path: str, name: str, col: pa.ChunkedArray, want: str) -> ValueError:
    return ValueError(f"{path}: column {name!r} has type {col.type}, expected {want}")


def _strings(table: pa.Table, name: str, path: str) -> np.ndarray:
    col = _column(table, name, path)
    t = col.type
    if pa.types.is_dictionary(t):
        t = t.value_type
        col = col.cast(t)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        raise _bad_type(path, name, col, "string")
    if col.null_count:
        raise ValueError(f"{path}: column {name!r} has {col.null_count} null values")
    return np.asarray(col.to_pylist(), dtype=object)


def _numbers(
    table: pa.Table, name: str, path: str, dtype: type, allow_null: bool = False
) -> np.ndarray:
    col = _column(table, name, path)
    if pa.types.is_null(col.type):
        return np.full(len(col), np.nan, dtype=dtype)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise _bad_type(path, name, col, "a float (or integer) column")
    if col.null_count and not allow_null:
        raise ValueError(f"{path}: column {name!r} has {col.null_count} null values")
    return col.cast(pa.float64()).to_numpy().astype(dtype)  # nulls -> NaN


def _times_ms(table: pa.Table, path: str) -> np.ndarray:
    """The time column -> int64 ms, the int64 minimum where null."""
    col = _column(table, "time", path)
    if pa.types.is_null(col.type):
        return np.full(len(col), np.iinfo(np.int64).min, dtype=np.int64)
    if not pa.types.is_timestamp(col.type):
        raise _bad_type(path, "time", col, "timestamp[ms, UTC] (null for static sources)")
    # Naive timestamps are taken as UTC; any unit is brought to ms.
    ms = col.cast(pa.timestamp("ms", tz=col.type.tz), safe=False).cast(pa.int64())
    return ms.fill_null(np.iinfo(np.int64).min).to_numpy()


def read_point_table(
    path: str | Path,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    strict: bool = False,
    check_units: bool = True,
) -> Observations:
    """Read a point observation table into a point-set `Observations`.

    Args:
        path: Parquet file (any path pyarrow opens).
        start_ms: keep acquisitions with time >= start_ms (static sources always kept).
        end_ms: keep acquisitions with time < end_ms.
        strict: raise on columns that are not fixed columns or registry bands, instead of
            warning and ignoring them.
        check_units: check coordinates and band units, mask values outside the physical
            ranges (module docstring).

    Returns:
        Observations with point_ids, lon, lat (N,) and one SourceFrames (T, N, 1, C) per
        source in the table, bands in registry order, times sorted.

    Raises:
        ValueError: naming the file and column for a missing fixed column, a wrong type,
            nulls where none may be, unknown source ids, a source with no band column,
            inconsistent point locations or duplicate (point, source, time) rows; with
            `check_units`, coordinates out of range and bands in the wrong unit.
    """
    path = str(path)
    table = pq.read_table(path)
    known = set(FIXED_COLUMNS) | set(band_columns())
    extra = [c for c in table.column_names if c not in known]
    if extra:
        msg = f"{path}: columns not in the point table schema or the registry: {extra}"
        if strict:
            raise ValueError(msg)
        warnings.warn(msg + " (ignored)", UserWarning, stacklevel=2)

    pid = _strings(table, "point_id", path)
    source = _strings(table, "source", path)
    lon = _numbers(table, "lon", path, np.float64)
    lat = _numbers(table, "lat", path, np.float64)
    time = _times_ms(table, path)
    null_time = time == np.iinfo(np.int64).min
    if check_units:
        check_coordinates(lon, lat, path)

    unknown = sorted(set(source) - set(sensors.SOURCE_IDS))
    if unknown:
        raise ValueError(
            f"{path}: column 'source' has unknown source ids {unknown}; "
            f"known sources: {sensors.SOURCE_IDS}"
        )

    # Points in order of first appearance, over the whole file (the period filter must not
    # change the point set).
    uniq, first, inv = np.unique(pid.astype(str), return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    point = rank[inv]
    n = len(uniq)
    p_lon, p_lat = lon[first[order]], lat[first[order]]
    moved = (np.abs(lon - p_lon[point]) > 1e-9) | (np.abs(lat - p_lat[point]) > 1e-9)
    if moved.any():
        bad = pid[np.flatnonzero(moved)[0]]
        raise ValueError(f"{path}: point {bad!r} has rows with different lon/lat")

    frames = {}
    for sid in sensors.SOURCE_IDS:
        rows = source == sid
        if not rows.any():
            continue
        sensor = sensors.get_sensor(sid)
        have = [b.name for b in sensor.stored_bands if b.name in table.column_names]
        if not have:
            raise ValueError(
                f"{path}: source {sid!r} has rows but none of its band columns "
                f"{[b.name for b in sensor.stored_bands]}"
            )
        if sensor.is_static:
            t = np.full(rows.sum(), sensors.STATIC_TIME_MS, dtype=np.int64)
            idx = np.flatnonzero(rows)
        else:
            if (rows & null_time).any():
                bad = pid[np.flatnonzero(rows & null_time)[0]]
                raise ValueError(
                    f"{path}: column 'time' is null for {sid!r} (point {bad!r}); only static "
                    "sources may have a null time"
                )
            keep = rows.copy()
            if start_ms is not None:
                keep &= time >= start_ms
            if end_ms is not None:
                keep &= time < end_ms
            idx = np.flatnonzero(keep)
            t = time[idx]
        times, t_idx = np.unique(t, return_inverse=True)
        p_idx = point[idx]
        key = t_idx.astype(np.int64) * n + p_idx
        if len(np.unique(key)) != len(key):
            _, counts = np.unique(key, return_counts=True)
            dup = np.unique(key)[counts > 1][0]
            raise ValueError(
                f"{path}: duplicate rows for source {sid!r}, point {uniq[order][dup % n]!r}, "
                f"time {times[dup // n]} ms"
            )
        values = np.full((len(times), n, 1, len(sensor.bands)), np.nan, dtype=np.float32)
        for name in sensor.band_names:
            if name in table.column_names:
                col = _numbers(table, name, path, np.float32, allow_null=True)
                if check_units:
                    col = _checked_band(sensor.band(name), col, rows, sid, path)
                values[t_idx, p_idx, 0, sensor.band_index(name)] = col[idx]
        valid = np.zeros((len(times), n, 1), dtype=bool)
        valid[t_idx, p_idx, 0] = np.isfinite(values[t_idx, p_idx, 0]).any(axis=-1)
        frames[sid] = SourceFrames(sid, values, valid, times.astype(np.int64))
    return Observations(sources=frames, point_ids=uniq[order].astype(object), lon=p_lon, lat=p_lat)


def check_coordinates(lon: np.ndarray, lat: np.ndarray, path: str) -> None:
    """ValueError naming the column and the (0-based) row of the first coordinate that is not
    a finite lon in -180..180 or lat in -90..90."""
    for name, v, limit in (("lon", lon, 180.0), ("lat", lat, 90.0)):
        with np.errstate(invalid="ignore"):
            bad = ~(np.abs(v) <= limit)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            swap = ""
            if name == "lat" and abs(lat[i]) <= 180 and abs(lon[i]) <= 90:
                swap = " (lon and lat swapped?)"
            raise ValueError(
                f"{path}: column {name!r} row {i}: {v[i]} is outside -{limit:g}..{limit:g}"
                f"{swap}; {int(bad.sum())} rows are"
            )


def _checked_band(
    band: sensors.Band, col: np.ndarray, rows: np.ndarray, source: str, path: str
) -> np.ndarray:
    """A band column after the unit check over `source`'s rows (ValueError naming the band and
    the likely mistake), its values outside the physical range masked with a warning."""
    why = sensors.unit_mistake(band, col[rows])
    if why is not None:
        raise ValueError(f"{path}: source {source!r}: {why}")
    bad = rows & sensors.out_of_range(band, col)
    if bad.any():
        lo, hi = band.valid_range
        warnings.warn(
            f"{path}: {int(bad.sum())} {source} {band.name} values outside {lo:g}..{hi:g} "
            f"{band.unit} masked",
            UserWarning,
            stacklevel=3,
        )
        col = np.where(bad, np.float32(np.nan), col)
    return col


# ---------------------------------------------------------------------------------- writing


def point_table_from_observations(obs: Observations) -> pa.Table:
    """A point-set Observations -> the point table (a row per valid (point, source, frame)).

    Invalid (point, frame) pairs have no row; values are written as they are, NaN kept.
    """
    if obs.point_ids is None or obs.lon is None or obs.lat is None:
        raise ValueError(
            "write_point_table needs a point set (point_ids, lon, lat); "
            "use observations_to_point_table for a window"
        )
    sources = [s for s in sensors.SOURCE_IDS if s in obs.sources]
    schema = point_table_schema(sources)
    bands = band_columns(sources)
    cols: dict[str, list[np.ndarray]] = {name: [] for name in schema.names}
    n = len(obs.point_ids)
    for sid in sources:
        sf = obs[sid].with_registry_bands()
        if sf.spatial_shape != (n, 1):
            raise ValueError(f"{sid}: spatial shape {sf.spatial_shape} is not (N={n}, 1)")
        t_idx, p_idx = np.nonzero(sf.valid[:, :, 0])
        cols["point_id"].append(np.asarray(obs.point_ids, dtype=object)[p_idx])
        cols["lon"].append(np.asarray(obs.lon, dtype=np.float64)[p_idx])
        cols["lat"].append(np.asarray(obs.lat, dtype=np.float64)[p_idx])
        cols["source"].append(np.full(len(t_idx), sid, dtype=object))
        static = sensors.get_sensor(sid).is_static
        cols["time"].append(
            np.full(len(t_idx), None, dtype=object) if static else sf.times_ms[t_idx]
        )
        for name in bands:
            if name in sf.band_names:
                cols[name].append(sf.values[t_idx, p_idx, 0, sf.band_names.index(name)])
            else:
                cols[name].append(np.full(len(t_idx), np.nan, dtype=np.float32))
    arrays = []
    for field in schema:
        parts = cols[field.name]
        if field.name == "time":
            flat = [None if v is None else int(v) for part in parts for v in part]
            arrays.append(pa.array(flat, type=pa.int64()).cast(field.type))
        elif parts:
            arrays.append(pa.array(np.concatenate(parts), type=field.type))
        else:
            arrays.append(pa.array([], type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_point_table(obs: Observations, path: str | Path) -> None:
    """Write a point-set Observations as a point table (Parquet, zstd).

    Args:
        obs: a point set (point_ids, lon, lat set; each source (T, N, 1, C)).
        path: the Parquet file to write.
    """
    pq.write_table(point_table_from_observations(obs), str(path), compression="zstd")


def window_to_points(
    obs: Observations, *, sample: int | None = None, seed: int = 0
) -> Observations:
    """A window's Observations -> a point set of its pixels (all, or `sample` of them).

    Point ids are `{epsg}_{x}_{y}` of the pixel centre in zone metres (unique on the 10 m
    grid); lon/lat are the pixel centres. Frames, times and geometry are kept.
    """
    if obs.window is None:
        raise ValueError("window_to_points needs Observations over a window")
    w = obs.window
    h, wd = w.shape
    flat = np.arange(h * wd)
    if sample is not None and sample < h * wd:
        flat = np.sort(np.random.default_rng(seed).choice(h * wd, size=sample, replace=False))
    rows, cols = np.divmod(flat, wd)
    x, y = w.pixel_centers()
    px, py = x[rows, cols], y[rows, cols]
    lon, lat = utm_to_lonlat(px, py, w.epsg)
    ids = np.asarray([f"{w.epsg}_{a:.0f}_{b:.0f}" for a, b in zip(px, py, strict=True)], object)
    frames = {}
    for sid, sf in obs.sources.items():
        frames[sid] = SourceFrames(
            sid,
            sf.values[:, rows, cols][:, :, None],
            sf.valid[:, rows, cols][:, :, None],
            sf.times_ms,
            dict(sf.geometry),
            sf.band_names,
        )
    return Observations(
        sources=frames,
        point_ids=ids,
        lon=np.asarray(lon, dtype=np.float64),
        lat=np.asarray(lat, dtype=np.float64),
        errors=list(obs.errors),
    )


def observations_to_point_table(
    obs: Observations, *, sample: int | None = None, seed: int = 0
) -> pa.Table:
    """Observations over a window (or a point set) -> a point table.

    Args:
        obs: Observations over a window, or a point set.
        sample: for a window, the number of pixels to draw at random (without replacement,
            reproducibly from `seed`); None takes every pixel.
        seed: the random seed for `sample`.

    Returns:
        A pyarrow Table in the point table schema (write it with pyarrow.parquet).
    """
    if obs.window is not None:
        obs = window_to_points(obs, sample=sample, seed=seed)
    return point_table_from_observations(obs)


# ---------------------------------------------------------------------------------- locations


def read_point_locations(path: str | Path) -> pd.DataFrame:
    """Points to analyse: a GeoParquet of points (any CRS, brought to lon/lat), or a Parquet or
    CSV table with `lon` and `lat` columns (EPSG:4326).

    Returns:
        A DataFrame with float64 `lon`, `lat` and the file's other columns (geometry dropped),
        in file order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: neither point geometries nor lon/lat columns, naming the file and its columns.
    """
    import pandas as pd

    path = str(path)
    if not path.startswith(("gs://", "s3://")) and not Path(path).exists():
        raise FileNotFoundError(f"points file not found: {path}")
    if path.lower().endswith(".csv"):
        df = pd.read_csv(path)
    else:
        meta = pq.read_schema(path).metadata or {}
        if b"geo" in meta:
            import geopandas as gpd

            gdf = gpd.read_parquet(path)
            geom = gdf.geometry
            if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
                geom = geom.to_crs("EPSG:4326")
            if not (geom.geom_type == "Point").all():
                raise ValueError(
                    f"{path}: geometries must be points; found {sorted(set(geom.geom_type))}"
                )
            df = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
            df["lon"], df["lat"] = geom.x.to_numpy(), geom.y.to_numpy()
            return df.reset_index(drop=True)
        df = pq.read_table(path).to_pandas()
    missing = {"lon", "lat"} - set(df.columns)
    if missing:
        raise ValueError(
            f"{path}: no point geometry and no {sorted(missing)} column(s); columns: {list(df.columns)}"
        )
    df["lon"] = df["lon"].astype(np.float64)
    df["lat"] = df["lat"].astype(np.float64)
    if df[["lon", "lat"]].isna().any().any():
        raise ValueError(f"{path}: lon/lat have missing values")
    return df.reset_index(drop=True)
