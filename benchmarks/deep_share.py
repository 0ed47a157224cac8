"""How much of a bundle's embedding the encoder makes: the deep-path share of mu's variance.

    python -m benchmarks.deep_share --bundle model/weights/tiny --datasets eolearn:s2,fuel_moisture \
        --cache-dir /tmp/yard/cache --out /tmp/deep_share.json

For each data set (`earthembed evaluate`'s `--dataset` forms; the labelled pixels only), the
bundle embeds the data set's observations as `evaluate` does, and two measures compare its
vectors mu with the per-pixel summary s the bundle computes for the same pixels
(model.modules.pixel_summary: per-band masked means, annual and semi-annual harmonics,
10/50/90% quantiles; the shipped tiny bundle's over up to `summary_max_frames` = 96 frames):

  * `nonlinear_share`: 1 - R^2 of the least-squares fit (with intercept) of mu (all D
    dimensions) on s over the pixels: the share of mu's pixel-to-pixel variance (summed over
    dimensions) that no linear map of the designed summary explains. 0 for an embedding that
    is a linear read-out of the summary (the issue asks the deep path for at least half).
  * `knockout_r2`: R^2 of the same kind of fit of mu on the vector the same parameters give
    without the summary (a config with no harmonics, no quantiles and no
    `summary_max_frames`: for the shipped bundle, mu = normalize(W s + b + g deep) becomes
    normalize(deep), the deep path alone): the share of mu's pixel-to-pixel variance that
    the encoder's vectors without the summary explain linearly. Near 1: what mu varies
    with is also in the encoder's own vectors (the summary is redundant to them; it does NOT
    say which path mu reads: a deep path that itself computes summary-like statistics scores
    high); near 0: mu's variation comes from the summary alone (chance ~ (D + 1) / pixels).

The summary is computed from the pixels prepared as points (each pixel's own frames; a
window's chips may choose a pixel's frames differently when a chip holds more than the
bundle's frame limits of clear acquisitions).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np


def explained(y: np.ndarray, x: np.ndarray) -> float:
    """R^2 of the linear least-squares fit (with intercept) of y (N, D) on x (N, F), over
    rows finite in both; variance summed over y's dimensions."""
    ok = np.isfinite(y).all(1) & np.isfinite(x).all(1)
    y, x = y[ok].astype(np.float64), x[ok].astype(np.float64)
    x = np.concatenate([x, np.ones((len(x), 1))], 1)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = ((y - x @ coef) ** 2).sum()
    total = ((y - y.mean(0)) ** 2).sum()
    return float(1.0 - residual / total)


def nonlinear_share(mu: np.ndarray, s: np.ndarray) -> float:
    """1 - R^2 of mu (N, D) on s (N, F) (`explained`): the share of mu's variance no linear
    map of s explains."""
    return 1.0 - explained(mu, s)


def pixel_summaries(bundle, obs) -> np.ndarray:
    """(N, F) the bundle's per-pixel summary of a point set, as its model reads it: the
    prepared `pixel_summary` (over `summary_max_frames`), else the model inputs' own."""
    from model.bundle import _year_period

    t0, t1 = _year_period(obs)
    items = bundle.prepare_points(obs, t_start_ms=t0, t_end_ms=t1)
    n = len(items["valid_period"])
    if "pixel_summary" in items:
        return items["pixel_summary"].reshape(n, -1)
    out = []
    for i in range(0, n, 256):
        part = bundle.batch_inputs({k: v[i : i + 256] for k, v in items.items()})
        s = bundle._summary(part)
        out.append(s.reshape(len(s), -1))
    return np.concatenate(out)


def knockout(bundle):
    """The same bundle without its per-pixel summary (a copy of its config with no
    harmonics, no quantiles and no summary_max_frames; the summary's parameters unused)."""
    import copy

    from model.bundle import Bundle

    config = copy.deepcopy(bundle.config)
    config["model"]["harmonics"] = 0
    config["model"]["quantiles"] = []
    config["model"]["summary_max_frames"] = 0
    return Bundle(bundle.path, bundle.meta, config, bundle.stats, bundle.params)


def measure(bundle, dataset) -> dict:
    from evaluation.baselines import select_pixels
    from evaluation.evaluate import embed_pixels

    mu = embed_pixels(bundle.embed, dataset)
    pts = select_pixels(dataset.observations, dataset.pixel_index)
    s = pixel_summaries(bundle, pts)
    out = {"pixels": int(np.isfinite(mu).all(1).sum()), "nonlinear_share": nonlinear_share(mu, s)}
    out["knockout_r2"] = explained(mu, embed_pixels(knockout(bundle).embed, dataset))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.deep_share", description=__doc__)
    p.add_argument("--bundle", required=True)
    p.add_argument("--datasets", default="eolearn:s2,fuel_moisture")
    p.add_argument("--cache-dir", default="out/eval_cache")
    p.add_argument("--out", help="JSON file for the figures (printed as well)")
    args = p.parse_args(argv)
    from evaluation.datasets import load_dataset
    from model import load_bundle

    bundle = load_bundle(args.bundle)
    results = {"bundle": bundle.version, "datasets": {}}
    for spec in [s for s in args.datasets.split(",") if s]:
        ds = load_dataset(spec, cache_dir=args.cache_dir)
        results["datasets"][spec] = measure(bundle, ds)
        print(spec, json.dumps(results["datasets"][spec]), file=sys.stderr, flush=True)
    text = json.dumps(results, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
