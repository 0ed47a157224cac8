"""Study script (docs/experiments/2026-12-07-view-contrastive-summary.md; not product code).

A contrastive head on the shipped bundle's per-pixel summary s (the 162 features its read-out
reads): an MLP s -> 64-d unit vector trained to tell a pixel's augmented views apart from
other pixels' (InfoNCE, pixel identity), on unlabelled real pixels only (WorldCereal Belgium,
the fuel-moisture training pool of `fuel_moisture:val`, the fit side of `eolearn:s2:val`).
Probed as `earthembed evaluate` probes, on the two VALIDATION splits only:

    .venv/bin/python docs/experiments/scripts/view_contrastive.py --cache-dir C [key=value ...]

key=value overrides CFG below (e.g. psrc=0 pwin=0 pfr=0.3: light augmentation).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from beam_jobs.io.realdata import read_worldcereal
from benchmarks.deep_share import nonlinear_share, pixel_summaries
from evaluation import DEFAULT_BUDGETS, PROBES, REGRESSION_PROBES
from evaluation.baselines import select_pixels
from evaluation.datasets import REALDATA_DIR, load_dataset
from evaluation.evaluate import _baseline_sets, embed_pixels
from evaluation.paired import accuracy_error, best_entry, identity_error, paired_stats
from evaluation.probes import parse_budgets, probe_feature_sets
from evaluation.regression import probe_regression_sets
from model import load_bundle

CFG = dict(
    views=6,  # augmented views per pixel (the full view is one more)
    hidden=512,
    depth=2,
    steps=3000,
    batch=512,
    lr=1e-3,
    temp=0.1,
    wd=1e-4,
    seed=0,
    psrc=0.3,  # probability of dropping a source from a view
    pwin=0.5,  # probability of a random 3-12 month window
    pfr=0.5,  # per-frame drop probability drawn from U(0, pfr) per view
)


MONTH_MS = 30.4 * 86400e3


def augment(p, rng, cfg):
    """One view of a point set: sources dropped, a random window, frames dropped per pixel;
    with cfg["pcomp"] (label_views.py; absent here, and then no random number is drawn for
    it) the view is one frame a month with that probability: each pixel keeps the first
    valid frame of every 30.4-day bin."""
    src = dict(p.sources)
    timed = [k for k in src if src[k].num_frames > 1]
    for k in list(src):
        others = [t for t in timed if t in src and t != k]
        if rng.random() < cfg["psrc"] and (k not in timed or others):
            del src[k]
    span = None
    timed = [k for k in src if src[k].num_frames > 1]
    if timed and rng.random() < cfg["pwin"]:
        lo = min(src[k].times_ms.min() for k in timed)
        hi = max(src[k].times_ms.max() for k in timed)
        length = int(rng.integers(3, 13)) * MONTH_MS
        t0 = lo + rng.random() * max(0.0, hi - lo - length)
        span = (t0, t0 + length)
    monthly = cfg.get("pcomp", 0.0) > 0 and rng.random() < cfg["pcomp"]
    out = {}
    for k, v in src.items():
        valid = v.valid.copy()
        if v.num_frames > 1:
            valid &= rng.random(valid.shape) > rng.uniform(0, cfg["pfr"])
            if span is not None:
                valid &= ((v.times_ms >= span[0]) & (v.times_ms < span[1]))[:, None, None]
            if monthly:
                bins = np.floor((v.times_ms - v.times_ms.min()) / MONTH_MS).astype(int)
                for b in np.unique(bins):
                    idx = np.flatnonzero(bins == b)
                    valid[idx] &= np.cumsum(valid[idx], axis=0) == 1
        values = np.where(valid[..., None], v.values, np.nan)
        out[k] = dataclasses.replace(v, valid=valid, values=values)
    return dataclasses.replace(p, sources=out)


def mlp_init(key, sizes):
    layers = []
    for a, o in zip(sizes[:-1], sizes[1:], strict=True):
        key, k = jax.random.split(key)
        layers.append({"w": jax.random.normal(k, (a, o)) * np.sqrt(2.0 / a), "b": jnp.zeros(o)})
    return layers


def mlp(layers, x):
    for layer in layers[:-1]:
        x = jax.nn.gelu(x @ layer["w"] + layer["b"])
        x = (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-5)
    x = x @ layers[-1]["w"] + layers[-1]["b"]
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def draws_of(ds, vectors, repeats=30, seed=0):
    """evaluate's probes on the designed baselines and `vectors`: ({name: {budget: {probe:
    [metric per draw]}}}, the baselines' names, the metric's error function)."""
    sets = _baseline_sets(ds, seed)
    baselines = list(sets)
    sets.update(vectors)
    if ds.is_regression:
        budgets = parse_budgets(DEFAULT_BUDGETS["regression"])
        raw = probe_regression_sets(
            sets, ds.targets, ds.is_test, budgets, repeats, seed, REGRESSION_PROBES
        )
        draws = {
            n: {bk: {p: v["mae"] for p, v in e.items()} for bk, e in d.items()}
            for n, d in raw.items()
        }
        return draws, baselines, identity_error
    budgets = parse_budgets(DEFAULT_BUDGETS["classification"])
    draws = {}
    probe_feature_sets(sets, ds.labels, ds.is_test, budgets, repeats, seed, PROBES, None, draws)
    return draws, baselines, accuracy_error


def best_of(draws, names, bk, error):
    """The best of `names` (feature sets) and their probes at budget `bk`: (name, probe, mean
    error, its metric per draw)."""
    name, p, err = best_entry({n: draws[n][bk] for n in names}, error=error)
    return name, p, err, draws[name][bk][p]


def probe(ds, vectors, repeats=30, seed=0):
    """Each vector set against the best designed baseline per budget (evaluate's protocol)."""
    draws, baselines, error = draws_of(ds, vectors, repeats, seed)
    for bk in draws[next(iter(vectors))]:
        base, base_probe, base_err, ref = best_of(draws, baselines, bk, error)
        cells = [f"{bk}: best baseline {base}/{base_probe} error {base_err:.4f}"]
        for v in vectors:
            _, p, err, mine = best_of(draws, [v], bk, error)
            st = paired_stats(mine, ref, error=error)
            lo, hi = st["diff_ci95"]
            cells.append(f"{v}/{p} {err:.4f} d={st['diff_mean']:+.4f} ({lo:+.4f}..{hi:+.4f})")
        print("  " + " | ".join(cells), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", default="model/weights/tiny")
    ap.add_argument("--cache-dir", default="out/eval_cache")
    ap.add_argument("overrides", nargs="*", help="key=value for CFG")
    args = ap.parse_args()
    cfg = dict(CFG)
    for a in args.overrides:
        k, v = a.split("=")
        cfg[k] = type(cfg[k])(v)
    print(cfg, flush=True)
    rng = np.random.default_rng(cfg["seed"])
    bundle = load_bundle(args.bundle)
    fuel = load_dataset("fuel_moisture:val", cache_dir=args.cache_dir)
    eo = load_dataset("eolearn:s2:val", cache_dir=args.cache_dir)

    def points(ds, rows=None):
        return select_pixels(
            ds.observations, ds.pixel_index[rows] if rows is not None else ds.pixel_index
        )

    wc = read_worldcereal(Path(REALDATA_DIR) / "worldcereal_belgium_2021" / "inputs.nc")
    pools = {
        "worldcereal": select_pixels(wc, np.arange(wc.spatial_shape[0] * wc.spatial_shape[1])),
        "fuel_moisture:val train": points(fuel, np.flatnonzero(~fuel.is_test)),
        "eolearn:s2:val fit": points(eo, np.flatnonzero(~eo.is_test)),
    }
    t = time.time()
    full, views = [], []
    for name, p in pools.items():
        n = p.spatial_shape[0]
        s = pixel_summaries(bundle, p)
        v = np.zeros((cfg["views"], n, s.shape[1]), np.float32)
        for i in range(cfg["views"]):
            for c0 in range(0, n, 128):
                rows = np.arange(c0, min(n, c0 + 128))
                v[i, rows] = pixel_summaries(bundle, augment(select_pixels(p, rows), rng, cfg))
        full.append(s)
        views.append(v)
        print(f"{name}: {n} px, views after {time.time() - t:.0f} s", flush=True)
    full = np.concatenate(full)
    views = np.concatenate([full[None], np.concatenate(views, axis=1)])
    ok = np.isfinite(views).all(axis=(0, 2))
    views, full = views[:, ok], full[ok]
    mean, std = full.mean(0), full.std(0) + 1e-3
    x = (views - mean) / std

    layers = mlp_init(
        jax.random.PRNGKey(cfg["seed"]), [x.shape[-1]] + [cfg["hidden"]] * cfg["depth"] + [64]
    )
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg["lr"], 100, cfg["steps"])
    opt = optax.adamw(sched, weight_decay=cfg["wd"])
    state = opt.init(layers)

    def loss(layers, a, b):
        logits = mlp(layers, a) @ mlp(layers, b).T / cfg["temp"]
        lab = jnp.arange(a.shape[0])
        xent = optax.softmax_cross_entropy_with_integer_labels
        return 0.5 * (xent(logits, lab).mean() + xent(logits.T, lab).mean())

    @jax.jit
    def step(layers, state, a, b):
        value, grad = jax.value_and_grad(loss)(layers, a, b)
        updates, state = opt.update(grad, state, layers)
        return optax.apply_updates(layers, updates), state, value

    nv, n = x.shape[:2]
    print(f"training pixels {n}, views {nv}", flush=True)
    for i in range(cfg["steps"]):
        rows = rng.choice(n, cfg["batch"], replace=False)
        va, vb = rng.choice(nv, 2, replace=False)
        layers, state, value = step(
            layers, state, jnp.asarray(x[va, rows]), jnp.asarray(x[vb, rows])
        )
        if i % 500 == 0 or i == cfg["steps"] - 1:
            print(f"step {i} loss {float(value):.3f}", flush=True)

    for name, ds in (("fuel_moisture:val", fuel), ("eolearn:s2:val", eo)):
        s = pixel_summaries(bundle, points(ds))
        z = np.asarray(mlp(layers, jnp.asarray(np.nan_to_num((s - mean) / std))))
        mu = embed_pixels(bundle.embed, ds)
        share = nonlinear_share(z, np.nan_to_num(s))
        print(f"{name}: nonlinear share of the head's vectors {share:.3f}", flush=True)
        probe(ds, {"shipped": mu, "head": z, "concat": np.concatenate([mu, z], 1) / np.sqrt(2)})


if __name__ == "__main__":
    main()
