"""Parsed training examples (or the same arrays built at inference) -> the model's inputs.

One function serves training and inference, so both normalize alike: the model sees

| key               | shape            | meaning                                                  |
|-------------------|------------------|----------------------------------------------------------|
| `{s}/x`           | (B, T, P, P, C)  | (value - mean) / max(std, floor); 0 where not usable     |
| `{s}/mask`        | (B, T, P, P)     | 1 where the pixel of that frame is valid                 |
| `{s}/band_mask`   | (B, T, C)        | 1 where the frame has the band                           |
| `{s}/t`           | (B, T)           | days from the valid period's start (0 for static layers) |
| `{s}/geometry`    | (B, T, G)        | the registry's geometry fields (only when G > 0)         |
| `period_days`     | (B,)             | length of the valid period in days                       |

for every registry source `s`, with T = `max_frames` (1 for static sources): examples with
more frames keep an evenly spread subset, fewer are padded. Values come in the
`schemas.examples` layout (model-transformed registry units); `stats` is the
`stats.json` of build-training-data ({source: {band: {mean, std, count}}}).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from schemas import examples, sensors

DAY_MS = 86_400_000.0
DEFAULT_STD_FLOOR = 1e-3

# Feature names of a parsed example that the model reads.
EXAMPLE_KEYS = ("valid_period",)


def example_keys() -> tuple[str, ...]:
    """Names of the `schemas.examples` features `to_model_inputs` needs."""
    keys = list(EXAMPLE_KEYS)
    for s in sensors.SOURCE_IDS:
        keys += [f"{s}/values", f"{s}/valid", f"{s}/times_ms", f"{s}/frame_valid"]
        keys += [f"{s}/band_valid"]
        if sensors.get_sensor(s).geometry:
            keys.append(f"{s}/geometry")
    return tuple(keys)


def normalizer(
    stats: Mapping, *, std_floor: float = DEFAULT_STD_FLOOR
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """stats.json -> {source: (mean (C,), std (C,))} in registry band order.

    A band the stats lack (a source the data set never had) gets mean 0 and std 1; a std
    below `std_floor` (a constant band) is raised to it so it cannot blow up.
    """
    out = {}
    for s in sensors.SOURCE_IDS:
        sensor = sensors.get_sensor(s)
        src = stats.get(s, {}) if isinstance(stats.get(s, {}), Mapping) else {}
        mean = np.array([float(src.get(b, {}).get("mean", 0.0)) for b in sensor.band_names])
        std = np.array([float(src.get(b, {}).get("std", 1.0)) for b in sensor.band_names])
        std = np.where(np.isfinite(std), np.maximum(std, std_floor), 1.0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        out[s] = (mean.astype(np.float32), std.astype(np.float32))
    return out


def pool_stats(all_stats: list[Mapping]) -> dict:
    """Pooled per-band mean/std of several stats.json (weighted by their counts)."""
    if len(all_stats) == 1:
        return dict(all_stats[0])
    pooled: dict = {}
    for s in sensors.SOURCE_IDS:
        for b in sensors.get_sensor(s).band_names:
            parts = [
                st[s][b]
                for st in all_stats
                if isinstance(st.get(s), Mapping) and b in st[s] and st[s][b].get("count", 0) > 0
            ]
            if not parts:
                continue
            n = np.array([p["count"] for p in parts], np.float64)
            m = np.array([p["mean"] for p in parts], np.float64)
            v = np.array([p["std"] for p in parts], np.float64) ** 2
            total = n.sum()
            mean = float((n * m).sum() / total)
            var = float((n * (v + (m - mean) ** 2)).sum() / total)
            pooled.setdefault(s, {})[b] = {"mean": mean, "std": var**0.5, "count": int(total)}
    return pooled


def _frame_subset(n_frames: int, frame_valid: np.ndarray, keep: int) -> np.ndarray:
    """(B, keep) indices: each row's valid frames first, evenly spread when there are more."""
    b = frame_valid.shape[0]
    idx = np.zeros((b, keep), np.int64)
    for i in range(b):
        valid = np.flatnonzero(frame_valid[i])
        if len(valid) > keep:
            valid = valid[np.round(np.linspace(0, len(valid) - 1, keep)).astype(int)]
        rest = np.setdiff1d(np.arange(n_frames), valid)[: keep - len(valid)]
        idx[i] = np.concatenate([valid, rest])
    return idx


def to_model_inputs(
    feats: Mapping[str, np.ndarray],
    norm: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    max_frames: int,
    pad: bool = True,
) -> dict[str, np.ndarray]:
    """Batched example features (leading B) -> the model's input arrays (module docstring).

    `pad` False keeps a source with fewer than `max_frames` frames at its own count (no
    padding frames appended; `trim_padding_frames` made it shorter)."""
    period = np.asarray(feats["valid_period"], np.int64).reshape(-1, 2)
    t0 = period[:, 0]
    out: dict[str, np.ndarray] = {
        "period_days": ((period[:, 1] - t0) / DAY_MS).astype(np.float32),
    }
    for s in sensors.SOURCE_IDS:
        sensor = sensors.get_sensor(s)
        values = np.asarray(feats[f"{s}/values"], np.float32)
        valid = np.asarray(feats[f"{s}/valid"], bool)
        frame_valid = np.asarray(feats[f"{s}/frame_valid"], bool)
        band_valid = np.asarray(feats[f"{s}/band_valid"], bool)
        times = np.asarray(feats[f"{s}/times_ms"], np.int64)
        geometry = feats.get(f"{s}/geometry")
        n = values.shape[1]
        t_keep = 1 if sensor.is_static else (max_frames if pad else min(n, max_frames))
        if n != t_keep:
            if n > t_keep:
                idx = _frame_subset(n, frame_valid, t_keep)
            else:
                idx = np.concatenate(
                    [
                        np.tile(np.arange(n), (len(values), 1)),
                        np.full((len(values), t_keep - n), -1),
                    ],
                    axis=1,
                )
            gap = idx < 0
            idx = np.where(gap, 0, idx)

            def take(a, idx=idx, gap=gap):
                g = np.take_along_axis(a, idx.reshape(idx.shape + (1,) * (a.ndim - 2)), axis=1)
                return np.where(gap.reshape(gap.shape + (1,) * (a.ndim - 2)), 0, g)

            values, valid, frame_valid = take(values), take(valid), take(frame_valid)
            band_valid, times = take(band_valid), take(times)
            geometry = None if geometry is None else take(np.asarray(geometry))
        mean, std = norm[s]
        usable = (
            valid[..., None] & band_valid[:, :, None, None, :] & frame_valid[..., None, None, None]
        )
        x = np.where(usable, (values - mean) / std, 0.0).astype(np.float32)
        if sensor.is_static:
            t = np.zeros(times.shape, np.float32)
        else:
            t = ((times - t0[:, None]) / DAY_MS).astype(np.float32)
            t = np.where(frame_valid, t, 0.0).astype(np.float32)
        out[f"{s}/x"] = x
        out[f"{s}/mask"] = (valid & frame_valid[..., None, None]).astype(np.float32)
        out[f"{s}/band_mask"] = (band_valid & frame_valid[..., None]).astype(np.float32)
        out[f"{s}/t"] = t
        if sensor.geometry:
            out[f"{s}/geometry"] = np.nan_to_num(np.asarray(geometry, np.float32))
    return out


def quantile_summary(inputs: Mapping[str, np.ndarray], quantiles: Sequence[float]) -> np.ndarray:
    """`modules.quantile_summary` on the host: (B, H, W, F) float32, the same numbers.

    Inference computes the per-pixel summary over up to `summary_max_frames` (96) frames per
    source; XLA's CPU sort along the frame axis took ~0.75 s per 32 x 128 px strip, numpy's
    (vectorized, along a contiguous last axis) ~0.05 s. The arithmetic follows the JAX
    function step by step in float32; its interpolation a + frac * (b - a) is evaluated as
    one fused multiply-add, as XLA's CPU backend compiles it (the product is exact in
    float64), so on the machines measured the two agree bit for bit (tests/model).
    """
    qs = np.asarray(quantiles, np.float32)
    cols = []
    for s in sensors.SOURCE_IDS:
        x = np.asarray(inputs[f"{s}/x"], np.float32)  # (B, T, H, W, C)
        if x.shape[1] == 1:
            continue
        valid = np.asarray(inputs[f"{s}/mask"]) > 0  # (B, T, H, W)
        band_mask = np.asarray(inputs[f"{s}/band_mask"], np.float32)  # (B, T, C)
        n = valid.sum(axis=1)  # (B, H, W)
        # frames no pixel has (padding) would sort last as inf: left out
        used = np.flatnonzero(valid.reshape(*valid.shape[:2], -1).any(axis=(0, 2)))
        if not len(used):  # no valid frame anywhere: 0, as for each pixel without one
            b, _, h, w, c = x.shape
            cols.append(np.zeros((b, h, w, c * len(qs)), np.float32))
            continue
        x, valid, band_mask = x[:, used], valid[:, used], band_mask[:, used]
        # frames last and contiguous (B, H, W, C, T): numpy sorts along that axis fastest
        srt = np.empty((*x.shape[:1], *x.shape[2:], len(used)), np.float32)
        np.multiply(np.moveaxis(x, 1, -1), np.moveaxis(band_mask, 1, -1)[:, None, None], out=srt)
        invalid = np.moveaxis(~valid, 1, -1)[..., None, :]  # (B, H, W, 1, T)
        np.copyto(srt, np.float32(np.inf), where=invalid)  # valid values first, ascending
        srt.sort(axis=-1)
        last = np.maximum(n - 1, 0)
        pos = qs * last[..., None].astype(np.float32)  # (B, H, W, Q)
        lo = np.floor(pos)
        frac = (pos - lo)[..., None, :]  # (B, H, W, 1, Q)
        lo_i = lo.astype(np.int64)
        hi_i = np.minimum(lo_i + 1, last[..., None])
        a = np.take_along_axis(srt, lo_i[..., None, :], axis=-1)  # (B, H, W, C, Q)
        b = np.take_along_axis(srt, hi_i[..., None, :], axis=-1)
        with np.errstate(invalid="ignore"):  # no valid frame: inf - inf, replaced by 0
            d = (b - a).astype(np.float64)
            q = (a.astype(np.float64) + frac.astype(np.float64) * d).astype(np.float32)
        q = np.where((n > 0)[..., None, None], q, np.float32(0.0))
        cols.append(q.reshape(*q.shape[:3], -1))  # band-major, as the JAX function
    if not cols:
        b, _, h, w = np.shape(inputs[f"{sensors.SOURCE_IDS[0]}/mask"])
        return np.zeros((b, h, w, 0), np.float32)
    return np.concatenate(cols, -1)


def _frames_kept(used: np.ndarray, multiple: int) -> int:
    """(T,) frames in use -> how many leading frames to keep: up to the last one in use,
    rounded up to `multiple`, at least `multiple`, at most T."""
    idx = np.flatnonzero(used)
    last = int(idx[-1]) + 1 if len(idx) else 0
    return min(len(used), max(multiple, -(-last // multiple) * multiple))


def trim_padding_frames(feats: Mapping[str, np.ndarray], multiple: int) -> dict:
    """Batched example features without the trailing frames no example of the batch has
    (`frame_valid` False in every row), per time-varying source: the frames up to the last
    used one, rounded up to `multiple` (so few shapes compile), at least `multiple` (never
    one: a one-frame source reads as static). Views, no copies; `to_model_inputs(...,
    pad=False)` keeps the shorter sources as they are. Inference's 96-frame summary arrays
    are ~40% padding (the demo region: 73 Sentinel-2 frames, 45-46 of Sentinel-1 and
    Landsat, 12 of ERA5); what the padding frames add to the summary is zero.
    """
    out = dict(feats)
    for s in sensors.SOURCE_IDS:
        fv = np.asarray(feats[f"{s}/frame_valid"], bool)
        t = fv.shape[1]
        if t <= 1 or sensors.get_sensor(s).is_static:
            continue
        keep = _frames_kept(fv.any(axis=0), multiple)
        if keep < t:
            for k in ("values", "valid", "times_ms", "frame_valid", "band_valid", "geometry"):
                if f"{s}/{k}" in out:
                    out[f"{s}/{k}"] = out[f"{s}/{k}"][:, :keep]
    return out


def drop_padding_frames(inputs: Mapping[str, np.ndarray], multiple: int = 4) -> dict:
    """Model inputs without the trailing frames that are padding in every example of the
    batch, per time-varying source (kept: the last valid frame, rounded up to `multiple`,
    so few distinct shapes compile; at least `multiple` frames, never one: the summary reads
    a source with one frame as static, `modules.harmonic_summary`).

    The encoder treats a frame with mask 0 as absent (zero features, masked keys, zero
    pooling weight) and frames carry their time, not their index, so mu is the same to
    float rounding. embed-points uses it: a point set rarely has `max_frames` valid frames
    of every source (ERA5 has 12 a year; presto's fuel moisture set has 3 of each).
    """
    out = dict(inputs)
    for s in sensors.SOURCE_IDS:
        mask = np.asarray(inputs[f"{s}/mask"])
        t = mask.shape[1]
        if t <= 1:
            continue
        keep = _frames_kept(mask.reshape(mask.shape[0], t, -1).any(axis=(0, 2)), multiple)
        if keep < t:
            for k in ("x", "mask", "band_mask", "t", "geometry"):
                if f"{s}/{k}" in out:
                    out[f"{s}/{k}"] = out[f"{s}/{k}"][:, :keep]
    return out


def empty_inputs(batch: int, patch_size: int, max_frames: int) -> dict[str, np.ndarray]:
    """All-padding inputs of the given shape (used to pad batches to a fixed size)."""
    feats = examples.feature_layout(patch_size=patch_size, max_frames=max_frames)
    arrays = {}
    for name in example_keys():
        f = feats[name]
        dtype = {"float32": np.float32, "int64": np.int64, "bool": bool}[f.dtype]
        arrays[name] = np.zeros((batch, *f.shape), dtype)
    arrays["valid_period"][:, 1] = int(365 * DAY_MS)
    norm = {s: (np.zeros(1, np.float32), np.ones(1, np.float32)) for s in sensors.SOURCE_IDS}
    return to_model_inputs(arrays, norm, max_frames=max_frames)
