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


def results_markdown(results: Mapping) -> str:
    """results.json -> markdown tables (one per budget) and the summary lines."""
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
        lines.append("")
    lines += _recall_markdown(results, classes)
    return "\n".join(lines)


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
    """Grouped bar chart: best-probe balanced accuracy per feature set and budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
