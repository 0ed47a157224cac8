"""Study script (docs/experiments/2026-12-07-view-contrastive-summary.md, part 4; not product
code): does a NONLINEAR read-out of the pixel summary, trained on the simulator's land cover
as the shipped linear read-out is, transfer to real pixels as well?

Heads from the shipped bundle's pixel summary s (162 features) to a 64-d unit vector, trained
with the shipped label term (a softmax of z against a learned, normalized class table at
temperature 0.07) on the labelled pixels of the two pretraining regions (`sim:11:tropical`,
`sim:12:temperate`: the seeds, footprint and year whose land cover the shipped read-out
read), with the fine classes or a coarse grouping (forests one class, crops one class).
Probed as `earthembed evaluate` probes, on the VALIDATION splits only:

    .venv/bin/python docs/experiments/scripts/sim_label_heads.py --cache-dir C
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

# The script beside this one: the probe against the best baseline, the MLP.
from view_contrastive import mlp, mlp_init, probe

from benchmarks.deep_share import nonlinear_share, pixel_summaries
from evaluation.baselines import select_pixels
from evaluation.datasets import load_dataset
from evaluation.evaluate import embed_pixels
from model import load_bundle
from simulation import classes as C

COARSE = {c: c for c in range(C.NUM_CLASSES)} | {c: C.FORESTS[0] for c in C.FORESTS}
COARSE |= {c: C.CROPS[0] for c in C.CROPS}


def sim_pixels(bundle, cache_dir: str, out: Path):
    """(s, class ids) of every labelled pixel of the two pretraining regions (cached)."""
    if out.exists():
        z = np.load(out)
        return z["s"], z["y"]
    ss, ys = [], []
    for spec in ("sim:11:tropical", "sim:12:temperate"):
        t = time.time()
        ds = load_dataset(spec, cache_dir=cache_dir)
        ss.append(pixel_summaries(bundle, select_pixels(ds.observations, ds.pixel_index)))
        ys.append(ds.labels)
        print(f"{spec}: {len(ds.labels)} px in {time.time() - t:.0f} s", flush=True)
    s, y = np.concatenate(ss), np.concatenate(ys)
    np.savez(out, s=s, y=y)
    return s, y


def train_head(x, y, depth, seed=0, steps=3000, batch=512, lr=1e-3, temp=0.07):
    key = jax.random.PRNGKey(seed)
    layers = mlp_init(key, [x.shape[1]] + [512] * depth + [64])
    n_cls = int(y.max()) + 1
    params = {"mlp": layers, "table": jax.random.normal(key, (n_cls, 64)) * 0.02}
    opt = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, lr, 100, steps), weight_decay=1e-4)
    state = opt.init(params)

    def loss(params, xb, yb):
        z = mlp(params["mlp"], xb)
        table = params["table"] / jnp.linalg.norm(params["table"], axis=-1, keepdims=True)
        logits = z @ table.T / temp
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def step(params, state, xb, yb):
        value, grad = jax.value_and_grad(loss)(params, xb, yb)
        updates, state = opt.update(grad, state, params)
        return optax.apply_updates(params, updates), state, value

    rng = np.random.default_rng(seed)
    for i in range(steps):
        rows = rng.choice(len(y), batch, replace=False)
        params, state, value = step(params, state, jnp.asarray(x[rows]), jnp.asarray(y[rows]))
        if i % 1000 == 0 or i == steps - 1:
            print(f"  step {i} loss {float(value):.3f}", flush=True)
    return params["mlp"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", default="model/weights/tiny")
    ap.add_argument("--cache-dir", default="out/eval_cache")
    ap.add_argument("--seed", type=int, default=0, help="the heads' initialization and batches")
    args = ap.parse_args()
    bundle = load_bundle(args.bundle)
    s, y = sim_pixels(bundle, args.cache_dir, Path(args.cache_dir) / "sim_label_heads.npz")
    ok = np.isfinite(s).all(1)
    s, y = s[ok], y[ok]
    mean, std = s.mean(0), s.std(0) + 1e-3
    x = (s - mean) / std
    coarse = np.array([COARSE[int(c)] for c in y])
    print(f"training pixels {len(y)}; classes {np.unique(y).tolist()}", flush=True)
    heads = {}
    for name, depth, labels in (
        ("linear fine", 0, y),
        ("mlp fine", 2, y),
        ("linear coarse", 0, coarse),
        ("mlp coarse", 2, coarse),
    ):
        print(name, flush=True)
        heads[name] = train_head(x, labels, depth, seed=args.seed)
    vals = (
        ("fuel_moisture:val", load_dataset("fuel_moisture:val", cache_dir=args.cache_dir)),
        ("eolearn:s2:val", load_dataset("eolearn:s2:val", cache_dir=args.cache_dir)),
    )
    for name, ds in vals:
        sv = pixel_summaries(bundle, select_pixels(ds.observations, ds.pixel_index))
        xv = jnp.asarray(np.nan_to_num((sv - mean) / std))
        vectors = {"shipped": embed_pixels(bundle.embed, ds)}
        for h, layers in heads.items():
            vectors[h] = np.asarray(mlp(layers, xv))
            share = nonlinear_share(vectors[h], np.nan_to_num(sv))
            print(f"{name}: {h}: nonlinear share {share:.3f}", flush=True)
        probe(ds, vectors)


if __name__ == "__main__":
    main()
