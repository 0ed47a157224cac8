"""Offline fit of the model's summary-to-mu map: what the linear part of mu can reach.

The tiny model's mu is, to within its small deep gate, one linear map of a fixed per-pixel
summary (model.modules.pixel_summary: per-band means and static values, seasonal harmonics,
10/50/90 % quantiles). This script fits that map alone, with the model's label objective
(cosine softmax of the unit map against a learned 64-row label table, temperature 0.07) and
its optimizer (AdamW warmup-cosine, peak 1e-3, weight decay 1e-4, clip 1), on the labelled
pixels of build-training-data directories, then probes the map on a benchmark data set the
way `earthembed evaluate` probes an embedding (evaluation.probes: balanced accuracy, best of
1-NN and logistic regression, 30 class-balanced draws per budget):

    python -m benchmarks.summary_fit --data W/td_tropical,W/td_temperate \
        --bundle model/weights/tiny --dataset sim:101:tropical \
        --cache-dir /tmp/eval_sim/cache --columns means,quantiles --sampling window

`--sampling` says which pixels each step's label term scores:
  * `patch`: the pixels of 8 examples' 16 x 16 patches, as the model's label term scores its
    step's crops (near copies of each other, from few places);
  * `random`: 2048 pixels drawn from all examples;
  * `window`: 8 labelled pixels of each of the 8 examples of the last 32 steps (2048).
Training pixels are summarized as the model sees them in training (the bundle's stats, the
config's `max_frames`), the benchmark's as it embeds them (`embed_max_frames`, chips of 128 px).
benchmarks/RESULTS.md (quality_model) records what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence

import numpy as np

COLUMN_BLOCKS = ("means", "harmonics", "quantiles")
SAMPLINGS = ("patch", "random", "window")
PIXELS_PER_STEP = 2048
EXAMPLES_PER_STEP = 8
PATCH = 16
WINDOW_STEPS = 32
WINDOW_PIXELS = 8


def summary_columns(inputs: Mapping, columns: Sequence[str], model_config: Mapping):
    """Model inputs -> (B, H, W, F): the requested blocks of the model's pixel summary.

    `means`: per-band masked means and static values (model.modules.harmonic_summary with no
    harmonic); `harmonics`: the harmonic summary at the config's `harmonics` (means included);
    `quantiles`: the quantile summary at the config's `quantiles`.
    """
    import jax.numpy as jnp

    from model import modules

    parts = []
    for c in columns:
        if c == "means":
            parts.append(modules.harmonic_summary(inputs, 0))
        elif c == "harmonics":
            parts.append(modules.harmonic_summary(inputs, int(model_config.get("harmonics", 2))))
        elif c == "quantiles":
            q = tuple(model_config.get("quantiles", (0.1, 0.5, 0.9)))
            parts.append(modules.quantile_summary(inputs, q))
        else:
            raise ValueError(f"--columns: unknown block {c!r}; known: {COLUMN_BLOCKS}")
    return jnp.concatenate(parts, -1)


def training_pixels(
    data: Sequence[str], stats: Mapping, columns: Sequence[str], model_config: Mapping
) -> tuple[np.ndarray, np.ndarray]:
    """Every train-split example of the directories -> (X (N, P, P, F), landcover (N, P, P)).

    Directories must share a patch size (point directories, P = 1, carry no labels: leave
    them out).
    """
    import jax

    from model import features, input_pipeline

    norm = features.normalizer(stats)
    f = jax.jit(lambda x: summary_columns(x, columns, model_config))
    xs, ls = [], []
    for path in data:
        d = input_pipeline.open_data_dir(path)
        for raw in input_pipeline.dataset(
            d, "train", batch_size=16, seed=0, shuffle_buffer=1, repeat=False
        ):
            raw = input_pipeline._as_numpy(raw)
            inputs = features.to_model_inputs(raw, norm, max_frames=int(model_config["max_frames"]))
            xs.append(np.asarray(f(inputs)))
            ls.append(np.asarray(raw["target/landcover"]))
    return np.concatenate(xs), np.concatenate(ls)


def window_pixels(bundle, obs, columns: Sequence[str], chip: int = 128) -> np.ndarray:
    """A window's pixels as the bundle would embed them -> (H * W, F) summary rows."""
    import jax

    from model import bundle as bundle_lib
    from model import features

    t0, t1 = bundle_lib._year_period(obs)
    h, w = obs.spatial_shape
    f = jax.jit(lambda x: summary_columns(x, columns, bundle.config["model"]))
    out = None
    for i in range(0, h, chip):
        for j in range(0, w, chip):
            item = bundle.prepare(
                bundle_lib._crop_padded(obs, i, j, chip), t_start_ms=t0, t_end_ms=t1
            )
            inputs = features.to_model_inputs(
                bundle.stack([item]), bundle._norm, max_frames=bundle.max_frames
            )
            s = np.asarray(f(inputs))[0]
            if out is None:
                out = np.zeros((h, w, s.shape[-1]), np.float32)
            out[i : i + chip, j : j + chip] = s[: min(chip, h - i), : min(chip, w - j)]
    return out.reshape(h * w, -1)


class PixelSampler:
    """Which (example, pixel) pairs each step's label term scores (module docstring)."""

    def __init__(self, labels: np.ndarray, sampling: str, seed: int):
        if sampling not in SAMPLINGS:
            raise ValueError(f"--sampling must be one of {SAMPLINGS}; got {sampling!r}")
        self.labels = labels.reshape(len(labels), -1)  # (N, P * P)
        self.p = labels.shape[1]
        self.sampling = sampling
        self.rng = np.random.default_rng(seed)
        self.window: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self) -> tuple[np.ndarray, np.ndarray]:
        n, npix = self.labels.shape
        rng = self.rng
        if self.sampling == "random":
            return rng.integers(0, n, PIXELS_PER_STEP), rng.integers(0, npix, PIXELS_PER_STEP)
        ex = rng.choice(n, EXAMPLES_PER_STEP, replace=False)
        if self.sampling == "patch":
            size = min(PATCH, self.p)
            r0, c0 = rng.integers(0, self.p - size + 1, 2)
            pix = (np.arange(r0, r0 + size)[:, None] * self.p + np.arange(c0, c0 + size)).ravel()
            return np.repeat(ex, len(pix)), np.tile(pix, len(ex))
        picks = []
        for e in ex:
            ok = np.flatnonzero(self.labels[e] >= 0)
            k = min(WINDOW_PIXELS, len(ok))
            picks.append((np.full(k, e), rng.choice(ok, k, replace=False)))
        self.window = (self.window + [tuple(np.concatenate(a) for a in zip(*picks, strict=True))])[
            -WINDOW_STEPS:
        ]
        return (
            np.concatenate([w[0] for w in self.window]),
            np.concatenate([w[1] for w in self.window]),
        )


def fit_linear_map(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    sampling: str = "window",
    steps: int = 1000,
    learning_rate: float = 1e-3,
    num_classes: int = 64,
    embedding_dim: int = 64,
    temperature: float = 0.07,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Fit mu = normalize(x W + b) to the labels with the model's label objective.

    x (N, P, P, F) and labels (N, P, P) (-1: unlabelled). Returns {"kernel", "bias", "table"}.
    """
    import jax
    import jax.numpy as jnp
    import optax

    n, p, _, f = x.shape
    xf = jnp.asarray(x.reshape(n, p * p, f), jnp.float32)
    lf = np.asarray(labels).reshape(n, p * p).astype(np.int32)
    lf = np.where(lf < num_classes, lf, -1)
    key = jax.random.key(seed)
    params = {
        "kernel": jax.nn.initializers.lecun_normal()(key, (f, embedding_dim)),
        "bias": jnp.zeros(embedding_dim),
        "table": 0.02 * jax.random.normal(jax.random.fold_in(key, 2), (num_classes, embedding_dim)),
    }
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, min(100, steps // 10), steps, learning_rate * 0.01
    )
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))
    state = opt.init(params)

    def unit(v):
        return v / jnp.sqrt(jnp.sum(v * v, -1, keepdims=True) + 1e-12)

    def loss(prm, xb, yb):
        mu = unit(xb @ prm["kernel"] + prm["bias"])
        logp = jax.nn.log_softmax(mu @ unit(prm["table"]).T / temperature)
        ok = yb >= 0
        ll = jnp.take_along_axis(logp, jnp.maximum(yb, 0)[:, None], axis=1)[:, 0]
        return -jnp.sum(ll * ok) / jnp.maximum(jnp.sum(ok), 1)

    @jax.jit
    def step(prm, st, xb, yb):
        g = jax.grad(loss)(prm, xb, yb)
        upd, st = opt.update(g, st, prm)
        return optax.apply_updates(prm, upd), st

    sampler = PixelSampler(lf.reshape(n, p, p), sampling, seed)
    for _ in range(steps):
        e, q = sampler()
        params, state = step(params, state, xf[e, q], jnp.asarray(lf[e, q]))
    return {k: np.asarray(v) for k, v in params.items()}


def apply_map(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """(M, F) summary rows -> (M, D) unit vectors of the fitted map."""
    z = np.asarray(x, np.float64) @ params["kernel"] + params["bias"]
    return (z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.summary_fit", description=__doc__)
    p.add_argument("--data", required=True, help="build-training-data directories, comma-separated")
    p.add_argument("--bundle", default="model/weights/tiny", help="stats, config and embedding")
    p.add_argument("--dataset", default="sim:101:tropical")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--columns", default="means,quantiles", help=f"blocks of {COLUMN_BLOCKS}")
    p.add_argument("--sampling", default="window", choices=SAMPLINGS)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", default=None, help="write the scores here as JSON")
    return p


def run(argv: list[str] | None = None) -> int:
    from evaluation.datasets import load_dataset
    from evaluation.probes import best_probe, probe_feature_sets
    from model import bundle as bundle_lib

    a = build_parser().parse_args(argv)
    columns = [c.strip() for c in a.columns.split(",") if c.strip()]
    bundle = bundle_lib.load_bundle(a.bundle)
    model_config = bundle.config["model"]
    x, lc = training_pixels(a.data.split(","), bundle.stats, columns, model_config)
    ds = load_dataset(a.dataset, cache_dir=a.cache_dir)
    xe = window_pixels(bundle, ds.observations, columns)[ds.pixel_index]
    params = fit_linear_map(
        x, lc, sampling=a.sampling, steps=a.steps, learning_rate=a.learning_rate, seed=a.seed
    )
    scores = probe_feature_sets(
        {"map": apply_map(params, xe)},
        ds.labels,
        ds.is_test,
        [1, 10],
        a.repeats,
        0,
        ("knn1", "logreg"),
    )["map"]
    out = {
        "settings": {k: v for k, v in vars(a).items() if k != "out"},
        "features": int(x.shape[-1]),
        "training_pixels": int(np.sum(lc >= 0)),
        "scores": scores,
        "best": {b: best_probe(scores[b])[1] for b in scores},
    }
    print(json.dumps(out["best"] | {"features": out["features"]}))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(run())
