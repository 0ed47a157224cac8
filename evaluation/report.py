"""The report of one evaluation: results.json, results.md, results.png, and where it ran."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from evaluation.probes import best_probe


def _fmt(entry: Sequence[float]) -> str:
    return f"{entry[0]:.3f} ± {entry[1]:.3f}"


def _paired_line(p: Mapping, metric: str, fmt: str = ".3f") -> str:
    """One paired statistic as a sentence: mean ± sd [95% interval], n, error reduction."""
    lo, hi = p["diff_ci95"]
    er = p.get("error_reduction_mean")
    er_txt = "n/a" if er is None else f"{er:.1%} ± {p['error_reduction_sd']:.1%}"
    return (
        f"{metric} embedding - best baseline, paired over {p['n']} draws: "
        f"{p['diff_mean']:+{fmt}} ± {p['diff_sd']:{fmt}} (95% interval of the mean "
        f"{lo:+{fmt}} .. {hi:+{fmt}}); error reduction per draw {er_txt}; embedding better "
        f"on {p['embedding_better']:.0%} of draws"
    )


def results_markdown(results: Mapping) -> str:
    """results.json -> markdown tables (one per budget) and the summary lines."""
    task = results.get("task", "classification")
    if task == "regression":
        return regression_markdown(results)
    if task == "change":
        return change_markdown(results)
    lines = [f"# Quality: `{results['dataset']}`", ""]
    if results.get("command"):
        lines += [f"Command: `{results['command']}`", ""]
    classes = results.get("classes", {})
    if classes:
        counts = ", ".join(
            f"{n} ({results['n_train_pool'].get(c, '?')} train / {results['n_test'].get(c, '?')} test)"
            for c, n in classes.items()
        )
        lines += [f"Classes: {counts}", ""]
    lines += [
        f"Balanced accuracy, mean ± std over {results.get('repeats', '?')} class-balanced draws "
        "(`max`: the whole train pool, drawn once).",
        "",
    ]
    rows = dict(results["features"])
    if "embedding" in results:
        rows["embedding"] = results["embedding"]
    probes = results.get("probes") or list(next(iter(next(iter(rows.values())).values())))
    for bk in results["best_baseline"]:
        lines += [f"## Budget {bk} per class", ""]
        lines += ["| features | " + " | ".join(probes) + " |", "|---" * (len(probes) + 1) + "|"]
        for name, entry in rows.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(entry[bk][p]) for p in probes) + " |")
        best = results["best_baseline"][bk]
        lines += [
            "",
            f"Best baseline: {best['name']} ({best.get('probe', '')}) {best['balanced_accuracy']:.3f}",
        ]
        if "error_reduction" in results:
            er = results["error_reduction"][bk]
            lines.append(
                f"Error reduction vs best baseline: {'n/a' if er is None else f'{er:.1%}'}"
            )
        if "paired" in results:
            p = results["paired"][bk]
            lines.append(
                f"Paired (embedding {p['embedding_probe']} vs {p['baseline']} "
                f"{p['baseline_probe']}): " + _paired_line(p, "balanced accuracy")
            )
        lines.append("")
    lines += _recall_markdown(results, classes)
    return "\n".join(lines)


def regression_markdown(results: Mapping) -> str:
    """A regression results.json -> MAE / R^2 tables per budget and the paired statistics."""
    lines = [f"# Quality: `{results['dataset']}` (regression)", ""]
    if results.get("command"):
        lines += [f"Command: `{results['command']}`", ""]
    t = results.get("target", {})
    lines += [
        f"{results['n_train_pool']} train pool / {results['n_test']} test samples; test target "
        f"mean {t.get('test_mean', float('nan')):.2f}, sd {t.get('test_sd', float('nan')):.2f}. "
        f"MAE and R^2, mean ± std over {results.get('repeats', '?')} random draws of the "
        "training pool (`max`: all of it, once).",
        "",
    ]
    rows = dict(results["features"])
    if "embedding" in results:
        rows["embedding"] = results["embedding"]
    probes = results["probes"]
    for bk, best in results["best_baseline"].items():
        lines += [f"## Budget {bk} training samples", ""]
        head = " | ".join(f"{p} MAE | {p} R^2" for p in probes)
        lines += [f"| features | {head} |", "|---" * (2 * len(probes) + 1) + "|"]
        for name, entry in rows.items():
            cells = " | ".join(
                f"{_fmt(entry[bk][p]['mae'])} | {_fmt(entry[bk][p]['r2'])}" for p in probes
            )
            lines.append(f"| {name} | {cells} |")
        lines += [
            "",
            f"Best baseline: {best['name']} ({best['probe']}) MAE {best['mae']:.3f}, "
            f"R^2 {best['r2']:.3f}",
        ]
        if "paired" in results:
            p = results["paired"][bk]
            lines.append(
                f"Error reduction (MAE) vs best baseline: {results['error_reduction'][bk]:.1%}"
            )
            lines.append(
                f"Paired (embedding {p['embedding_probe']} vs {p['baseline']} "
                f"{p['baseline_probe']}): " + _paired_line(p["mae"], "MAE")
            )
            lines.append("Paired R^2: " + _paired_line(p["r2"], "R^2"))
        lines.append("")
    return "\n".join(lines)


def change_markdown(results: Mapping) -> str:
    """A change results.json -> ROC AUC per score, per event type, and the paired statistics."""
    lines = [f"# Quality: `{results['dataset']}` (change detection)", ""]
    if results.get("command"):
        lines += [f"Command: `{results['command']}`", ""]
    lines += [
        f"{results['n_changed']} changed / {results['n_unchanged']} unchanged pixels; ROC AUC "
        f"of per-pixel change scores (bootstrap mean ± std over {results['bootstrap']} "
        "resamples).",
        "",
        "| scores | AUC | bootstrap |",
        "|---|---|---|",
    ]
    rows = dict(results["features"])
    if "embedding" in results:
        rows["embedding"] = results["embedding"]
    for name, e in rows.items():
        lines.append(f"| {name} | {e['auc']:.3f} | {_fmt(e['auc_bootstrap'])} |")
    best = results["best_baseline"]
    lines += ["", f"Best baseline: {best['name']} AUC {best['auc']:.3f}"]
    if "paired" in results:
        p = results["paired"]
        lines.append(
            f"Error reduction (1 - AUC) vs best baseline: {results['error_reduction']:.1%}"
        )
        lines.append("Paired: " + _paired_line(p, "AUC"))
    if results.get("per_event"):
        names = list(rows)
        lines += ["", "| event type | n | " + " | ".join(names) + " |"]
        lines.append("|---" * (len(names) + 2) + "|")
        for ev, e in results["per_event"].items():
            lines.append(f"| {ev} | {e['n']} | " + " | ".join(f"{e[k]:.3f}" for k in names) + " |")
    return "\n".join(lines + [""])


def _recall_markdown(results: Mapping, classes: Mapping[str, str]) -> list[str]:
    """The recall per class of the best baseline and of the embedding (each with its best
    probe) at every budget: where the balanced accuracy is lost."""
    recall = results.get("class_recall") or {}
    if "embedding" not in results or "embedding" not in recall:
        return []
    budgets = list(results["best_baseline"])
    cols = []
    for bk in budgets:
        best = results["best_baseline"][bk]
        probe = best_probe(results["embedding"][bk])[0]
        cols.append((recall[best["name"]][bk][best["probe"]], recall["embedding"][bk][probe]))
    lines = [
        "## Recall per class",
        "",
        "Best baseline / embedding, each with its best probe, mean over the draws.",
        "",
        "| class | " + " | ".join(budgets) + " |",
        "|---" * (len(budgets) + 1) + "|",
    ]
    for c, name in classes.items():
        cells = [" / ".join("-" if c not in r else f"{r[c]:.3f}" for r in pair) for pair in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_results(results: Mapping, path: str | Path) -> None:
    """Grouped bar chart: best-probe balanced accuracy (regression: MAE; change: AUC) per
    feature set and budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = results.get("task", "classification")
    if task != "classification":
        _plot_other(results, path, plt)
        return

    rows = dict(results["features"])
    if "embedding" in results:
        rows["embedding"] = results["embedding"]
    budgets = list(results["best_baseline"])
    fig, ax = plt.subplots(figsize=(3.4 + 1.6 * len(budgets), 3.6))
    width = 0.8 / len(rows)
    for i, (name, entry) in enumerate(rows.items()):
        means, stds = [], []
        for bk in budgets:
            probe, mean = best_probe(entry[bk])
            means.append(mean)
            stds.append(entry[bk][probe][1])
        x = np.arange(len(budgets)) + (i - (len(rows) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds, capsize=2, label=name)
    n_classes = max(1, len(results.get("classes", {})) or 1)
    ax.axhline(1.0 / n_classes, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(np.arange(len(budgets)), [f"{b} / class" for b in budgets])
    ax.set_ylim(0, 1)
    ax.set_ylabel("balanced accuracy (best probe)")
    ax.set_title(results["dataset"], fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_other(results: Mapping, path: str | Path, plt) -> None:
    """Bars of the best-probe MAE per budget (regression) or the AUC per score (change)."""
    rows = dict(results["features"])
    if "embedding" in results:
        rows["embedding"] = results["embedding"]
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    if results["task"] == "change":
        ax.bar(range(len(rows)), [e["auc"] for e in rows.values()])
        ax.set_xticks(range(len(rows)), list(rows), fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("ROC AUC")
    else:
        budgets = list(results["best_baseline"])
        width = 0.8 / len(rows)
        for i, (name, entry) in enumerate(rows.items()):
            best = [min(entry[bk].values(), key=lambda v: v["mae"][0]) for bk in budgets]
            x = np.arange(len(budgets)) + (i - (len(rows) - 1) / 2) * width
            ax.bar(x, [b["mae"][0] for b in best], width, yerr=[b["mae"][1] for b in best],
                   capsize=2, label=name)  # fmt: skip
        ax.set_xticks(np.arange(len(budgets)), [f"{b} samples" for b in budgets])
        ax.set_ylabel("MAE (best probe)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(results["dataset"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _json_safe(x):
    """NaN/inf -> None, numpy scalars -> Python, recursively (JSON has no NaN)."""
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def write_report(results: Mapping, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.md and results.png under out_dir.

    Returns:
        {"json": path, "md": path, "png": path}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(_json_safe(results), indent=2, allow_nan=False) + "\n")
    paths["md"].write_text(results_markdown(results) + "\n")
    plot_results(results, paths["png"])
    return paths


def machine_description() -> str:
    """'2 cores, AMD EPYC, Linux x86_64, Python 3.11.9': where a figure was measured."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    parts = [f"{cores} cores", cpu, f"{platform.system()} {platform.machine()}"]
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(p for p in parts if p)
