"""Fake model bundles for the embed, embed-points and inference tests (no JAX, no weights).

They follow the protocol of `model.bundle.Bundle` (version, sha256, embedding_dim, config,
prepare, prepare_points, pad_batch, embed_batch) with outputs simple enough to check by hand:
the per-pixel mean of the valid Sentinel-2 10 m bands over the period, projected to 64 dims
by a fixed random matrix and L2-normalized; NaN where the pixel has no valid observation.
Imported by name: pytest puts this directory on sys.path (tests/ has no packages).
"""

from __future__ import annotations

import numpy as np

from schemas.observations import Observations

S2_10M = ("B02", "B03", "B04", "B08")


class MeanS2Bundle:
    """Per pixel, no spatial context. Subclasses set version, sha256 and the projection seed."""

    version = "fake-1"
    sha256 = "f" * 64
    embedding_dim = 64
    proj_seed = 0

    def __init__(self, compute_dtype: str = "float32"):
        self.config = {"name": "fake", "compute_dtype": compute_dtype}
        self.batch_shapes: list[tuple[int, ...]] = []
        rng = np.random.default_rng(self.proj_seed)
        self.proj = rng.normal(size=(len(S2_10M), 64)).astype(np.float32)

    def prepare(self, obs: Observations, *, t_start_ms, t_end_ms, seed=0):
        h, w = obs.spatial_shape
        total = np.zeros((h, w, len(S2_10M)), np.float32)
        count = np.zeros((h, w), np.float32)
        sf = obs.sources.get("sentinel2_l2a")
        if sf is not None and sf.num_frames:
            sf = sf.select_time(t_start_ms, t_end_ms)
            v = np.stack([sf.band(b) for b in S2_10M], axis=-1)
            ok = sf.valid & np.isfinite(v).all(-1)
            total = np.where(ok[..., None], v, 0).sum(0).astype(np.float32)
            count = ok.sum(0).astype(np.float32)
        return {"sum": total, "count": count}

    def prepare_points(self, obs: Observations, *, t_start_ms, t_end_ms):
        item = self.prepare(obs, t_start_ms=t_start_ms, t_end_ms=t_end_ms)
        n = item["count"].shape[0]
        return {"sum": item["sum"].reshape(n, 1, 1, -1), "count": item["count"].reshape(n, 1, 1)}

    def pad_batch(self, items, batch_size):
        out = {k: np.stack([it[k] for it in items]) for k in items[0]}
        pad = batch_size - len(items)
        return {
            k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in out.items()
        }

    def features(self, mean: np.ndarray, has: np.ndarray) -> np.ndarray:
        """(B, H, W, 4) per-pixel means, (B, H, W) validity -> the features to project."""
        return mean

    def embed_batch(self, batch):
        s, c = batch["sum"], batch["count"]
        self.batch_shapes.append(s.shape)
        has = (c > 0).astype(np.float32)
        feat = self.features(s / np.maximum(c, 1)[..., None], has)
        v = (feat[..., :, None] * self.proj).sum(-2)
        with np.errstate(invalid="ignore", divide="ignore"):
            v = v / np.linalg.norm(v, axis=-1, keepdims=True)
        return np.where((c > 0)[..., None], v, np.nan).astype(np.float32)


class SpatialMeanS2Bundle(MeanS2Bundle):
    """The valid-weighted mean over a (2r+1)^2 neighbourhood of the per-pixel means, r = 2.

    Receptive field: `radius` px, so chips with a halo >= radius must tile seamlessly.
    """

    radius = 2

    def features(self, mean, has):
        r = self.radius
        _, h, w = has.shape
        pm = np.pad(mean * has[..., None], ((0, 0), (r, r), (r, r), (0, 0)))
        ph = np.pad(has, ((0, 0), (r, r), (r, r)))
        num = np.zeros_like(mean)
        den = np.zeros_like(has)
        for dy in range(2 * r + 1):  # a fixed summation order: the same sums in any chip
            for dx in range(2 * r + 1):
                num += pm[:, dy : dy + h, dx : dx + w]
                den += ph[:, dy : dy + h, dx : dx + w]
        return num / np.maximum(den, 1)[..., None]
