"""Training examples: the versioned tf.train.Example layout, its builder, encoder and parsers.

One example is one patch of P x P pixels of the 10 m grid (P = 1 for a point of a point
table) over a support period of up to a year, with up to T_max frames of every registry
source, a valid period [t_s, t_e) inside the support period, its location and its targets.
Every example holds every registry source, so the feature spec is fixed for a given
(P, T_max); a source without observations is all padding.

Features (C = the source's registry bands, G = its geometry fields, T = T_max for a
time-varying source and 1 for a static one):

| name                   | stored    | shape        | parsed  | meaning                            |
|------------------------|-----------|--------------|---------|------------------------------------|
| `schema_version`       | int64     | []           | int64   | SCHEMA_VERSION                     |
| `sample_id`            | bytes     | []           | string  | unique id of the sample            |
| `patch_size`           | int64     | []           | int64   | P                                  |
| `max_frames`           | int64     | []           | int64   | T_max                              |
| `support_period`       | int64     | [2]          | int64   | [start, end) ms of the input frames|
| `valid_period`         | int64     | [2]          | int64   | [t_s, t_e) ms the embedding covers |
| `location/epsg`        | int64     | []           | int64   | UTM zone of the patch grid         |
| `location/x`, `/y`     | int64     | []           | int64   | top-left corner of the patch, m    |
| `location/lon`, `/lat` | float     | []           | float32 | patch centre (or the point), deg   |
| `location/point_id`    | bytes     | []           | string  | point id (point tables), else ''   |
| `{s}/values`           | codec     | [T, P, P, C] | float32 | model-transformed registry units   |
| `{s}/valid`            | bits      | [T, P, P]    | bool    | pixel usable (all C bands finite)  |
| `{s}/times_ms`         | int64     | [T]          | int64   | acquisition time, ms since epoch   |
| `{s}/frame_valid`      | int64 0/1 | [T]          | bool    | frame present (not padding)        |
| `{s}/band_valid`       | int64 0/1 | [T, C]       | bool    | band observed in that frame        |
| `{s}/geometry`         | float     | [T, G]       | float32 | registry geometry fields (G > 0)   |
| `target/landcover`     | int64     | [P, P]       | int64   | class id per pixel, -1 unknown     |
| `target/class_id`      | int64     | []           | int64   | the patch's class, -1 unknown      |
| `target/text`          | bytes     | []           | string  | that class's name, '' unknown      |

Values are in registry units after each band's `sensors.model_transform` (log1p of mm/day for
precipitation), float32 once parsed. A band is valid in a frame when the frame has it at all (a product
may lack a band: WorldCereal composites have no B8A); a pixel is valid where the reader
marked it valid and every valid band of its frame is finite there; a value is usable where
`valid[t, i, j] & band_valid[t, c]`, and every other value is stored as 0. Frames are sorted by time; real frames come
first and padding frames (values 0, valid 0, times_ms 0, frame_valid 0) fill up to T_max.
Only frames with at least one valid pixel are kept. Unknown geometry (NaN) is stored as 0.
A static source (cop_dem) has one frame at `sensors.STATIC_TIME_MS`.

Storage (schema 2; schema 1 stored values as float_list and masks as int64 0/1, 13.4 MB per
128 px example gzip). Parsed values are bit-identical to the float32 arrays that were built;
only the bytes on the wire change. `{s}/valid` is one bytes value, `np.packbits` of the
row-major mask (big-endian bit order). `{s}/values` is one bytes value: the C band planes, each
coded by `band_codec` (fixed by the registry, the same for every example):

- "scaled" (bands the registry stores as integers: S2, Landsat, S1): q = round((v - offset) /
  step) as int32, with step = the registry scale / K, K = 1 for a band native to the 10 m grid
  and (2 f)^2 for one f times coarser (bilinear onto the 10 m grid makes weights in multiples of
  1 / (2 f) per axis, so q is the weighted sum of source DNs). The reconstruction r =
  float32(q) * float32(step) + float32(offset) (float32 arithmetic, `Encoding.decode`'s) is the
  value itself for a native band read from integer DNs; a residual e = bits(v) - bits(r)
  (int32, modulo 2^32) makes every value exact whatever the reader did.
- "bits" (bands stored as floats: DEM, ERA5): q = the float32 bit pattern as int32; no residual.

q is predicted along the rows (x) and columns (y): `order_x` / `order_y` differences modulo
2^32 (1 / 0 for native bands, 2 / 2 for resampled ones, whose bilinear ramps second
differences flatten), zigzag-coded, and written as four byte planes (least significant
first), then the residual planes of "scaled" bands the same way; an unusable value (not valid
pixel or band) takes its predecessor's q and residual 0 and parses as 0. Byte planes of small
integers are mostly zeros, which the shards' gzip removes.

This module never imports TensorFlow (Beam workers and light tools import it):
`example_features` / `serialize_example` build and encode examples with numpy and a small
protobuf encoder, `decode_example` decodes them with numpy. The TensorFlow parser of the same
layout (`tf_feature_spec`, `parse_examples`) is in model/input_pipeline.py, which tf.data
training reads through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from schemas import sensors
from schemas.grid import PIXEL_SIZE_M, GridWindow, lonlat_to_utm, utm_epsg, utm_to_lonlat
from schemas.observations import Observations, SourceFrames

SCHEMA_VERSION = 2
# Schema versions whose parsed features are those of SCHEMA_VERSION (2 changed only how values
# and masks are stored), so a model bundle trained on either reads today's examples.
PARSED_SCHEMA_VERSIONS = (1, 2)
DEFAULT_PATCH_SIZE = 128
# 16 frames of every source keep a 128 x 128 example near 20 MB before compression.
DEFAULT_MAX_FRAMES = 16
UNKNOWN_CLASS = -1

StoredKind = Literal["float", "int64", "bytes", "codec", "bits"]


# ------------------------------------------------------------------------------- layout


@dataclasses.dataclass(frozen=True)
class FeatureLayout:
    """One feature: its name, shape, how tf.train.Example stores it and the parsed dtype."""

    name: str
    shape: tuple[int, ...]
    stored: StoredKind
    dtype: str  # numpy / TF dtype name after parsing: float32, int64, bool, bytes

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def num_frames(source: str, max_frames: int) -> int:
    """Frames a source has in an example: 1 for a static source, T_max otherwise."""
    return 1 if sensors.get_sensor(source).is_static else int(max_frames)


def feature_layout(
    *, patch_size: int, max_frames: int, sources: Sequence[str] = sensors.SOURCE_IDS
) -> dict[str, FeatureLayout]:
    """The example's features for a patch size P and T_max, derived from the registry."""
    if patch_size < 1 or max_frames < 1:
        raise ValueError(f"patch_size and max_frames must be >= 1; got {patch_size}, {max_frames}")
    p = int(patch_size)
    out: list[FeatureLayout] = [
        FeatureLayout("schema_version", (), "int64", "int64"),
        FeatureLayout("sample_id", (), "bytes", "bytes"),
        FeatureLayout("patch_size", (), "int64", "int64"),
        FeatureLayout("max_frames", (), "int64", "int64"),
        FeatureLayout("support_period", (2,), "int64", "int64"),
        FeatureLayout("valid_period", (2,), "int64", "int64"),
        FeatureLayout("location/epsg", (), "int64", "int64"),
        FeatureLayout("location/x", (), "int64", "int64"),
        FeatureLayout("location/y", (), "int64", "int64"),
        FeatureLayout("location/lon", (), "float", "float32"),
        FeatureLayout("location/lat", (), "float", "float32"),
        FeatureLayout("location/point_id", (), "bytes", "bytes"),
    ]
    for source in sources:
        sensor = sensors.get_sensor(source)
        t = num_frames(source, max_frames)
        c = len(sensor.bands)
        out += [
            FeatureLayout(f"{source}/values", (t, p, p, c), "codec", "float32"),
            FeatureLayout(f"{source}/valid", (t, p, p), "bits", "bool"),
            FeatureLayout(f"{source}/times_ms", (t,), "int64", "int64"),
            FeatureLayout(f"{source}/frame_valid", (t,), "int64", "bool"),
            FeatureLayout(f"{source}/band_valid", (t, c), "int64", "bool"),
        ]
        if sensor.geometry:
            out.append(
                FeatureLayout(f"{source}/geometry", (t, len(sensor.geometry)), "float", "float32")
            )
    out += [
        FeatureLayout("target/landcover", (p, p), "int64", "int64"),
        FeatureLayout("target/class_id", (), "int64", "int64"),
        FeatureLayout("target/text", (), "bytes", "bytes"),
    ]
    return {f.name: f for f in out}


def raw_bytes_per_example(
    *, patch_size: int, max_frames: int, sources: Sequence[str] = sensors.SOURCE_IDS
) -> int:
    """Approximate serialized size before compression (the codec's planes, packed masks)."""
    total = 0
    for f in feature_layout(patch_size=patch_size, max_frames=max_frames, sources=sources).values():
        if f.stored == "codec":
            source = f.name.split("/")[0]
            planes = sum(
                1 + (band_codec(b).mode == "scaled") for b in sensors.get_sensor(source).bands
            )
            total += 4 * planes * f.size // f.shape[-1]
        elif f.stored == "bits":
            total += (f.size + 7) // 8
        else:
            total += f.size * (4 if f.stored == "float" else 1 if f.dtype == "bool" else 8)
    return total


# ------------------------------------------------------------------------------- location


@dataclasses.dataclass(frozen=True)
class Location:
    """Where an example lies: the patch's top-left grid corner and its centre in lon/lat."""

    epsg: int
    x: int  # top-left corner of the patch in zone metres (a multiple of 10)
    y: int
    lon: float  # patch centre, or the point itself for point examples
    lat: float
    point_id: str = ""


def location_for_window(window: GridWindow) -> Location:
    """The Location of a patch window (its corner and the lon/lat of its centre)."""
    cx = window.x0 + window.width * window.pixel_size / 2.0
    cy = window.y0 - window.height * window.pixel_size / 2.0
    lon, lat = utm_to_lonlat(cx, cy, window.epsg)
    return Location(
        window.epsg, int(round(window.x0)), int(round(window.y0)), float(lon), float(lat)
    )


def location_for_point(lon: float, lat: float, point_id: str = "") -> Location:
    """The Location of a point: the 10 m pixel of its UTM zone that contains it."""
    epsg = utm_epsg(lon, lat)
    x, y = lonlat_to_utm(lon, lat, epsg)
    x0 = int(np.floor(x / PIXEL_SIZE_M) * PIXEL_SIZE_M)
    y0 = int(np.ceil(y / PIXEL_SIZE_M) * PIXEL_SIZE_M)
    return Location(epsg, x0, y0, float(lon), float(lat), str(point_id))


# ------------------------------------------------------------------------------- building


def select_frames(
    clear_fraction: np.ndarray, max_frames: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices (ascending) of at most `max_frames` frames, preferring clear ones.

    Frames with no clear pixel are never chosen. When more frames qualify, they are drawn
    without replacement with probability weights equal to their clear fraction
    (Efraimidis-Spirakis keys log(u) / w), which prefers clear frames yet keeps the draw
    spread over the period; `rng` makes the choice reproducible.
    """
    w = np.asarray(clear_fraction, dtype=np.float64)
    candidates = np.flatnonzero(w > 0)
    if len(candidates) <= max_frames:
        return candidates
    u = rng.random(len(candidates))
    keys = np.log(np.maximum(u, 1e-300)) / w[candidates]
    chosen = candidates[np.argsort(-keys, kind="stable")[:max_frames]]
    return np.sort(chosen)


def valid_masks(valid: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reader mask (T, H, W) and values (T, H, W, C) -> the example's (valid, band_valid).

    A band is present in a frame (band_valid (T, C)) when it is finite at some pixel the
    reader marked valid; a pixel is valid (T, H, W) when the reader marked it valid and every
    band present in its frame is finite there. A value is usable where both say so: a product
    without a band (WorldCereal has no B8A) keeps its other bands.
    """
    finite = np.isfinite(values)
    seen = valid[..., None] & finite
    band_valid = seen.reshape(seen.shape[0], -1, seen.shape[-1]).any(axis=1)
    ok = (
        valid
        & np.all(finite | ~band_valid[:, None, None, :], axis=-1)
        & band_valid.any(-1)[:, None, None]
    )
    return ok, band_valid


def _padding_arrays(
    source: str, lead: tuple[int, ...], t_max: int, spatial: tuple[int, int]
) -> dict[str, np.ndarray]:
    """A source's all-padding feature arrays (see the module table), with leading dims `lead`."""
    sensor = sensors.get_sensor(source)
    c, g = len(sensor.bands), len(sensor.geometry)
    out = {
        f"{source}/values": np.zeros((*lead, t_max, *spatial, c), dtype=np.float32),
        f"{source}/valid": np.zeros((*lead, t_max, *spatial), dtype=bool),
        f"{source}/times_ms": np.zeros((*lead, t_max), dtype=np.int64),
        f"{source}/frame_valid": np.zeros((*lead, t_max), dtype=bool),
        f"{source}/band_valid": np.zeros((*lead, t_max, c), dtype=bool),
    }
    if g:
        out[f"{source}/geometry"] = np.zeros((*lead, t_max, g), dtype=np.float32)
    return out


def _source_inputs(
    frames: SourceFrames | None, *, source: str, patch_size: int
) -> tuple[SourceFrames, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """What `_source_arrays` reads of one source's frames, before any frame is chosen:
    (frames in registry bands, model-transformed values (0 where a value is not usable),
    valid (T, H, W), band_valid (T, C), time order, clear fraction in time order); None
    without frames."""
    if frames is None or frames.num_frames == 0:
        return None
    if frames.spatial_shape != (patch_size, patch_size):
        raise ValueError(
            f"{source}: frames are {frames.spatial_shape} px, the patch is "
            f"{patch_size} x {patch_size}"
        )
    frames = frames.with_registry_bands()
    v = sensors.model_transform(source, frames.values)
    ok, has_band = valid_masks(frames.valid, v)
    # zeroed once here where no frame set may use a value (v is model_transform's copy), so
    # each set of frames (inference builds two) only gathers its frames
    np.copyto(v, np.float32(0.0), where=~(ok[..., None] & has_band[:, None, None, :]))
    order = np.argsort(frames.times_ms, kind="stable")
    clear = ok.reshape(ok.shape[0], -1).mean(axis=1)[order]
    return frames, v, ok, has_band, order, clear


def _source_arrays(
    prepared: tuple | None,
    *,
    source: str,
    patch_size: int,
    max_frames: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """One source's padded feature arrays (see the module table), from `_source_inputs`."""
    sensor = sensors.get_sensor(source)
    out = _padding_arrays(source, (), num_frames(source, max_frames), (patch_size, patch_size))
    values, valid = out[f"{source}/values"], out[f"{source}/valid"]
    times, frame_valid = out[f"{source}/times_ms"], out[f"{source}/frame_valid"]
    band_valid, geometry = out[f"{source}/band_valid"], out.get(f"{source}/geometry")
    t_max = len(times)
    if prepared is not None:
        frames, v, ok, has_band, order, clear = prepared
        idx = order[select_frames(clear, t_max, rng)]
        n = len(idx)
        np.take(v, idx, axis=0, out=values[:n])  # 0 where not usable (`_source_inputs`)
        valid[:n] = ok[idx]
        band_valid[:n] = has_band[idx]
        times[:n] = frames.times_ms[idx]
        frame_valid[:n] = True
        for j, name in enumerate(sensor.geometry):
            geometry[:n, j] = np.nan_to_num(frames.geometry[name][idx], nan=0.0)
    return out


def example_feature_sets(
    obs: Observations,
    *,
    t_start_ms: int,
    t_end_ms: int,
    max_frames: Sequence[int],
    location: Location,
    support_ms: tuple[int, int] | None = None,
    landcover: np.ndarray | None = None,
    class_id: int | None = None,
    class_names: Mapping[int, str] | None = None,
    sample_id: str = "",
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Observations of one patch (or one point) -> its feature arrays at each of several
    `max_frames`: element i equals `example_features(..., max_frames=max_frames[i])`, while
    the sources are transformed and masked once (inference builds 24- and 96-frame arrays
    of every chip).

    Args:
      obs: every source over a P x P window, or over one point (H = W = 1), in registry units.
      t_start_ms, t_end_ms: the valid period [t_s, t_e) the embedding summarizes.
      max_frames: the T_max of each result; at most this many frames per source are kept
        (clear ones preferred).
      location: where the patch lies (`location_for_window` / `location_for_point`).
      support_ms: [start, end) of the input frames; frames outside are dropped. Defaults to
        the valid period.
      landcover: (P, P) integer class ids, negative = unknown; None = all unknown.
      class_id: the patch's class; defaults to the land cover at the patch centre.
      class_names: class id -> name, for `target/text`.
      sample_id: stored as `sample_id`.
      seed: makes the frame selection reproducible.

    Returns:
      per T_max, name -> numpy array with the layout of `feature_layout(patch_size=P,
      max_frames=T_max)`.
    """
    if t_end_ms <= t_start_ms:
        raise ValueError(f"valid period end {t_end_ms} is not after start {t_start_ms}")
    h, w = obs.spatial_shape
    if h != w:
        raise ValueError(f"examples are square; observations are {h} x {w} px")
    p = h
    support = (int(t_start_ms), int(t_end_ms)) if support_ms is None else tuple(support_ms)
    sizes = [int(m) for m in max_frames]
    common: dict[str, np.ndarray] = {
        "schema_version": np.array(SCHEMA_VERSION, np.int64),
        "sample_id": np.array(sample_id.encode(), dtype=object),
        "patch_size": np.array(p, np.int64),
        "support_period": np.array(support, np.int64),
        "valid_period": np.array([t_start_ms, t_end_ms], np.int64),
        "location/epsg": np.array(location.epsg, np.int64),
        "location/x": np.array(location.x, np.int64),
        "location/y": np.array(location.y, np.int64),
        "location/lon": np.array(location.lon, np.float32),
        "location/lat": np.array(location.lat, np.float32),
        "location/point_id": np.array(location.point_id.encode(), dtype=object),
    }
    out = [{**common, "max_frames": np.array(m, np.int64)} for m in sizes]
    for k, source in enumerate(sensors.SOURCE_IDS):
        frames = obs.sources.get(source)
        if frames is not None:
            frames = frames.select_time(*support)
        prepared = _source_inputs(frames, source=source, patch_size=p)
        for feats, m in zip(out, sizes, strict=True):
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, k])
            feats.update(
                _source_arrays(prepared, source=source, patch_size=p, max_frames=m, rng=rng)
            )
    if landcover is None:
        lc = np.full((p, p), UNKNOWN_CLASS, np.int64)
    else:
        lc = np.asarray(landcover, dtype=np.int64).reshape(p, p)
        lc = np.where(lc < 0, UNKNOWN_CLASS, lc)
    if class_id is None:
        class_id = int(lc[p // 2, p // 2])
    text = (class_names or {}).get(int(class_id), "") if class_id >= 0 else ""
    for feats in out:
        feats["target/landcover"] = lc
        feats["target/class_id"] = np.array(class_id, np.int64)
        feats["target/text"] = np.array(text.encode(), dtype=object)
    return out


def example_features(obs: Observations, *, max_frames: int, **kwargs) -> dict[str, np.ndarray]:
    """Observations of one patch (or one point) -> the example's feature arrays with at most
    `max_frames` frames per source: `example_feature_sets` (its arguments) at one T_max."""
    return example_feature_sets(obs, max_frames=(max_frames,), **kwargs)[0]


def _chosen_ranks(n_cand: int, max_frames: int, rng_key: list[int]) -> np.ndarray:
    """Which of `n_cand` all-clear candidates `select_frames` keeps (a bool mask by rank).

    A point's frames are clear (1.0) or not (0.0), so its draw depends only on its number of
    candidates: the same generator, the first n_cand uniforms, weights 1.
    """
    if n_cand <= max_frames:
        return np.ones(n_cand, bool)
    chosen = select_frames(np.ones(n_cand), max_frames, np.random.default_rng(rng_key))
    out = np.zeros(n_cand, bool)
    out[chosen] = True
    return out


def _point_source_inputs(frames: SourceFrames | None, *, source: str, n: int) -> tuple | None:
    """What `_point_source_arrays` reads of a point set's frames of one source, before any
    frame is chosen (in time order): (frames in registry bands, order, values (T, N, C),
    band present (T, N, C), usable (T, N)); None without frames."""
    if frames is None or frames.num_frames == 0:
        return None
    if frames.spatial_shape != (n, 1):
        raise ValueError(f"{source}: frames are {frames.spatial_shape} px, not {n} points")
    frames = frames.with_registry_bands()
    order = np.argsort(frames.times_ms, kind="stable")
    v = sensors.model_transform(source, frames.values[order][:, :, 0])  # (T, N, C)
    finite = np.isfinite(v)
    has_band = frames.valid[order][:, :, 0, None] & finite  # (T, N, C): 1 px per point
    ok = np.all(finite | ~has_band, axis=-1) & has_band.any(-1)  # (T, N)
    return frames, order, v, has_band, ok


def _point_source_arrays(
    prepared: tuple | None, *, source: str, n: int, max_frames: int, rng_key: list[int]
) -> dict[str, np.ndarray]:
    """`_source_arrays` of every point of a point set at once, from `_point_source_inputs`:
    each point's arrays (leading dimension N) equal those of `_source_arrays` on that point
    alone, with the same rng."""
    sensor = sensors.get_sensor(source)
    t_max = num_frames(source, max_frames)
    out = _padding_arrays(source, (n,), t_max, (1, 1))
    values, valid = out[f"{source}/values"], out[f"{source}/valid"]
    times, frame_valid = out[f"{source}/times_ms"], out[f"{source}/frame_valid"]
    band_valid, geometry = out[f"{source}/band_valid"], out.get(f"{source}/geometry")
    if prepared is not None:
        frames, order, v, has_band, ok = prepared
        rank = np.cumsum(ok, axis=0) - 1  # a candidate's place among its point's candidates
        n_cand = ok.sum(axis=0)
        chosen = ok.copy()
        for m in np.unique(n_cand[n_cand > t_max]):
            cols = np.flatnonzero(n_cand == m)
            keep = _chosen_ranks(int(m), t_max, rng_key)
            sub = ok[:, cols]
            chosen[:, cols] = sub & keep[np.where(sub, rank[:, cols], 0)]
        pos = np.cumsum(chosen, axis=0) - 1  # output frame of a chosen frame
        t_idx, p_idx = np.nonzero(chosen)
        out_t = pos[t_idx, p_idx]
        keep_v = has_band[t_idx, p_idx]  # ok is True where chosen
        values[p_idx, out_t, 0, 0] = np.where(keep_v, v[t_idx, p_idx], 0.0)
        valid[p_idx, out_t, 0, 0] = True
        band_valid[p_idx, out_t] = keep_v
        times[p_idx, out_t] = frames.times_ms[order][t_idx]
        frame_valid[p_idx, out_t] = True
        for j, name in enumerate(sensor.geometry):
            geo = np.nan_to_num(frames.geometry[name][order], nan=0.0)
            geometry[p_idx, out_t, j] = geo[t_idx]
    return out


def point_set_feature_sets(
    obs: Observations,
    *,
    t_start_ms: int,
    t_end_ms: int,
    max_frames: Sequence[int],
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """A point set (H = N, W = 1) -> the source arrays and `valid_period` of N P = 1 examples,
    stacked (leading dimension N), all at once, at each T_max of `max_frames` (the sources
    transformed and masked once).

    Point i's arrays equal `example_features` of point i alone with the same period, T_max
    and seed (tests/schemas/test_examples_points.py), so a point's inputs never depend on
    which points share the call. Location, sample and target features are not built.
    """
    if t_end_ms <= t_start_ms:
        raise ValueError(f"valid period end {t_end_ms} is not after start {t_start_ms}")
    n, w = obs.spatial_shape
    if w != 1:
        raise ValueError(f"a point set has W = 1; got {n} x {w} px")
    period = np.tile(np.array([t_start_ms, t_end_ms], np.int64), (n, 1))
    out: list[dict[str, np.ndarray]] = [{"valid_period": period} for _ in max_frames]
    for k, source in enumerate(sensors.SOURCE_IDS):
        frames = obs.sources.get(source)
        if frames is not None:
            frames = frames.select_time(int(t_start_ms), int(t_end_ms))
        prepared = _point_source_inputs(frames, source=source, n=n)
        for feats, m in zip(out, max_frames, strict=True):
            feats.update(
                _point_source_arrays(
                    prepared,
                    source=source,
                    n=n,
                    max_frames=int(m),
                    rng_key=[int(seed) & 0xFFFFFFFF, k],
                )
            )
    return out


def point_set_features(
    obs: Observations, *, t_start_ms: int, t_end_ms: int, max_frames: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """`point_set_feature_sets` at one T_max."""
    return point_set_feature_sets(
        obs, t_start_ms=t_start_ms, t_end_ms=t_end_ms, max_frames=(max_frames,), seed=seed
    )[0]


def example_from_observations(
    obs: Observations,
    *,
    t_start_ms: int,
    t_end_ms: int,
    max_frames: int,
    location: Location,
    support_ms: tuple[int, int] | None = None,
    landcover: np.ndarray | None = None,
    class_id: int | None = None,
    class_names: Mapping[int, str] | None = None,
    sample_id: str = "",
    seed: int = 0,
) -> bytes:
    """`example_features` (same arguments) serialized as a tf.train.Example."""
    return serialize_example(
        example_features(
            obs,
            t_start_ms=t_start_ms,
            t_end_ms=t_end_ms,
            max_frames=max_frames,
            location=location,
            support_ms=support_ms,
            landcover=landcover,
            class_id=class_id,
            class_names=class_names,
            sample_id=sample_id,
            seed=seed,
        )
    )


# ------------------------------------------------------------------------------- value codec
# How `{s}/values` and `{s}/valid` are stored (module docstring, Storage). Decoding is exact
# integer arithmetic plus float32 multiply-add; model/input_pipeline.py does the same in TF.

_U32 = 0xFFFFFFFF


@dataclasses.dataclass(frozen=True)
class BandCodec:
    """How one band's values are coded: "scaled" integers plus a residual, or float bits."""

    mode: Literal["scaled", "bits"]
    step: float = 1.0  # scaled: v ~ float32(q) * float32(step) + float32(offset)
    offset: float = 0.0
    order_x: int = 1  # differences of q along x (rows) and y (columns)
    order_y: int = 0


def band_codec(band: sensors.Band) -> BandCodec:
    """The registry's codec for a band (module docstring, Storage)."""
    enc = band.encoding
    if np.dtype(enc.dtype).kind not in "iu":
        return BandCodec("bits")
    f = max(1, int(round(band.resolution_m / PIXEL_SIZE_M)))
    if f == 1:
        return BandCodec("scaled", enc.scale, enc.offset, 1, 0)
    return BandCodec("scaled", enc.scale / (2 * f) ** 2, enc.offset, 2, 2)


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """int64 values modulo 2^32, as the int32 they stand for (kept in int64)."""
    return ((np.asarray(x, np.int64) + (1 << 31)) & _U32) - (1 << 31)


def reconstruct(q: np.ndarray, codec: BandCodec) -> np.ndarray:
    """A "scaled" band's prediction r = float32(q) * float32(step) + float32(offset)."""
    r = q.astype(np.float32) * np.float32(codec.step)
    return r + np.float32(codec.offset)


def _planes(z: np.ndarray) -> bytes:
    """uint32 values -> their four byte planes, least significant first."""
    u = np.ascontiguousarray(z, dtype="<u4").reshape(-1)
    return np.ascontiguousarray(u.view(np.uint8).reshape(-1, 4).T).tobytes()


def _unplanes(data: bytes, n: int) -> np.ndarray:
    """Inverse of `_planes`: four byte planes of n values -> int64 values in [0, 2^32)."""
    b = np.frombuffer(data, np.uint8).reshape(4, n)
    return np.ascontiguousarray(b.T).view("<u4").reshape(n).astype(np.int64)


def _zigzag(d: np.ndarray) -> np.ndarray:
    return ((d << 1) ^ (d >> 63)) & _U32


def _unzigzag(z: np.ndarray) -> np.ndarray:
    return (z >> 1) ^ -(z & 1)


def _carry_forward(q: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """q with every position outside `keep` set to the last kept value before it (row-major)."""
    flat, m = q.reshape(-1), keep.reshape(-1)
    idx = np.where(m, np.arange(flat.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = flat[idx]
    out[: np.argmax(m) if m.any() else flat.size] = 0
    return out.reshape(q.shape)


def encode_values(source: str, values: np.ndarray, usable: np.ndarray) -> bytes:
    """(T, P, P, C) float32 values of a source and where they are usable -> `{s}/values` bytes."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    bits = v.view(np.int32).astype(np.int64)
    q_planes, res_planes = [], []
    for c, band in enumerate(sensors.get_sensor(source).bands):
        codec, keep = band_codec(band), usable[..., c]
        if codec.mode == "scaled":
            raw = (v[..., c].astype(np.float64) - codec.offset) / codec.step
            raw = np.where(keep & np.isfinite(raw), raw, 0.0)
            q = np.clip(np.round(raw), -(1 << 31), (1 << 31) - 1).astype(np.int64)
            r_bits = reconstruct(q, codec).view(np.int32).astype(np.int64)
            res = np.where(keep, wrap_int32(bits[..., c] - r_bits), 0)
            res_planes.append(_planes(_zigzag(res)))
        else:
            q = bits[..., c]
        d = _carry_forward(q, keep)
        for _ in range(codec.order_x):
            d = wrap_int32(np.diff(d, axis=-1, prepend=0))
        for _ in range(codec.order_y):
            d = wrap_int32(np.diff(d, axis=-2, prepend=0))
        q_planes.append(_planes(_zigzag(d)))
    return b"".join(q_planes + res_planes)


def decode_values(source: str, data: bytes, usable: np.ndarray) -> np.ndarray:
    """Inverse of `encode_values`: bytes and the (T, P, P, C) usable mask -> float32 values."""
    shape = usable.shape[:-1]
    n = int(np.prod(shape))
    bands = sensors.get_sensor(source).bands
    codecs = [band_codec(b) for b in bands]
    n_res = sum(c.mode == "scaled" for c in codecs)
    if len(data) != 4 * n * (len(bands) + n_res):
        raise ValueError(
            f"{source}/values: {len(data)} bytes; {len(bands)} bands of {shape} need "
            f"{4 * n * (len(bands) + n_res)}"
        )
    out = np.zeros((*shape, len(bands)), np.float32)
    k = len(bands)
    for c, codec in enumerate(codecs):
        d = _unzigzag(_unplanes(data[4 * n * c : 4 * n * (c + 1)], n)).reshape(shape)
        for _ in range(codec.order_y):
            d = wrap_int32(np.cumsum(d, axis=-2))
        for _ in range(codec.order_x):
            d = wrap_int32(np.cumsum(d, axis=-1))
        if codec.mode == "scaled":
            res = _unzigzag(_unplanes(data[4 * n * k : 4 * n * (k + 1)], n)).reshape(shape)
            k += 1
            d = wrap_int32(reconstruct(d, codec).view(np.int32).astype(np.int64) + res)
        out[..., c] = d.astype(np.int32).view(np.float32)
    return np.where(usable, out, np.float32(0))


def pack_mask(mask: np.ndarray) -> bytes:
    """A boolean mask -> `np.packbits` of its row-major values."""
    return np.packbits(np.asarray(mask, bool).reshape(-1)).tobytes()


def unpack_mask(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `pack_mask`."""
    n = int(np.prod(shape))
    if len(data) != (n + 7) // 8:
        raise ValueError(f"a packed mask of {shape} has {(n + 7) // 8} bytes; got {len(data)}")
    return np.unpackbits(np.frombuffer(data, np.uint8), count=n).astype(bool).reshape(shape)


def usable_mask(valid: np.ndarray, band_valid: np.ndarray) -> np.ndarray:
    """(T, P, P) pixel mask and (T, C) band mask -> (T, P, P, C) where a value is usable."""
    return np.asarray(valid, bool)[..., None] & np.asarray(band_valid, bool)[:, None, None, :]


def stored_features(features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Example arrays -> what goes on the wire: codec bytes for values, packed masks."""
    out = dict(features)
    for source in sensors.SOURCE_IDS:
        vname, mname = f"{source}/values", f"{source}/valid"
        if vname not in features:
            continue
        usable = usable_mask(features[mname], features[f"{source}/band_valid"])
        data = encode_values(source, features[vname], usable)
        out[vname] = np.array(data, dtype=object)
        out[mname] = np.array(pack_mask(features[mname]), dtype=object)
    return out


# ------------------------------------------------------------------------------- encoding
# tf.train.Example wire format: Example{1: Features{1: repeated MapEntry{1: key, 2: Feature}}},
# Feature{1: BytesList{1: repeated bytes}, 2: FloatList{1: packed float}, 3: Int64List{1:
# packed varint}}. Writing it with numpy keeps TF out of the Beam workers that build examples.


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint((field << 3) | 2) + _varint(len(payload)) + payload


def encode_varints(values: np.ndarray) -> bytes:
    """int64 values -> concatenated protobuf varints (negatives as 10-byte two's complement)."""
    v = np.ascontiguousarray(values, dtype=np.int64).ravel()
    if v.size == 0:
        return b""
    if v.min() >= 0 and v.max() < 0x80:
        return v.astype(np.uint8).tobytes()
    u = v.view(np.uint64)
    groups = np.stack([(u >> np.uint64(7 * k)) & np.uint64(0x7F) for k in range(10)], axis=1)
    nonzero = groups != 0
    length = np.where(nonzero.any(axis=1), 10 - np.argmax(nonzero[:, ::-1], axis=1), 1)
    k = np.arange(10)[None, :]
    groups = groups.astype(np.uint8) | np.where(k < (length[:, None] - 1), 0x80, 0).astype(np.uint8)
    return groups[k < length[:, None]].tobytes()


def decode_varints(data: bytes) -> np.ndarray:
    """Concatenated protobuf varints -> int64 values."""
    b = np.frombuffer(data, dtype=np.uint8)
    if b.size == 0:
        return np.zeros((0,), np.int64)
    if not (b & 0x80).any():
        return b.astype(np.int64)
    ends = np.flatnonzero((b & 0x80) == 0)
    if len(ends) == 0 or ends[-1] != len(b) - 1:
        raise ValueError("truncated varint")
    starts = np.concatenate([[0], ends[:-1] + 1])
    value_of_byte = np.repeat(np.arange(len(starts)), ends - starts + 1)
    pos = np.arange(len(b)) - starts[value_of_byte]
    shifted = (b & 0x7F).astype(np.uint64) << (np.uint64(7) * pos.astype(np.uint64))
    return np.bitwise_or.reduceat(shifted, starts).view(np.int64)


def _feature_bytes(value: np.ndarray) -> bytes:
    a = np.asarray(value)
    if a.dtype.kind in "OSU":
        items = [x if isinstance(x, bytes) else str(x).encode() for x in a.ravel().tolist()]
        return _len_field(1, b"".join(_len_field(1, x) for x in items))
    if a.dtype.kind == "f":
        return _len_field(2, _len_field(1, np.ascontiguousarray(a, dtype="<f4").tobytes()))
    if a.dtype.kind in "iub":
        return _len_field(3, _len_field(1, encode_varints(a.astype(np.int64))))
    raise TypeError(f"cannot store dtype {a.dtype} in a tf.train.Example")


def serialize_example(features: Mapping[str, np.ndarray]) -> bytes:
    """Feature arrays -> a serialized tf.train.Example: values and masks of the sources as
    `stored_features` codes them, then float -> float_list, int/bool -> int64_list, bytes/str
    -> bytes_list; arrays flattened row-major."""
    stored = stored_features(features)
    entries = []
    for name in sorted(stored):
        entry = _len_field(1, name.encode()) + _len_field(2, _feature_bytes(stored[name]))
        entries.append(_len_field(1, entry))
    return _len_field(1, b"".join(entries))


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated protobuf")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, bytes | int]]:
    """(field number, wire type, payload) of a message's top-level fields."""
    out, i = [], 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, i = _read_varint(buf, i)
            out.append((field, wire, buf[i : i + n]))
            i += n
        elif wire == 0:
            v, i = _read_varint(buf, i)
            out.append((field, wire, v))
        elif wire == 5:
            out.append((field, wire, buf[i : i + 4]))
            i += 4
        elif wire == 1:
            out.append((field, wire, buf[i : i + 8]))
            i += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def _decode_feature(buf: bytes) -> np.ndarray:
    for kind, _, payload in _fields(buf):
        items = _fields(payload)
        if kind == 1:
            return np.array([bytes(p) for _, _, p in items], dtype=object)
        if kind == 2:
            # Packed (wire type 2) and unpacked (wire type 5) floats are both little-endian f4.
            parts = [np.frombuffer(p, "<f4") for _, _, p in items]
            return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
        if kind == 3:
            parts = [
                decode_varints(p) if w == 2 else np.array([p], np.uint64).view(np.int64)
                for _, w, p in items
            ]
            return np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return np.zeros(0, np.float32)


def decode_example(data: bytes) -> dict[str, np.ndarray]:
    """A serialized example -> name -> numpy array shaped and typed as `feature_layout` says.

    Features not in the layout (P and T_max are read from the example itself) come back flat.
    Bytes features come back as Python bytes scalars (0-d object arrays).
    """
    flat: dict[str, np.ndarray] = {}
    for _, _, features in _fields(data):
        for _, _, entry in _fields(features):
            name, value = "", b""
            for f, _, payload in _fields(entry):
                if f == 1:
                    name = bytes(payload).decode()
                elif f == 2:
                    value = payload
            flat[name] = _decode_feature(value)
    try:
        p = int(flat["patch_size"][0])
        t = int(flat["max_frames"][0])
    except (KeyError, IndexError):
        raise ValueError("not an earthembed example: no patch_size / max_frames") from None
    check_schema_version(int(flat["schema_version"][0]) if "schema_version" in flat else None)
    layout = feature_layout(patch_size=p, max_frames=t)
    out = {}
    coded = []
    for name, arr in flat.items():
        spec = layout.get(name)
        if spec is None:
            out[name] = arr
            continue
        if spec.stored == "bits":
            out[name] = unpack_mask(bytes(arr[0]), spec.shape)
            continue
        if spec.stored == "codec":
            coded.append(name)
            continue
        if arr.size != spec.size:
            raise ValueError(f"{name}: {arr.size} values, layout {spec.shape} needs {spec.size}")
        if spec.dtype == "bytes":
            out[name] = arr.reshape(spec.shape) if spec.shape else np.array(arr[0], dtype=object)
        else:
            out[name] = arr.reshape(spec.shape).astype(spec.dtype)
    for name in coded:
        source = name.split("/")[0]
        usable = usable_mask(out[f"{source}/valid"], out[f"{source}/band_valid"])
        out[name] = decode_values(source, bytes(flat[name][0]), usable)
    return out


def check_schema_version(version: int | None, where: str = "example") -> None:
    """ValueError naming both versions unless `version` is SCHEMA_VERSION."""
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{where} has schema_version {version}; this code reads schema_version "
            f"{SCHEMA_VERSION} (values in source encodings since 2): rebuild the training data "
            "with `earthembed build-training-data`"
        )
