"""Study script (docs/experiments/2026-12-07-pretrain-rerun-and-seed.md; not product code): two bundles on the same data sets and the same draws, each against the best designed
baseline and against each other (paired), and how far apart their vectors are.

    .venv/bin/python docs/experiments/scripts/two_bundles.py --other B --cache-dir C \\
        [--shipped model/weights/tiny] [--datasets eolearn:s2:val,fuel_moisture:val,...]
"""

from __future__ import annotations

import argparse

import numpy as np

# The script beside this one: evaluate's probes, per draw.
from view_contrastive import best_of, draws_of

from evaluation.datasets import load_dataset
from evaluation.evaluate import embed_pixels
from evaluation.paired import paired_stats
from model import load_bundle


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shipped", default="model/weights/tiny")
    ap.add_argument("--other", required=True, help="the second bundle")
    ap.add_argument("--cache-dir", default="out/eval_cache")
    ap.add_argument(
        "--datasets", default="eolearn:s2:val,fuel_moisture:val,eolearn:s2,fuel_moisture"
    )
    args = ap.parse_args()
    bundles = {"shipped": load_bundle(args.shipped), "other": load_bundle(args.other)}
    print(" / ".join(f"{k} {b.meta['version']}" for k, b in bundles.items()), flush=True)
    for name in args.datasets.split(","):
        ds = load_dataset(name, cache_dir=args.cache_dir)
        vectors = {k: embed_pixels(b.embed, ds) for k, b in bundles.items()}
        a, b = vectors["shipped"], vectors["other"]
        ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
        cos = np.sum(a[ok] * b[ok], 1)
        print(
            f"{name}: cos(shipped, other) median {np.median(cos):.4f}, 5% quantile "
            f"{np.quantile(cos, 0.05):.4f}, min {cos.min():.4f} ({ok.sum()} pixels)",
            flush=True,
        )
        draws, baselines, error = draws_of(ds, vectors)
        for bk in draws["shipped"]:
            base, bp, berr, ref = best_of(draws, baselines, bk, error)
            cells, best = [], {}
            for v in vectors:
                _, p, err, best[v] = best_of(draws, [v], bk, error)
                st = paired_stats(best[v], ref, error=error)
                lo, hi = st["diff_ci95"]
                cells.append(f"{v}/{p} {err:.4f} d={st['diff_mean']:+.4f} ({lo:+.4f}..{hi:+.4f})")
            st = paired_stats(best["other"], best["shipped"], error=error)
            lo, hi = st["diff_ci95"]
            print(
                f"  {bk}: best baseline {base}/{bp} error {berr:.4f} | "
                + " | ".join(cells)
                + f" | other - shipped {st['diff_mean']:+.4f} ({lo:+.4f}..{hi:+.4f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
