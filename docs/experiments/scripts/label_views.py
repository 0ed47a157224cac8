"""Study script (docs/experiments/2026-12-07-label-views.md; not product code): does the
label-trained read-out of the pixel summary transfer better to real pixels when it is fitted
on the regimes users feed (sources missing, 3-12 month windows, frames missing, one frame a
month) instead of on full-cadence, all-source years only?

The shipped read-out (mu ~ W s + b) is trained by the label term on the label window's
UNPERTURBED pixels: every source, the whole year. The real yardsticks are nothing like that:
fuel moisture is three monthly composites of Sentinel-1/2 and ERA5 (no Landsat), eolearn five
Sentinel-2 scenes. Here linear heads s -> 64-d unit vector (the shipped label term: a softmax
against a learned, normalized class table at temperature 0.07) are fitted on the labelled
pixels of the two pretraining regions (`sim:11:tropical`, `sim:12:temperate`), either on the
full summaries alone ("full") or on the full summaries plus `--views` augmented views of
every pixel ("views"); same standardization (the full summaries'), same seeds. Probed as
`earthembed evaluate` probes, on the VALIDATION splits only:

    .venv/bin/python docs/experiments/scripts/label_views.py --cache-dir C [--seeds 0,1,2,3,4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from sim_label_heads import train_head
from view_contrastive import CFG, augment, best_of, draws_of, mlp

from benchmarks.deep_share import pixel_summaries
from evaluation.baselines import select_pixels
from evaluation.datasets import load_dataset
from evaluation.evaluate import embed_pixels
from evaluation.paired import paired_stats
from model import load_bundle


def sim_views(bundle, cache_dir, n_views, cfg, out: Path):
    """(full summaries (N, F), views (V, N, F), class ids (N,)) of the labelled pixels of the
    two pretraining regions (cached in `out`)."""
    if out.exists():
        z = np.load(out)
        return z["s"], z["v"], z["y"]
    rng = np.random.default_rng(cfg["seed"])
    ss, vs, ys = [], [], []
    for spec in ("sim:11:tropical", "sim:12:temperate"):
        t = time.time()
        ds = load_dataset(spec, cache_dir=cache_dir)
        p = select_pixels(ds.observations, ds.pixel_index)
        n = p.spatial_shape[0]
        s = pixel_summaries(bundle, p)
        v = np.zeros((n_views, n, s.shape[1]), np.float32)
        for i in range(n_views):
            for c0 in range(0, n, 128):
                rows = np.arange(c0, min(n, c0 + 128))
                v[i, rows] = pixel_summaries(bundle, augment(select_pixels(p, rows), rng, cfg))
        ss.append(s)
        vs.append(v)
        ys.append(ds.labels)
        print(f"{spec}: {n} px, {n_views} views in {time.time() - t:.0f} s", flush=True)
    s, v, y = np.concatenate(ss), np.concatenate(vs, axis=1), np.concatenate(ys)
    np.savez(out, s=s, v=v, y=y)
    return s, v, y


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", default="model/weights/tiny")
    ap.add_argument("--cache-dir", default="out/eval_cache")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--seeds", default="0,1,2,3,4", help="the heads' seeds")
    ap.add_argument("--pcomp", type=float, default=0.3, help="share of monthly views")
    args = ap.parse_args()
    cfg = dict(CFG, pcomp=args.pcomp)
    bundle = load_bundle(args.bundle)
    cache = Path(args.cache_dir) / f"label_views_v{args.views}_c{args.pcomp}.npz"
    s, v, y = sim_views(bundle, args.cache_dir, args.views, cfg, cache)
    ok = np.isfinite(s).all(1) & np.isfinite(v).all(axis=(0, 2))
    print(f"pixels {len(y)}, finite in every view {ok.sum()}", flush=True)
    s, v, y = s[ok], v[:, ok], y[ok]
    mean, std = s.mean(0), s.std(0) + 1e-3
    x_full = (s - mean) / std
    x_views = np.concatenate([x_full, *((v - mean) / std)])
    y_views = np.tile(y, 1 + len(v))
    seeds = [int(k) for k in args.seeds.split(",")]
    heads = {}
    for seed in seeds:
        heads[f"full{seed}"] = train_head(x_full, y, 0, seed=seed)
        heads[f"views{seed}"] = train_head(x_views, y_views, 0, seed=seed)
    for name in ("fuel_moisture:val", "eolearn:s2:val"):
        ds = load_dataset(name, cache_dir=args.cache_dir)
        sv = pixel_summaries(bundle, select_pixels(ds.observations, ds.pixel_index))
        xv = jnp.asarray(np.nan_to_num((sv - mean) / std))
        vectors = {"shipped": embed_pixels(bundle.embed, ds)}
        vectors |= {h: np.asarray(mlp(layers, xv)) for h, layers in heads.items()}
        draws, baselines, error = draws_of(ds, vectors)
        print(name, flush=True)
        for bk in draws["shipped"]:
            base, base_probe, base_err, ref = best_of(draws, baselines, bk, error)
            _, _, ship_err, ship = best_of(draws, ["shipped"], bk, error)
            d_ship = paired_stats(ship, ref, error=error)["diff_mean"]
            print(
                f"  {bk}: best baseline {base}/{base_probe} {base_err:.4f}; shipped "
                f"{ship_err:.4f} (d {d_ship:+.4f})",
                flush=True,
            )
            rows = []
            for seed in seeds:
                _, _, f_err, f = best_of(draws, [f"full{seed}"], bk, error)
                _, _, w_err, w = best_of(draws, [f"views{seed}"], bk, error)
                rows.append(
                    (
                        paired_stats(f, ref, error=error)["diff_mean"],
                        paired_stats(w, ref, error=error)["diff_mean"],
                        paired_stats(w, f, error=error)["diff_mean"],
                    )
                )
                print(
                    f"    seed {seed}: full {f_err:.4f} (d {rows[-1][0]:+.4f}) | views "
                    f"{w_err:.4f} (d {rows[-1][1]:+.4f}) | views - full {rows[-1][2]:+.4f}",
                    flush=True,
                )
            r = np.array(rows)
            print(
                f"    over seeds: full - baseline {r[:, 0].mean():+.4f} +- {r[:, 0].std(ddof=1):.4f}"
                f" | views - baseline {r[:, 1].mean():+.4f} +- {r[:, 1].std(ddof=1):.4f}"
                f" | views - full {r[:, 2].mean():+.4f} +- {r[:, 2].std(ddof=1):.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
