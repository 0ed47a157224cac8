"""Loading a model bundle and embedding observations with it.

    from model import load_bundle
    bundle = load_bundle("model/weights/tiny")
    emb = bundle.embed(observations)                 # (H * W, 64), benchmarks/quality contract
    x = bundle.prepare(chip_obs, t_start_ms=a, t_end_ms=b)    # one square chip -> inputs
    out = bundle.embed_batch(bundle.pad_batch([x, ...], 8))   # (8, P, P, 64)

Inputs are built by `schemas.examples.example_features` (the training examples' own
builder: the same frame choice, transforms and masks) and normalized with the stats the
model was trained with, so inference sees what training saw. `embed_batch` is jit-compiled
once per input shape; keep shapes fixed (one chip size, padded batches) to compile once.
Pixels without a single valid observation come out as NaN rows; an observed pixel whose
embedding is not finite (a model failure, e.g. from inputs out of range) comes out as an inf
row, so callers can tell it from no data (embed dead-letters its chip).

A bundle's stats.json must hold finite mean and std, from observed data (count > 0 where
counted), for every band of every source the bundle embeds (all registry sources but
`model.embed_without`): a missing source would otherwise be normalized with mean 0 / std 1
silently; `load_bundle` rejects it naming the source.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from model import export, features
from schemas import examples, sensors
from schemas.observations import Observations

DEFAULT_CHIP = 128
DEFAULT_HALO = 16
POINT_CHUNK = 256  # points per pixel-summary call of prepare_points (one compiled shape)
# Points per encoder call in embed_batch: the time path's attention weights of 64 points
# (4 heads x ~85 x ~85 frames) are ~7 MB; 512 points at once (59 MB per temporary, fresh
# pages on every call) ran about 2x slower per point on 2 CPU cores.
POINT_GROUP = 64
SUMMARY_FRAME_STEP = 16  # the frames a chunk's pixel summary keeps, rounded up to this
# The encoder's working set at inference (`Bundle.encode_chunked`): strips of STRIP_ROWS rows
# (a multiple of modules.CONTEXT_ROWS), as many items per call as fit STRIP_PIXELS pixels.
STRIP_ROWS = 32
STRIP_PIXELS = 32 * 128
_NO_LOCATION = examples.Location(0, 0, 0, 0.0, 0.0)


class BundleError(ValueError):
    """A bundle that is missing files, has a wrong digest or an unknown format."""


def _year_period(obs: Observations) -> tuple[int, int]:
    """The calendar year of the observations' median acquisition time (a default period)."""
    times = np.concatenate(
        [f.times_ms for f in obs.sources.values() if f.num_frames and f.times_ms.max() > 0]
        or [np.array([0], np.int64)]
    )
    year = dt.datetime.fromtimestamp(float(np.median(times)) / 1000, dt.UTC).year
    start = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


@dataclasses.dataclass
class Bundle:
    """A loaded model: its config, stats, parameters and a compiled embedding function."""

    path: str
    meta: dict
    config: dict
    stats: dict
    params: dict
    compute_dtype: str = "float32"

    def __post_init__(self):
        import jax
        import jax.numpy as jnp
        import ml_collections

        from model import modules

        cfg = ml_collections.ConfigDict(self.config)
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"compute_dtype must be float32 or bfloat16; got {self.compute_dtype}")
        cfg.model.dtype = self.compute_dtype
        self._model = modules.create_model(cfg)
        self._norm = features.normalizer(
            self.stats, std_floor=float(self.config.get("train", {}).get("std_floor", 1e-3))
        )
        model = self._model

        def encode(params, inputs):
            mu, observed = model.apply({"params": params}, inputs, method=model.encode)
            return mu, observed

        def frames(params, inputs):
            return model.apply({"params": params}, inputs, method=model.encode_frames)

        def context(params, pools):
            # the strips' pools -> the whole chip's, then the STP blocks
            whole = [
                tuple(jnp.concatenate([s[f][k] for s in pools], axis=2) for k in (0, 1))
                for f in range(len(modules.CONTEXT_FACTORS))
            ]
            return model.apply({"params": params}, *whole, method=model.encode_context)

        def pixels(params, inputs, frames, mask, context):
            return model.apply(
                {"params": params}, inputs, frames, mask, context, method=model.encode_pixels
            )

        self._encode = jax.jit(encode)
        self._frames = jax.jit(frames)
        self._context = jax.jit(context)
        self._pixels = jax.jit(pixels)
        harmonics = int(cfg.model.get("harmonics", 0))
        self._harmonics = jax.jit(lambda inputs: modules.harmonic_summary(inputs, harmonics))
        _ = self.embed_without  # a bad model.embed_without fails at load, not at the first chip

    @property
    def version(self) -> str:
        return str(self.meta["version"])

    @property
    def sha256(self) -> str:
        return str(self.meta["sha256"])

    @property
    def embedding_dim(self) -> int:
        return int(self.config["model"]["embedding_dim"])

    @property
    def max_frames(self) -> int:
        """Frames per time-varying source at inference: `model.embed_max_frames` (0 or
        absent: the training `model.max_frames`). The encoder pools over any number of
        frames, and its per-pixel summary (quantiles, harmonics) sharpens with more of them.
        """
        m = self.config["model"]
        return int(m.get("embed_max_frames") or m["max_frames"])

    @property
    def summary_max_frames(self) -> int:
        """Frames per time-varying source of the per-pixel summary that reaches mu linearly
        (`model.summary_max_frames`; 0 or absent: the deep path's `max_frames`). The summary
        (quantiles, harmonics) costs little per frame, so it can see every clear frame of the
        year while the attention paths see `max_frames` of them.
        """
        m = self.config["model"]
        return max(int(m.get("summary_max_frames") or 0), self.max_frames)

    @property
    def embed_without(self) -> tuple[str, ...]:
        """Sources the bundle leaves out when it embeds (`model.embed_without`, comma-separated;
        empty: none), as if they had not been observed. The shipped tiny bundle leaves out
        the DEM: its label-trained read-out ties classes to the elevations they had in the two
        pretraining regions (benchmarks/RESULTS.md, quality_model).
        """
        from model import modules

        raw = self.config["model"].get("embed_without") or ""
        out = tuple(s.strip() for s in str(raw).split(",") if s.strip())
        if unknown := sorted(set(out) - set(modules.SOURCES)):
            raise ValueError(
                f"bundle config model.embed_without: unknown sources {unknown}; "
                f"known: {list(modules.SOURCES)}"
            )
        return out

    # ----------------------------------------------------------------------- inputs

    def prepare(
        self, obs: Observations, *, t_start_ms: int, t_end_ms: int, seed: int = 0
    ) -> dict[str, np.ndarray]:
        """One square window -> the example arrays the model reads (no batch dimension)."""
        h, w = obs.spatial_shape
        if h != w:
            raise ValueError(f"prepare needs a square window; got {h} x {w} px (use embed)")
        if drop := self.embed_without:
            obs = obs.without(drop)
        n = self.summary_max_frames
        sizes = (self.max_frames, n) if n > self.max_frames else (self.max_frames,)
        sets = examples.example_feature_sets(
            obs,
            t_start_ms=int(t_start_ms),
            t_end_ms=int(t_end_ms),
            max_frames=sizes,
            location=_NO_LOCATION,
            seed=seed,
        )
        item = {k: sets[0][k] for k in features.example_keys()}
        if len(sets) > 1:
            item["pixel_summary"] = self._pixel_summary(sets.pop(), n)
        return item

    def _pixel_summary(self, feats: dict[str, np.ndarray], n: int) -> np.ndarray:
        """The (P, P, F) per-pixel summary of one window's example arrays of `n` =
        `summary_max_frames` frames per source."""
        batch = {k: feats[k][None] for k in features.example_keys()}
        del feats
        # the frames the window has (rounded up to SUMMARY_FRAME_STEP): the padding frames
        # add 0 to every sum and are left out of the sort, so the summary is that of all
        # `n` (to float rounding), for ~40% less normalization and harmonics
        batch = features.trim_padding_frames(batch, SUMMARY_FRAME_STEP)
        # per strip of rows (the summary is per pixel): the normalized 96-frame inputs and
        # the summary's sort exist for STRIP_ROWS rows at a time, not for the whole chip
        p = batch[f"{sensors.SOURCE_IDS[0]}/valid"].shape[2]
        out = np.empty((p, p, 0), np.float32)
        for r0 in range(0, p, STRIP_ROWS):
            part = {
                k: v[:, :, r0 : r0 + STRIP_ROWS] if _spatial(k) else v for k, v in batch.items()
            }
            inputs = features.to_model_inputs(part, self._norm, max_frames=n, pad=False)
            rows = self._summary(inputs)[0]
            if r0 == 0:
                out = np.empty((p, p, rows.shape[-1]), np.float32)
            out[r0 : r0 + len(rows)] = rows
            del inputs
        return out

    def _summary(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """`modules.pixel_summary` of model inputs (B, ...) -> (B, H, W, F) float32: the
        harmonics jitted, the quantiles on the host (`features.quantile_summary`: numpy's sort
        along a contiguous axis is ~15x faster than XLA's on CPU; the same numbers)."""
        m = self.config["model"]
        harmonics, quantiles = int(m.get("harmonics", 0)), tuple(m.get("quantiles", ()))
        parts = [np.asarray(self._harmonics(inputs), np.float32)] if harmonics > 0 else []
        if quantiles:
            parts.append(features.quantile_summary(inputs, quantiles))
        if not parts:
            raise ValueError("bundle config: summary_max_frames set without a summary")
        return np.concatenate(parts, -1)

    def prepare_points(
        self, obs: Observations, *, t_start_ms: int, t_end_ms: int
    ) -> dict[str, np.ndarray]:
        """A point set (H = N, W = 1) -> stacked P = 1 inputs, leading dimension N.

        All points at once (`examples.point_set_features`, the summary in fixed chunks);
        point i's inputs are those `prepare` makes of point i alone, so they never depend on
        which points share the call (one seed for all).
        """
        if drop := self.embed_without:
            obs = obs.without(drop)
        n = self.summary_max_frames
        sizes = (self.max_frames, n) if n > self.max_frames else (self.max_frames,)
        sets = examples.point_set_feature_sets(
            obs, t_start_ms=int(t_start_ms), t_end_ms=int(t_end_ms), max_frames=sizes
        )
        item = {k: sets[0][k] for k in features.example_keys()}
        if len(sets) > 1:
            big = sets.pop()
            item["pixel_summary"] = self._point_summaries(
                {k: big[k] for k in features.example_keys()}, n
            )
        return item

    def _point_summaries(self, feats: Mapping[str, np.ndarray], max_frames: int) -> np.ndarray:
        """(N, 1, 1, F) pixel summaries of stacked P = 1 examples, in padded chunks of
        POINT_CHUNK (one compiled shape)."""
        total = len(feats["valid_period"])
        out = []
        for i in range(0, total, POINT_CHUNK):
            part = {k: v[i : i + POINT_CHUNK] for k, v in feats.items()}
            m = len(part["valid_period"])
            if m < POINT_CHUNK:
                part = {
                    k: np.concatenate([v, np.repeat(v[:1], POINT_CHUNK - m, axis=0)])
                    for k, v in part.items()
                }
            inputs = features.to_model_inputs(part, self._norm, max_frames=max_frames)
            # Trailing frames no point of the chunk has are padding (a point rarely has
            # `summary_max_frames` of a source; ERA5 has 12): the quantiles sort the rest,
            # the harmonics sum over it (a few shapes: multiples of SUMMARY_FRAME_STEP).
            inputs = features.drop_padding_frames(inputs, multiple=SUMMARY_FRAME_STEP)
            out.append(self._summary(inputs)[:m])
        return np.concatenate(out)

    @staticmethod
    def stack(items: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return {k: np.stack([it[k] for it in items]) for k in items[0]}

    def pad_batch(self, items: Sequence[Mapping[str, np.ndarray]], batch_size: int) -> dict:
        """Stack prepared items and pad with empty ones up to `batch_size` (a fixed shape)."""
        if not items or len(items) > batch_size:
            raise ValueError(f"pad_batch: {len(items)} items for batch size {batch_size}")
        batch = self.stack(items)
        n = len(items)
        if n == batch_size:
            return batch
        out = {}
        for k, v in batch.items():
            pad = np.zeros((batch_size - n, *v.shape[1:]), v.dtype)
            if k == "valid_period":
                pad[:] = v[:1]
            out[k] = np.concatenate([v, pad])
        return out

    # ----------------------------------------------------------------------- embedding

    def embed_batch(self, batch: Mapping[str, np.ndarray], *, chunked: bool = True) -> np.ndarray:
        """Stacked prepared inputs (B, ...) -> (B, P, P, D) float32; NaN where unobserved.

        `chunked` (the default) runs the encoder on row strips of a few items at a time
        (`encode_chunked`: memory bounded by STRIP_PIXELS, not by B x P x P); False runs it
        on the whole batch in one call (the reference the chunked path is tested against).
        """
        return self.embed_inputs(self.batch_inputs(batch), chunked=chunked)

    def batch_inputs(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Stacked prepared inputs -> the model's input arrays (`embed_inputs` embeds them;
        a caller that drops `batch` in between holds the batch once while the model runs)."""
        inputs = features.to_model_inputs(batch, self._norm, max_frames=self.max_frames)
        points = inputs[f"{sensors.SOURCE_IDS[0]}/mask"].shape[2:] == (1, 1)
        if points:  # the frames some point of the batch uses
            inputs = features.drop_padding_frames(inputs)
        if "pixel_summary" in batch:
            inputs["pixel_summary"] = np.asarray(batch["pixel_summary"], np.float32)
        return inputs

    def embed_inputs(
        self, inputs: Mapping[str, np.ndarray], *, chunked: bool = True, hold_frames: bool = True
    ) -> np.ndarray:
        """`batch_inputs` -> (B, P, P, D) float32, as `embed_batch` (`hold_frames`: as
        `encode_chunked`)."""
        points = inputs[f"{sensors.SOURCE_IDS[0]}/mask"].shape[2:] == (1, 1)
        if chunked and points:
            mu, observed = self._encode_points(inputs)
        elif chunked:
            mu, observed = self.encode_chunked(inputs, hold_frames=hold_frames)
        else:
            mu, observed = self._encode(self.params, inputs)
        mu = np.asarray(mu, np.float32)
        observed = np.asarray(observed)[..., None]
        failed = observed & ~np.isfinite(mu).all(axis=-1, keepdims=True)
        return np.where(failed, np.inf, np.where(observed, mu, np.nan)).astype(np.float32)

    def _encode_points(self, inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The encoder on P = 1 model inputs (B, ...) in groups of POINT_GROUP points, one
        call each (a point has no strips and no neighbours) -> (mu, observed) as numpy."""
        b = len(inputs["period_days"])
        parts = [
            self._encode(self.params, {k: v[i : i + POINT_GROUP] for k, v in inputs.items()})
            for i in range(0, b, POINT_GROUP)
        ]
        mu = np.concatenate([np.asarray(m, np.float32) for m, _ in parts])
        return mu, np.concatenate([np.asarray(o) for _, o in parts])

    def encode_chunked(
        self, inputs: Mapping[str, np.ndarray], *, hold_frames: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The encoder on model inputs (B, ...) in bounded memory -> (mu, observed) as numpy.

        Items go through in groups of `STRIP_PIXELS // (rows x W)` (one chip of 128 px at a
        time; a whole batch of points), each in strips of STRIP_ROWS rows: the per-pixel
        stages (`encode_frames`, `encode_pixels`) see one strip, only the context paths
        (`encode_context`, at L/2 and coarser) the whole chip. The strips start at multiples
        of `modules.CONTEXT_ROWS`, so every pool and upsampling sees what it sees whole.
        A group of items with no observation at all is not run (its pixels are unobserved).

        `hold_frames` False keeps only the strips' pools while the context paths run, and
        computes each strip's frames again for its read-out: the same compiled call on the
        same rows, so the same vectors, for less memory at the context stage's peak (a 160 px
        chip's 5 strips of frames are ~0.3 GB) and one more `encode_frames` per strip (~0.6 s
        each there on 2 cores).
        """
        from model import modules

        b, _, h, w = inputs[f"{modules.SOURCES[0]}/mask"].shape
        rows = min(h, STRIP_ROWS)
        group = max(1, STRIP_PIXELS // (rows * w))
        strips = [(r0, min(r0 + rows, h)) for r0 in range(0, h, rows)]
        mu = np.empty((b, h, w, self.embedding_dim), np.float32)
        observed = np.empty((b, h, w), bool)
        for i in range(0, b, group):
            items = {k: v[i : i + group] for k, v in inputs.items()}
            if not any(np.any(items[f"{s}/mask"]) for s in modules.SOURCES):
                # nothing observed (a batch's padding, a chip of no data): no pixel is
                # observed, so the model's vectors would all be dropped
                mu[i : i + group], observed[i : i + group] = 0.0, False
                continue
            fronts = []
            for r0, r1 in strips:
                front = self._frames(self.params, _rows(items, r0, r1))
                if not hold_frames:
                    # the pools alone, copied out: kept as returned, they kept the memory of
                    # the call's frames (and its temporaries) too
                    front = (None, None, [tuple(map(np.array, pool)) for pool in front[2]])
                fronts.append(front)
            context = self._context(self.params, [f[2] for f in fronts])
            for n, (r0, r1) in enumerate(strips):
                frames, mask, _ = fronts[n]
                fronts[n] = None  # a strip's frames go once it is read out
                if frames is None:
                    frames, mask, _ = self._frames(self.params, _rows(items, r0, r1))
                ctx = tuple(
                    c[:, :, r0 // f : -(-r1 // f)]
                    for c, f in zip(context, modules.CONTEXT_FACTORS, strict=True)
                )
                m, o = self._pixels(self.params, _rows(items, r0, r1), frames, mask, ctx)
                del frames, mask
                mu[i : i + group, r0:r1] = np.asarray(m, np.float32)
                observed[i : i + group, r0:r1] = np.asarray(o)
        return mu, observed

    def embed(
        self,
        obs: Observations,
        t_start_ms: int | None = None,
        t_end_ms: int | None = None,
        *,
        chip_size: int = DEFAULT_CHIP,
        halo: int = DEFAULT_HALO,
        batch_size: int = 1,
        release: Callable[[], object] | None = None,
    ) -> np.ndarray:
        """Observations over a window (or a point set) -> (H * W, D) in row-major order.

        A window is cut into chips of `chip_size` px with `halo` px of context on each side
        (the edges are padded with missing observations); the period defaults to the
        calendar year of the observations. `batch_size` chips are prepared and held at once;
        the encoder runs one chip at a time whatever it is (`encode_chunked`, holding no
        strip's frames through the context stage), so 1 (the default) gives the same vectors
        in the least memory.
        `release`, when given, runs after each batch is prepared, before the encoder (e.g.
        beam_jobs.inference.trim_heap: the memory the preparation freed goes back to the
        OS before the encoder's peak).
        """
        if t_start_ms is None or t_end_ms is None:
            t_start_ms, t_end_ms = _year_period(obs)
        if obs.window is None:
            pts = self.prepare_points(obs, t_start_ms=t_start_ms, t_end_ms=t_end_ms)
            n = len(pts["valid_period"])
            rows = []
            for i in range(0, n, 256):
                chunk = [{k: v[j] for k, v in pts.items()} for j in range(i, min(n, i + 256))]
                out = self.embed_batch(self.pad_batch(chunk, 256))[: len(chunk)]
                rows.append(out.reshape(len(chunk), -1))
            return np.concatenate(rows)
        h, w = obs.spatial_shape
        chip = min(chip_size, max(h, w))
        size = chip + 2 * halo
        out = np.full((h, w, self.embedding_dim), np.nan, np.float32)
        jobs = [(i, j) for i in range(0, h, chip) for j in range(0, w, chip)]
        for k in range(0, len(jobs), batch_size):
            part = jobs[k : k + batch_size]
            items = [
                self.prepare(
                    _crop_padded(obs, i - halo, j - halo, size),
                    t_start_ms=t_start_ms,
                    t_end_ms=t_end_ms,
                )
                for i, j in part
            ]
            inputs = self.batch_inputs(self.pad_batch(items, min(batch_size, len(jobs))))
            del items  # the model inputs alone are held while the encoder runs
            if release is not None:
                release()
            emb = self.embed_inputs(inputs, hold_frames=False)
            del inputs
            for (i, j), e in zip(part, emb, strict=False):
                hh, ww = min(chip, h - i), min(chip, w - j)
                out[i : i + hh, j : j + ww] = e[halo : halo + hh, halo : halo + ww]
        return out.reshape(h * w, self.embedding_dim)


def _spatial(key: str) -> bool:
    """Whether an example feature is per pixel: (T, H, W[, C]) per source."""
    return key.endswith(("/values", "/valid"))


def _rows(inputs: Mapping[str, np.ndarray], r0: int, r1: int) -> dict[str, np.ndarray]:
    """Model inputs restricted to rows [r0, r1) (the spatial arrays; the rest as they are)."""
    out = {}
    for k, v in inputs.items():
        if k.endswith(("/x", "/mask")):
            v = v[:, :, r0:r1]  # (B, T, H, W[, C])
        elif k == "pixel_summary":
            v = v[:, r0:r1]  # (B, H, W, F)
        out[k] = v
    return out


def _crop_padded(obs: Observations, i0: int, j0: int, size: int) -> Observations:
    """A size x size window of a window's observations; outside pixels are missing."""
    h, w = obs.spatial_shape
    sources = {}
    for s, f in obs.sources.items():
        t = f.num_frames
        values = np.full((t, size, size, f.values.shape[-1]), np.nan, np.float32)
        valid = np.zeros((t, size, size), bool)
        a0, a1 = max(i0, 0), min(i0 + size, h)
        b0, b1 = max(j0, 0), min(j0 + size, w)
        if a1 > a0 and b1 > b0:
            values[:, a0 - i0 : a1 - i0, b0 - j0 : b1 - j0] = f.values[:, a0:a1, b0:b1]
            valid[:, a0 - i0 : a1 - i0, b0 - j0 : b1 - j0] = f.valid[:, a0:a1, b0:b1]
        sources[s] = dataclasses.replace(f, values=values, valid=valid)
    win = obs.window
    window = dataclasses.replace(
        win,
        x0=win.x0 + j0 * win.pixel_size,
        y0=win.y0 - i0 * win.pixel_size,
        width=size,
        height=size,
    )
    return Observations(sources=sources, window=window)


def check_stats(stats: Mapping, config: Mapping, where: str) -> None:
    """BundleError naming the source (and band) that stats.json lacks for a source the
    bundle embeds: absent, a non-finite mean or std, or a count of 0."""
    from model import modules

    raw = config.get("model", {}).get("embed_without") or ""
    skipped = {s.strip() for s in str(raw).split(",") if s.strip()}
    for source in modules.SOURCES:
        if source in skipped:
            continue
        per_band = stats.get(source)
        if not isinstance(per_band, Mapping) or not per_band:
            raise BundleError(
                f"{where}: no statistics for source {source!r}, which the bundle embeds "
                "(retrain with it, or list it in config.json model.embed_without)"
            )
        for band in sensors.get_sensor(source).band_names:
            st = per_band.get(band)
            ok = isinstance(st, Mapping) and all(
                isinstance(st.get(k), int | float) and np.isfinite(st[k]) for k in ("mean", "std")
            )
            if not ok or (isinstance(st, Mapping) and st.get("count", 1) == 0):
                raise BundleError(
                    f"{where}: source {source!r} band {band!r} has no usable statistics "
                    f"({st!r}); the bundle embeds {source!r}"
                )


def load_bundle(path: str, compute_dtype: str = "float32") -> Bundle:
    """Read and verify a bundle directory (see model/export.py); no pickle involved.

    Raises:
      BundleError: a file is missing, a digest does not match, or the format is unknown.
    """
    import flax.serialization

    meta_path = os.path.join(path, "bundle.json")
    if not os.path.isfile(meta_path):
        raise BundleError(f"{path}: not a model bundle (no bundle.json)")
    with open(meta_path) as f:
        meta = json.load(f)
    if int(meta.get("bundle_format", -1)) != export.BUNDLE_FORMAT:
        raise BundleError(f"{meta_path}: bundle_format {meta.get('bundle_format')} is unknown")
    if int(meta.get("schema_version", -1)) not in examples.PARSED_SCHEMA_VERSIONS:
        raise BundleError(
            f"{meta_path}: made for example schema {meta.get('schema_version')}, this code "
            f"reads {examples.SCHEMA_VERSION} (and models of {examples.PARSED_SCHEMA_VERSIONS})"
        )
    digests = {}
    for name in export.BUNDLE_FILES:
        p = os.path.join(path, name)
        if not os.path.isfile(p):
            raise BundleError(f"{path}: missing {name}")
        digests[name] = export.sha256_file(p)
        if digests[name] != meta["files"].get(name):
            raise BundleError(f"{p}: sha256 {digests[name]} does not match bundle.json")
    if export.content_hash(digests) != meta.get("sha256"):
        raise BundleError(f"{meta_path}: content hash does not match its files")
    with open(os.path.join(path, "params.msgpack"), "rb") as f:
        params = flax.serialization.msgpack_restore(f.read())
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(path, "stats.json")) as f:
        stats = json.load(f)
    check_stats(stats, config, os.path.join(path, "stats.json"))
    if compute_dtype == "bfloat16":
        import jax
        import jax.numpy as jnp

        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), params)
    return Bundle(path, meta, config, stats, params, compute_dtype)
