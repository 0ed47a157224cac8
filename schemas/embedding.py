"""The embedding format: quantization, overviews, quality codes, table schema, STAC dictionaries.

This module is the single home of what an embedding file holds; nothing else quantizes or
dequantizes. It does no file I/O: the writers and the one reader of these files are in
beam_jobs/io/embeddings.py, which follows the layouts described here.

Values. An embedding is a 64-d unit vector per 10 m pixel, in memory float32 (H, W, 64),
channel-last, with an all-NaN row where a pixel has no embedding.

Quantization (the public AEF formula, so our files and the official tiles read alike):

    q = clip(round(sign(v) * sqrt(|v|) * 127.5), -127, 127)      int8
    v = (q / 127.5) ** 2 * sign(q)                                float32

-128 (`NODATA`) in all 64 channels marks a pixel without an embedding. The square root spends
the 8 bits where unit vectors in 64 dimensions live (components of typical size 1/8); for
random unit vectors the round trip keeps cosine similarity above 0.9998 (mean 0.99994) and
norms within 0.01 of 1 (tests/schemas/test_embedding.py measures it).

COG (`{tile_id}.tif`): 64 int8 bands described `A00`..`A63`, nodata -128, pixel-interleaved
internal tiles (one tile read gives whole vectors), ZSTD or DEFLATE with the horizontal
predictor, north-up. Internal overviews go down to 1 x 1 as in the AEF files, and an overview
pixel is the mean of the valid 10 m vectors it covers, renormalized to unit length (never
GDAL's average of quantized integers, which is neither unit length nor the mean direction).
Dataset tags carry the quantization and overview rules and the software version, plus what
the caller adds (model version and hash, year, valid period); GDAL splits metadata keys at ':'
and '=', so tag keys use neither.

Quality sidecar (`{tile_id}_quality.tif`): uint8 bands `QUALITY_BANDS`, nodata 255:
- `obs_<source>`: per-pixel count of valid observations of each time-varying source in the
  support period, saturating at 254 (a year of Sentinel-2 from overlapping orbits stays below);
- `clear_fraction`: the fraction of acquisitions that were clear, 0-1 stored as
  round(f * 200) in 0..200 (GDAL band scale 0.005, so a reader that applies scales gets 0-1);
- `confidence`: observation support in 0-1, stored like `clear_fraction`:
      confidence = 1 - exp(-n / 12)     (`confidence`, `CONFIDENCE_N0` = 12)
  where n counts the pixel's surface observations in the period: clear Sentinel-2 and Landsat
  acquisitions (valid after the cloud mask) plus valid Sentinel-1 acquisitions (radar sees
  through cloud). Climate (ERA5) and the DEM do not count: a pixel embedded from them alone
  has confidence 0, as has a pixel without an embedding; a year whose optical scenes are all
  cloud has confidence from its radar only (0 without radar). n = 12 (a clear scene a month)
  gives 0.63, 36 gives 0.95. It measures the evidence behind an embedding, not the model's
  own uncertainty (bundles expose none per pixel).
255 marks "unknown" (outside the area embedded). `quality_layers` builds the stored array and
`decode_quality_layers` inverts it.

GeoParquet 1.1 (`{tile_id}.parquet`): one row per valid pixel; `geometry` (WKB point at the
pixel centre, tile CRS), `bbox` struct<xmin, ymin, xmax, ymax: double> (the 1.1 bbox covering;
for a point it is the point itself, as the spec asks for "the bounding box of the geometry"),
`embedding` fixed_size_list<int8>[64] (same quantization as the COG), optionally
`embedding_f32` fixed_size_list<float32>[64], `tile_id`, `row`, `col` (pixel indices in the
tile), `year`. Rows are in spatial order: 64 x 64 px blocks in Z (Morton) order, row-major
inside a block; row groups hold whole 256 x 256 px squares (65536 rows when full), so bbox
filters skip the row groups whose `bbox` statistics miss the query. Schema metadata: `geo`
(GeoParquet 1.1, CRS as PROJJSON) and `earthembed` (quantization, tile, year, geotransform).

STAC: one collection, one item per tile and period (id `{tile_id}_{year}`, or
`{tile_id}_{YYYYMMDD}_{YYYYMMDD}` for other periods) with `proj:*` (projection v2.0),
`raster:bands` (raster v1.1) and band names in `bands`, assets `embedding`, `quality` and
optionally `parquet`; start/end_datetime bound the valid period [t_s, t_e) (end exclusive).

Reader: `beam_jobs.io.embeddings.open_embeddings` opens our tiles and the official AEF tiles
(stored bottom-up) alike.

Imports: numpy and pyarrow here; pyproj and pystac inside the functions that need them, so the
contract (and the quantization) loads anywhere schemas/ does. Never rasterio or
pyarrow.parquet (tests/schemas/test_no_io.py).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from affine import Affine

from schemas import sensors

if TYPE_CHECKING:
    import pystac

EMBEDDING_DIM = 64
BAND_NAMES: tuple[str, ...] = tuple(f"A{i:02d}" for i in range(EMBEDDING_DIM))
NODATA = -128
QUANT_SCALE = 127.5
QUANT_MAX = 127

QUANTIZATION_RULE = (
    "q = clip(round(sign(v) * sqrt(|v|) * 127.5), -127, 127); "
    "v = (q / 127.5) ** 2 * sign(q); -128 in all bands = no embedding"
)
OVERVIEW_RULE = "mean of the valid 10 m vectors covered, renormalized to unit length"

# Quality sidecar: one observation count per time-varying source, then two scaled fractions.
OBS_SOURCES: tuple[str, ...] = tuple(
    s for s in sensors.SOURCE_IDS if not sensors.get_sensor(s).is_static
)
QUALITY_BANDS: tuple[str, ...] = (
    *(f"obs_{s}" for s in OBS_SOURCES),
    "clear_fraction",
    "confidence",
)
QUALITY_DTYPE = "uint8"
QUALITY_NODATA = 255
QUALITY_COUNT_MAX = 254
QUALITY_FRACTION_SCALE = 200  # stored = round(fraction * 200); physical = stored * 0.005
# Confidence = 1 - exp(-surface observations / CONFIDENCE_N0) (module docstring).
CONFIDENCE_N0 = 12.0
CONFIDENCE_RULE = (
    f"1 - exp(-n / {CONFIDENCE_N0:g}), n = clear optical (Sentinel-2, Landsat) + valid radar "
    "(Sentinel-1) observations in the period; 0 without an embedding or with only climate/DEM"
)

COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
STAC_EXTENSIONS = (
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
)

# GeoParquet spatial order: pixels are grouped in square blocks of this many pixels a side.
PARQUET_BLOCK = 64
PARQUET_ROW_GROUP = 256 * 256

# ---------------------------------------------------------------------------------- values


def _check_channels(a: np.ndarray, what: str) -> None:
    if a.ndim < 1 or a.shape[-1] != EMBEDDING_DIM:
        raise ValueError(f"{what} needs a last axis of {EMBEDDING_DIM}; got shape {a.shape}")


def quantize(v: np.ndarray) -> np.ndarray:
    """Unit-vector embeddings -> int8 with the public AEF quantization.

    Computed in float64 whatever the input precision (float32 inputs are exact in float64), a
    chunk of pixels at a time, so codes do not depend on the caller's dtype or array size.

    Args:
        v: float array (..., 64).

    Returns:
        int8 array (..., 64): clip(round(sign(v) * sqrt(|v|) * 127.5), -127, 127); a pixel with
        any non-finite component is `NODATA` (-128) in all 64 channels.
    """
    v = np.asarray(v)
    _check_channels(v, "quantize")
    flat = v.reshape(-1, EMBEDDING_DIM)
    out = np.empty(flat.shape, np.int8)
    for a in range(0, len(flat), _QUANT_CHUNK):
        out[a : a + _QUANT_CHUNK] = _quantize_rows(flat[a : a + _QUANT_CHUNK])
    return out.reshape(v.shape)


_QUANT_CHUNK = 1 << 16  # pixels per chunk: 32 MiB of float64 scratch


def _quantize_rows(v: np.ndarray) -> np.ndarray:
    x = v.astype(np.float64)
    bad = ~np.isfinite(x).all(axis=-1)
    # round() and the clip are symmetric, so the magnitude is coded first and the sign after:
    # the same codes as round(sign(v) * sqrt(|v|) * 127.5), in fewer passes over the data.
    m = np.abs(x)
    np.sqrt(m, out=m)
    m *= QUANT_SCALE
    np.round(m, out=m)
    np.minimum(m, QUANT_MAX, out=m)
    if bad.any():
        m[bad] = 0
    out = m.astype(np.int8)
    np.negative(out, out=out, where=x < 0)
    out[bad] = NODATA
    return out


# Dequantization table indexed by the int8 code's bit pattern (q.view(uint8)).
_CODES = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.float64)
_DEQUANT = ((_CODES / QUANT_SCALE) ** 2 * np.sign(_CODES)).astype(np.float32)


def dequantize(q: np.ndarray) -> np.ndarray:
    """int8 codes -> float32 embeddings, the inverse of `quantize`.

    Args:
        q: int8 array (..., 64), channel-last.

    Returns:
        float32 array (..., 64): (q / 127.5) ** 2 * sign(q); pixels that are `NODATA` in all 64
        channels are NaN rows.
    """
    q = np.asarray(q)
    _check_channels(q, "dequantize")
    if q.dtype != np.int8:
        raise ValueError(f"dequantize needs int8 codes; got {q.dtype}")
    out = _DEQUANT[q.view(np.uint8)]
    out[(q == NODATA).all(axis=-1)] = np.nan
    return out


def valid_mask(emb: np.ndarray) -> np.ndarray:
    """(..., 64) float embeddings -> bool (...): True where all 64 components are finite."""
    emb = np.asarray(emb)
    _check_channels(emb, "valid_mask")
    return np.isfinite(emb).all(axis=-1)


# ---------------------------------------------------------------------------------- overviews


def _sum_2x2(
    sums: np.ndarray, counts: np.ndarray, strip: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Sums and counts over 2x2 blocks (ceil for odd sizes); pixels with count 0 add nothing."""
    h, w, c = sums.shape
    oh, ow = -(-h // 2), -(-w // 2)
    out = np.zeros((oh, ow, c), np.float32)
    out_n = np.zeros((oh, ow), np.int64)
    for r0 in range(0, h, strip):
        s = sums[r0 : r0 + strip]
        n = counts[r0 : r0 + strip]
        s = np.where((n > 0)[..., None], s, np.float32(0)).astype(np.float32, copy=False)
        n = n.astype(np.int64, copy=False)
        ph, pw = s.shape[0] % 2, s.shape[1] % 2
        if ph or pw:
            s = np.pad(s, ((0, ph), (0, pw), (0, 0)))
            n = np.pad(n, ((0, ph), (0, pw)))
        sh, sw = s.shape[0] // 2, s.shape[1] // 2
        o0 = r0 // 2
        out[o0 : o0 + sh] = s.reshape(sh, 2, sw, 2, c).sum(axis=(1, 3), dtype=np.float32)
        out_n[o0 : o0 + sh] = n.reshape(sh, 2, sw, 2).sum(axis=(1, 3))
    return out, out_n


def renormalized_overviews(
    emb: np.ndarray, valid: np.ndarray, *, min_size: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Successive 2x downsamplings of an embedding field, as unit vectors.

    Level k has ceil(H / 2^k) x ceil(W / 2^k) pixels; a pixel is the mean of the valid full-
    resolution vectors in its 2^k x 2^k block, renormalized to unit length (at level 1: the
    renormalized mean of the valid pixels of a 2x2 block). Means are taken over the 10 m
    vectors, not over the previous level's unit vectors, so a half-empty block weighs its
    pixels like a full one. A block with no valid pixel, or whose vectors cancel (mean norm
    below 1e-6), is invalid. Levels continue until the larger side is <= `min_size` (1: down to
    a single pixel, as the AEF files; a COG blocksize: as GDAL's automatic overviews).

    Args:
        emb: float (H, W, 64) unit vectors; invalid pixels may hold anything (NaN rows).
        valid: bool (H, W).
        min_size: stop at the first level whose larger side is <= this.

    Returns:
        [(emb_k float32 (h, w, 64) with NaN rows where invalid, valid_k bool (h, w)), ...] for
        k = 1, 2, ...; empty when max(H, W) <= min_size already.
    """
    emb = np.asarray(emb)
    valid = np.asarray(valid, dtype=bool)
    if emb.ndim != 3 or emb.shape[-1] != EMBEDDING_DIM or valid.shape != emb.shape[:2]:
        raise ValueError(
            f"renormalized_overviews needs emb (H, W, {EMBEDDING_DIM}) and valid (H, W); "
            f"got {emb.shape} and {valid.shape}"
        )
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1; got {min_size}")
    levels = []
    sums, counts = emb, valid
    for _ in overview_shapes(valid.shape, min_size)[1:]:
        sums, counts, unit, ok = overview_step(sums, counts)
        levels.append((unit, ok))
    return levels


def overview_shapes(shape: tuple[int, int], min_size: int = 1) -> list[tuple[int, int]]:
    """(h, w) of level 0 (`shape`) and of each level `renormalized_overviews` makes."""
    h, w = shape
    out = [(h, w)]
    while max(h, w) > min_size:
        h, w = -(-h // 2), -(-w // 2)
        out.append((h, w))
    return out


def overview_step(
    sums: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One level of `renormalized_overviews`: the previous level's vector sums and valid
    counts (level 0: the embeddings and their valid mask) -> this level's sums, counts, unit
    vectors (NaN rows where invalid) and valid mask.

    A pixel of level k depends only on the 2^k x 2^k block of level 0 it covers, so blocks
    of level 0 aligned to 2^k give exactly their part of the whole field's level k.
    """
    sums, counts = _sum_2x2(sums, counts)
    norm = np.linalg.norm(sums, axis=-1)
    ok = (counts > 0) & (norm > 1e-6 * np.maximum(counts, 1))
    unit = np.full(sums.shape, np.nan, np.float32)
    unit[ok] = sums[ok] / norm[ok][:, None]
    return sums, counts, unit, ok


# ---------------------------------------------------------------------------------- quality


def _scaled_fraction(f: np.ndarray, what: str) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    finite = np.isfinite(f)
    if np.any((f[finite] < -1e-9) | (f[finite] > 1 + 1e-9)):
        raise ValueError(f"{what} must lie in [0, 1] (NaN = unknown)")
    out = np.full(f.shape, QUALITY_NODATA, np.uint8)
    out[finite] = np.clip(np.round(f[finite] * QUALITY_FRACTION_SCALE), 0, QUALITY_FRACTION_SCALE)
    return out


def quality_layers(
    obs_counts: Mapping[str, np.ndarray], clear_fraction: np.ndarray, confidence: np.ndarray
) -> np.ndarray:
    """The stored quality sidecar array from per-pixel counts and fractions.

    Args:
        obs_counts: source id -> (H, W) count of valid observations; ids from `OBS_SOURCES`
            (a source left out counts 0 everywhere). Counts saturate at 254; NaN = unknown.
        clear_fraction: (H, W) fraction of clear acquisitions in [0, 1], NaN = unknown.
        confidence: (H, W) confidence score in [0, 1], NaN = unknown.

    Returns:
        uint8 (Q, H, W) in the order of `QUALITY_BANDS`; fractions as round(f * 200); 255 where
        unknown.
    """
    unknown = sorted(set(obs_counts) - set(OBS_SOURCES))
    if unknown:
        raise ValueError(f"unknown or static sources {unknown}; counts are kept for {OBS_SOURCES}")
    shape = np.shape(clear_fraction)
    if len(shape) != 2 or np.shape(confidence) != shape:
        raise ValueError(
            f"clear_fraction and confidence must be (H, W) alike; got {shape} and "
            f"{np.shape(confidence)}"
        )
    out = np.empty((len(QUALITY_BANDS), *shape), np.uint8)
    for i, source in enumerate(OBS_SOURCES):
        c = np.asarray(obs_counts.get(source, np.zeros(shape)), dtype=np.float64)
        if c.shape != shape:
            raise ValueError(f"counts of {source} have shape {c.shape}; expected {shape}")
        finite = np.isfinite(c)
        if np.any(c[finite] < 0):
            raise ValueError(f"negative observation counts for {source}")
        out[i] = QUALITY_NODATA
        out[i][finite] = np.minimum(np.round(c[finite]), QUALITY_COUNT_MAX)
    out[-2] = _scaled_fraction(clear_fraction, "clear_fraction")
    out[-1] = _scaled_fraction(confidence, "confidence")
    return out


def decode_quality_layers(stored: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 (Q, H, W) as written by `quality_layers` -> band name -> float32 (H, W), NaN unknown.

    Counts come back as counts, `clear_fraction` and `confidence` in [0, 1].
    """
    stored = np.asarray(stored)
    if stored.ndim != 3 or stored.shape[0] != len(QUALITY_BANDS):
        raise ValueError(f"expected ({len(QUALITY_BANDS)}, H, W); got {stored.shape}")
    out = {}
    for i, name in enumerate(QUALITY_BANDS):
        v = stored[i].astype(np.float32)
        if not name.startswith("obs_"):
            v /= QUALITY_FRACTION_SCALE
        v[stored[i] == QUALITY_NODATA] = np.nan
        out[name] = v
    return out


def confidence(n_surface: np.ndarray, embedded: np.ndarray | None = None) -> np.ndarray:
    """The quality sidecar's confidence: 1 - exp(-n_surface / CONFIDENCE_N0), 0 where
    `embedded` (bool, same shape) is False.

    Args:
        n_surface: per-pixel count of clear optical plus valid radar observations
            (`sensors.SURFACE_SOURCES`) in the period.
        embedded: pixels that got an embedding (None: all).

    Returns:
        float64 array in [0, 1).
    """
    n = np.asarray(n_surface, dtype=np.float64)
    if np.any(n < 0):
        raise ValueError("confidence needs non-negative observation counts")
    out = 1.0 - np.exp(-n / CONFIDENCE_N0)
    if embedded is not None:
        out = np.where(embedded, out, 0.0)
    return out


# ---------------------------------------------------------------------------------- GeoParquet


def _part1by1(v: np.ndarray) -> np.ndarray:
    """Spread the low 32 bits of v over the even bit positions (Morton interleave)."""
    v = v.astype(np.uint64) & np.uint64(0xFFFFFFFF)
    for shift, mask in (
        (16, 0x0000FFFF0000FFFF),
        (8, 0x00FF00FF00FF00FF),
        (4, 0x0F0F0F0F0F0F0F0F),
        (2, 0x3333333333333333),
        (1, 0x5555555555555555),
    ):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def _spatial_order(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Permutation putting pixels in Z order of 64 px blocks, row-major inside a block."""
    b = PARQUET_BLOCK
    block = _part1by1(cols // b) | (_part1by1(rows // b) << np.uint64(1))
    inner = (rows % b).astype(np.uint64) * np.uint64(b) + (cols % b).astype(np.uint64)
    return np.argsort(block * np.uint64(b * b) + inner, kind="stable")


def _wkb_points(x: np.ndarray, y: np.ndarray) -> pa.Array:
    """Little-endian 2D WKB points (21 bytes each) as a binary array, without a geometry lib."""
    n = len(x)
    rec = np.empty(n, np.dtype([("order", "u1"), ("type", "<u4"), ("x", "<f8"), ("y", "<f8")]))
    rec["order"] = 1
    rec["type"] = 1
    rec["x"] = x
    rec["y"] = y
    size = rec.dtype.itemsize
    large = size * n > np.iinfo(np.int32).max
    offsets = np.arange(n + 1, dtype=np.int64 if large else np.int32) * size
    return pa.Array.from_buffers(
        pa.large_binary() if large else pa.binary(),
        n,
        [None, pa.py_buffer(offsets), pa.py_buffer(rec.tobytes())],
    )


def _fixed_list(values: np.ndarray) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, EMBEDDING_DIM)


def geo_metadata(epsg: int, bbox: Sequence[float] | None) -> dict[str, Any]:
    """The GeoParquet 1.1 `geo` metadata of an embedding table.

    Args:
        epsg: EPSG code of the point coordinates (the tile's UTM zone).
        bbox: [xmin, ymin, xmax, ymax] of all points in that CRS, or None (empty table).

    Returns:
        The dict to store as JSON under the `geo` key of the Parquet schema metadata.
    """
    import pyproj

    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": ["Point"],
        "crs": pyproj.CRS.from_epsg(int(epsg)).to_json_dict(),
        "edges": "planar",
        "covering": {
            "bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")},
        },
    }
    if bbox is not None:
        column["bbox"] = [float(v) for v in bbox]
    return {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}


def embedding_table(
    q: np.ndarray,
    *,
    transform: Affine,
    epsg: int,
    tile_id: str,
    year: int,
    float_embeddings: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    origin: tuple[int, int] = (0, 0),
    shape: tuple[int, int] | None = None,
) -> pa.Table:
    """One row per valid pixel of a tile, in spatial order, with GeoParquet metadata attached.

    Args:
        q: int8 (H, W, 64) quantized embeddings (`quantize`).
        transform: the tile's affine geotransform (pixel centres are written).
        epsg: EPSG code of the tile CRS.
        tile_id: the tile id written in every row.
        year: the year written in every row.
        float_embeddings: optional float (H, W, 64); adds an `embedding_f32` column.
        valid: optional bool (H, W) selecting pixels (e.g. a sample); pixels that are NODATA
            are never written.
        origin: (row, col) of q's first pixel in the tile, when q is a window of it that
            holds all its valid pixels (the table is the whole tile's: the same rows).
        shape: (rows, cols) of the whole tile (default: q's).

    Returns:
        A pyarrow Table (columns geometry, bbox, embedding[, embedding_f32], tile_id, row, col,
        year) whose schema metadata holds `geo` and `earthembed`.
    """
    q = np.asarray(q)
    if q.ndim != 3 or q.shape[-1] != EMBEDDING_DIM or q.dtype != np.int8:
        raise ValueError(
            f"embedding_table needs int8 (H, W, {EMBEDDING_DIM}); got {q.dtype} {q.shape}"
        )
    keep = ~(q == NODATA).all(axis=-1)
    if valid is not None:
        if np.shape(valid) != keep.shape:
            raise ValueError(f"valid has shape {np.shape(valid)}; expected {keep.shape}")
        keep &= np.asarray(valid, dtype=bool)
    rows, cols = np.nonzero(keep)
    order = _spatial_order(rows + origin[0], cols + origin[1])
    rows, cols = rows[order], cols[order]
    t = transform
    cx, cy = cols + origin[1] + 0.5, rows + origin[0] + 0.5
    x = t.c + cx * t.a + cy * t.b
    y = t.f + cx * t.d + cy * t.e
    n = len(rows)
    columns: dict[str, pa.Array] = {
        "geometry": _wkb_points(x, y),
        "bbox": pa.StructArray.from_arrays(
            [pa.array(x), pa.array(y), pa.array(x), pa.array(y)],
            names=["xmin", "ymin", "xmax", "ymax"],
        ),
        "embedding": _fixed_list(q[rows, cols]),
    }
    if float_embeddings is not None:
        f = np.asarray(float_embeddings, dtype=np.float32)
        if f.shape != q.shape:
            raise ValueError(f"float_embeddings has shape {f.shape}; expected {q.shape}")
        columns["embedding_f32"] = _fixed_list(f[rows, cols])
    rows, cols = rows + origin[0], cols + origin[1]
    columns["tile_id"] = pa.repeat(pa.scalar(tile_id, pa.string()), n)
    columns["row"] = pa.array(rows.astype(np.int32))
    columns["col"] = pa.array(cols.astype(np.int32))
    columns["year"] = pa.repeat(pa.scalar(int(year), pa.int16()), n)
    table = pa.table(columns)
    bbox = [x.min(), y.min(), x.max(), y.max()] if n else None
    info = {
        "quantization": QUANTIZATION_RULE,
        "tile_id": tile_id,
        "year": int(year),
        "epsg": int(epsg),
        "transform": list(transform)[:6],
        "shape": list(shape or q.shape[:2]),
    }
    return table.replace_schema_metadata(
        {"geo": json.dumps(geo_metadata(epsg, bbox)), "earthembed": json.dumps(info)}
    )


# ---------------------------------------------------------------------------------- STAC


def _period(period: tuple[dt.datetime, dt.datetime] | int) -> tuple[dt.datetime, dt.datetime]:
    if isinstance(period, int):
        return dt.datetime(period, 1, 1, tzinfo=dt.UTC), dt.datetime(
            period + 1, 1, 1, tzinfo=dt.UTC
        )
    start, end = period
    start = start if start.tzinfo else start.replace(tzinfo=dt.UTC)
    end = end if end.tzinfo else end.replace(tzinfo=dt.UTC)
    if end <= start:
        raise ValueError(f"empty period: {start.isoformat()} .. {end.isoformat()}")
    return start, end


def item_id(tile_id: str, period: tuple[dt.datetime, dt.datetime] | int) -> str:
    """STAC item id of a tile's embeddings for a period: `{tile_id}_{year}` for a year."""
    if isinstance(period, int):
        return f"{tile_id}_{period}"
    start, end = _period(period)
    return f"{tile_id}_{start:%Y%m%d}_{end:%Y%m%d}"


def stac_collection(
    collection_id: str,
    *,
    description: str,
    extent_bbox: Sequence[float],
    period: tuple[dt.datetime, dt.datetime] | int,
    model_version: str,
    license: str = "CC-BY-4.0",
    title: str | None = None,
) -> pystac.Collection:
    """The STAC collection of an embedding run.

    Args:
        collection_id: the collection id.
        description: free text.
        extent_bbox: lon/lat [minx, miny, maxx, maxy] of all items.
        period: (start, end) of the valid periods covered, or a year.
        model_version: the model version that produced the embeddings.
        license: SPDX license id of the outputs.
        title: optional title.

    Returns:
        A pystac Collection (add items with `collection.add_item`).
    """
    import pystac

    start, end = _period(period)
    return pystac.Collection(
        id=collection_id,
        description=description,
        title=title,
        license=license,
        extent=pystac.Extent(
            pystac.SpatialExtent([[float(v) for v in extent_bbox]]),
            pystac.TemporalExtent([[start, end]]),
        ),
        keywords=["embeddings", "AlphaEarth", "earthembed"],
        stac_extensions=list(STAC_EXTENSIONS),
        summaries=pystac.Summaries(
            {
                "earthembed:model_version": [model_version],
                "earthembed:embedding_dim": [EMBEDDING_DIM],
                "gsd": [10.0],
            }
        ),
        extra_fields={"earthembed:quantization": QUANTIZATION_RULE},
    )


def _footprint_lonlat(
    epsg: int, transform: Affine, shape: tuple[int, int], per_edge: int = 16
) -> list[list[float]]:
    """Counter-clockwise lon/lat ring of a raster's outline, densified along each edge."""
    import pyproj

    h, w = shape
    t = np.linspace(0.0, 1.0, per_edge, endpoint=False)
    # Pixel (col, row) corners: top-left -> bottom-left -> bottom-right -> top-right.
    cols = np.concatenate([np.zeros_like(t), t * w, np.full_like(t, w), (1 - t) * w])
    rows = np.concatenate([t * h, np.full_like(t, h), (1 - t) * h, np.zeros_like(t)])
    x = transform.c + cols * transform.a + rows * transform.b
    y = transform.f + cols * transform.d + rows * transform.e
    to_ll = pyproj.Transformer.from_crs(int(epsg), 4326, always_xy=True)
    lon, lat = to_ll.transform(x, y)
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    if transform.e > 0:  # bottom-up: the same walk goes clockwise
        ring.reverse()
    return [*ring, ring[0]]


def _raster_bands(n: int, dtype: str, nodata: int, res: float, **extra: Any) -> list[dict]:
    return [{"data_type": dtype, "nodata": nodata, "spatial_resolution": res, **extra}] * n


def stac_item(
    tile_id: str,
    *,
    cog_href: str,
    quality_href: str,
    parquet_href: str | None,
    epsg: int,
    transform: Affine,
    shape: tuple[int, int],
    period: tuple[dt.datetime, dt.datetime] | int,
    model_version: str,
    model_sha256: str,
) -> pystac.Item:
    """The STAC item of one tile's embeddings for one period.

    Args:
        tile_id: grid tile id `{epsg}_{col}_{row}`.
        cog_href: the embedding COG.
        quality_href: the quality sidecar COG.
        parquet_href: the GeoParquet table, or None.
        epsg: EPSG code of the tile CRS.
        transform: the tile's affine geotransform.
        shape: (H, W) in pixels.
        period: (start, end) of the valid period [t_s, t_e), or a calendar year.
        model_version: model version.
        model_sha256: content hash of the model bundle.

    Returns:
        A pystac Item with geometry and bbox in EPSG:4326, start/end_datetime, `proj:*` and the
        assets `embedding`, `quality` (and `parquet`).
    """
    import pystac

    start, end = _period(period)
    ring = _footprint_lonlat(epsg, transform, shape)
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    h, w = (int(v) for v in shape)
    xs = [transform.c, transform.c + w * transform.a]
    ys = [transform.f, transform.f + h * transform.e]
    props: dict[str, Any] = {
        "proj:code": f"EPSG:{int(epsg)}",
        "proj:shape": [h, w],
        "proj:transform": [float(v) for v in list(transform)[:6]],
        "proj:bbox": [min(xs), min(ys), max(xs), max(ys)],
        "gsd": abs(float(transform.a)),
        "earthembed:tile_id": tile_id,
        "earthembed:model_version": model_version,
        "earthembed:model_sha256": model_sha256,
    }
    if isinstance(period, int):
        props["earthembed:year"] = period
    item = pystac.Item(
        id=item_id(tile_id, period),
        geometry={"type": "Polygon", "coordinates": [ring]},
        bbox=[min(lons), min(lats), max(lons), max(lats)],
        datetime=None,
        start_datetime=start,
        end_datetime=end,
        properties=props,
        stac_extensions=list(STAC_EXTENSIONS),
    )
    res = abs(float(transform.a))
    item.add_asset(
        "embedding",
        pystac.Asset(
            href=cog_href,
            media_type=COG_MEDIA_TYPE,
            title="Embedding field (int8, 64 bands)",
            description=f"Unit-vector embeddings quantized as {QUANTIZATION_RULE}",
            roles=["data"],
            extra_fields={
                "bands": [{"name": n} for n in BAND_NAMES],
                "raster:bands": _raster_bands(EMBEDDING_DIM, "int8", NODATA, res),
            },
        ),
    )
    quality_bands = []
    for name in QUALITY_BANDS:
        band = {"data_type": QUALITY_DTYPE, "nodata": QUALITY_NODATA, "spatial_resolution": res}
        if name.startswith("obs_"):
            band["unit"] = "count"
        else:
            band["scale"] = 1.0 / QUALITY_FRACTION_SCALE
            band["offset"] = 0.0
        quality_bands.append(band)
    item.add_asset(
        "quality",
        pystac.Asset(
            href=quality_href,
            media_type=COG_MEDIA_TYPE,
            title="Per-pixel quality",
            description="Observation counts per source, clear fraction and confidence",
            roles=["metadata", "quality"],
            extra_fields={
                "bands": [{"name": n} for n in QUALITY_BANDS],
                "raster:bands": quality_bands,
            },
        ),
    )
    if parquet_href is not None:
        item.add_asset(
            "parquet",
            pystac.Asset(
                href=parquet_href,
                media_type=PARQUET_MEDIA_TYPE,
                title="Embeddings per pixel (GeoParquet 1.1)",
                roles=["data"],
            ),
        )
    return item
