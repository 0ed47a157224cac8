"""How much of a bundle's embedding the encoder makes: the deep-path share of mu's variance.

    python -m benchmarks.deep_share --bundle model/weights/tiny --datasets eolearn:s2,fuel_moisture \
        --cache-dir /tmp/yard/cache --out /tmp/deep_share.json [--ablation]

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

With `--ablation`, each data set is also probed as `earthembed evaluate` probes it (same
budgets, draws, probes and split; every feature set on the same draws) with three versions of
the embedding: `both` (the bundle as it is), `summary_only` (the deep gate at 0: normalize(W s
+ b), the deep path removed) and `deep_only` (the knockout above: normalize(deep), the
summary removed), beside the designed baselines. Per budget: each version's best probe, its
error, the paired difference against the best baseline and against `both` (mean, sd, 95%
interval over the draws): what removing each path costs.
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


def summary_only(bundle):
    """The same bundle with its deep gate at 0: mu = normalize(W s + b), the deep path gone."""
    import jax

    from model.bundle import Bundle

    params = jax.tree_util.tree_map(np.array, bundle.params)
    head = params.get("summarizer", {})
    if "deep_gate" not in head:
        raise ValueError(f"bundle {bundle.version} has no deep gate (no summary read-out)")
    head["deep_gate"] = np.zeros_like(head["deep_gate"])
    return Bundle(bundle.path, bundle.meta, bundle.config, bundle.stats, params)


VERSIONS = ("both", "summary_only", "deep_only")


def ablation(dataset, vectors: dict[str, np.ndarray], *, repeats: int = 30, seed: int = 0) -> dict:
    """The three versions of the embedding (`versions`) and the designed baselines probed on
    the same draws (evaluate's budgets and probes); per budget key: {version: {"probe",
    "error", "vs_baseline", "vs_both"}} and the best baseline's {"name", "probe", "error"}
    (error: MAE, or 1 - balanced accuracy)."""
    from evaluation import DEFAULT_BUDGETS, PROBES, REGRESSION_PROBES
    from evaluation.evaluate import _baseline_sets
    from evaluation.paired import accuracy_error, best_entry, identity_error, paired_stats
    from evaluation.probes import parse_budgets, probe_feature_sets
    from evaluation.regression import probe_regression_sets

    sets = _baseline_sets(dataset, seed)
    baselines = list(sets)
    sets.update({v: vectors[v] for v in VERSIONS})
    if dataset.is_regression:
        budgets = parse_budgets(DEFAULT_BUDGETS["regression"])
        raw = probe_regression_sets(
            sets, dataset.targets, dataset.is_test, budgets, repeats, seed, REGRESSION_PROBES
        )
        draws = {n: {bk: {p: v["mae"] for p, v in e.items()} for bk, e in d.items()}
                 for n, d in raw.items()}  # fmt: skip
        error = identity_error
    else:
        budgets = parse_budgets(DEFAULT_BUDGETS["classification"])
        draws = {}
        probe_feature_sets(
            sets, dataset.labels, dataset.is_test, budgets, repeats, seed, PROBES, None, draws
        )
        error = accuracy_error
    out = {}
    for bk in draws["both"]:
        base, base_probe, base_err = best_entry({n: draws[n][bk] for n in baselines}, error=error)
        ref = draws[base][bk][base_probe]
        row = {"best_baseline": {"name": base, "probe": base_probe, "error": base_err}}
        picks = {v: best_entry({v: draws[v][bk]}, error=error) for v in VERSIONS}
        both = draws["both"][bk][picks["both"][1]]
        for v, (_, probe, err) in picks.items():
            mine = draws[v][bk][probe]
            row[v] = {
                "probe": probe,
                "error": err,
                "vs_baseline": paired_stats(mine, ref, error=error),
                "vs_both": paired_stats(mine, both, error=error),
            }
        out[bk] = row
    return out


def ablation_markdown(name: str, table: dict, regression: bool) -> str:
    """One data set's ablation as a markdown table (differences in the metric's own sign:
    MAE, or balanced accuracy)."""
    metric = "MAE" if regression else "balanced accuracy"
    lines = [
        f"#### {name} ({metric}; differences: version minus the other, mean and 95% interval)",
        "",
        "| budget | best baseline | version | probe | " + metric + " | vs best baseline | "
        "vs both |",
        "|---|---|---|---|---|---|---|",
    ]

    def fmt(stats: dict) -> str:
        lo, hi = stats["diff_ci95"]
        return f"{stats['diff_mean']:+.3f} ({lo:+.3f} .. {hi:+.3f})"

    for bk, row in table.items():
        b = row["best_baseline"]
        value = b["error"] if regression else 1.0 - b["error"]
        base = f"{b['name']} {b['probe']} {value:.3f}"
        for v in VERSIONS:
            r = row[v]
            value = r["error"] if regression else 1.0 - r["error"]
            vs_both = "" if v == "both" else fmt(r["vs_both"])
            lines.append(
                f"| {bk} | {base} | {v} | {r['probe']} | {value:.3f} | "
                f"{fmt(r['vs_baseline'])} | {vs_both} |"
            )
            base = ""
    return "\n".join(lines) + "\n"


def versions(bundle, dataset, names: Sequence[str] = VERSIONS) -> dict[str, np.ndarray]:
    """{version: (N, D) vectors of the data set's labelled pixels} (VERSIONS)."""
    from evaluation.evaluate import embed_pixels

    make = {"both": lambda b: b, "summary_only": summary_only, "deep_only": knockout}
    return {n: embed_pixels(make[n](bundle).embed, dataset) for n in names}


def measure(bundle, dataset, vectors: dict[str, np.ndarray] | None = None) -> dict:
    """nonlinear_share and knockout_r2 (module doc) of the data set's labelled pixels;
    `vectors` (`versions`: both and deep_only at least) when already embedded."""
    from evaluation.baselines import select_pixels

    vectors = vectors or versions(bundle, dataset, ("both", "deep_only"))
    mu = vectors["both"]
    pts = select_pixels(dataset.observations, dataset.pixel_index)
    s = pixel_summaries(bundle, pts)
    out = {"pixels": int(np.isfinite(mu).all(1).sum()), "nonlinear_share": nonlinear_share(mu, s)}
    out["knockout_r2"] = explained(mu, vectors["deep_only"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.deep_share", description=__doc__)
    p.add_argument("--bundle", required=True)
    p.add_argument("--datasets", default="eolearn:s2,fuel_moisture")
    p.add_argument("--cache-dir", default="out/eval_cache")
    p.add_argument("--out", help="JSON file for the figures (printed as well)")
    p.add_argument(
        "--ablation",
        action="store_true",
        help="also probe both / summary_only / deep_only beside the baselines (markdown to "
        "stdout, figures in the JSON)",
    )
    p.add_argument("--repeats", type=int, default=30, help="draws per numeric budget")
    args = p.parse_args(argv)
    from evaluation.datasets import load_dataset
    from model import load_bundle

    bundle = load_bundle(args.bundle)
    results = {"bundle": bundle.version, "datasets": {}}
    for spec in [s for s in args.datasets.split(",") if s]:
        ds = load_dataset(spec, cache_dir=args.cache_dir)
        vectors = versions(bundle, ds, VERSIONS if args.ablation else ("both", "deep_only"))
        results["datasets"][spec] = measure(bundle, ds, vectors)
        print(spec, json.dumps(results["datasets"][spec]), file=sys.stderr, flush=True)
        if args.ablation:
            table = ablation(ds, vectors, repeats=args.repeats)
            results["datasets"][spec]["ablation"] = table
            print(ablation_markdown(spec, table, ds.is_regression), flush=True)
    text = json.dumps(results, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
