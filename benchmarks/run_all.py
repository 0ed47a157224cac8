"""`make bench`: run the registered benchmarks and rewrite their sections of RESULTS.md.

Runbook:

    python -m benchmarks.run_all                          # everything (what `make bench` runs)
    python -m benchmarks.run_all --only quality_eolearn,speed
    python -m benchmarks.run_all --out-root /tmp/q --reuse   # render existing results there

RESULTS.md holds one section per benchmark between `<!-- bench:NAME -->` and
`<!-- /bench:NAME -->`; a run rewrites only the sections it ran, so `--only` leaves the others
as they were. Every figure is printed with the command that produced it, the date and the
machine. The quality benchmarks evaluate the shipped bundle (model/weights/tiny) against the
designed-feature baselines and write their full report (JSON, markdown tables, PNG) under
`--out-root`; the embed benchmark simulates the demo region there (unless `--embed-stac` names
a catalog) and runs benchmarks/embed_speed.py; the cost benchmark prices the embed
benchmark's measured end-to-end rate (benchmarks/cost.py; it needs its embed_speed.json). With `--reuse`, a results.json or
embed_speed.json made by the same command is rendered instead of rerun. A benchmark that
fails gets its error in its section, and the run exits non-zero. On 2 CPU cores a full run takes about 45 minutes (each simulated quality
region about 11, the embed benchmark about 5, the index benchmark about 5).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from benchmarks import cost, embed_speed, index_bench, speed
from evaluation import evaluate, report

log = logging.getLogger(__name__)

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = """# Benchmark results

Regenerate with `make bench` (`python -m benchmarks.run_all`). Each section below is
rewritten by benchmarks/run_all.py and carries the command, date and machine of its figures.
Quality protocol: evaluation/__init__.py (module docstring); balanced accuracy on spatially
held-out pixels, mean ± std over class-balanced draws (`max`: the whole train pool, once).
"""


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A registered benchmark: `run(options)` -> its markdown section body."""

    name: str
    title: str
    run: Callable[[argparse.Namespace], str]


# ---------------------------------------------------------------------------------- sections


def _marker(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def update_results(text: str, sections: Mapping[str, str]) -> str:
    """Replace (or append) each named section of a RESULTS.md text; others stay as they are.

    Args:
        text: the current file content ('' for a new file).
        sections: {name: markdown body}.

    Returns:
        The new content.
    """
    out = text if text.strip() else HEADER
    for name, body in sections.items():
        begin, end = _marker(name)
        block = f"{begin}\n{body.strip()}\n{end}"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        m = pattern.search(out)
        if m:
            out = out[: m.start()] + block + out[m.end() :]
        else:
            out = out.rstrip("\n") + "\n\n" + block + "\n"
    return out if out.endswith("\n") else out + "\n"


def quality_markdown(results: Mapping, title: str) -> str:
    """A RESULTS.md section from one results.json: baseline accuracy per probe and budget."""
    budgets = list(results["best_baseline"])
    timings = results.get("timings", {})
    wall = timings.get("wall_s")
    wall_text = f"; wall time {wall:.0f} s" if wall is not None else ""
    lines = [
        f"## {title}",
        "",
        f"Command: `{results.get('command', '?')}`",
        "",
        f"Date {results.get('date', '?')}; machine: {results.get('machine', '?')}{wall_text}.",
        "",
    ]
    classes = results.get("classes", {})
    if classes:
        lines += [
            "Classes (train pool / test px): "
            + ", ".join(
                f"{n} ({results['n_train_pool'][c]} / {results['n_test'][c]})"
                for c, n in classes.items()
            ),
            "",
        ]
    lines += [
        f"Balanced accuracy, mean ± std over {results.get('repeats', '?')} draws:",
        "",
        "| features | probe | " + " | ".join(f"{b} / class" for b in budgets) + " |",
        "|---|---" + "|---" * len(budgets) + "|",
    ]
    rows = dict(results["features"])
    if "embedding" in results:
        rows["embedding"] = results["embedding"]
    for name, entry in rows.items():
        for probe in entry[budgets[0]]:
            cells = [report._fmt(entry[b][probe]) for b in budgets]
            lines.append(f"| {name} | {probe} | " + " | ".join(cells) + " |")
    best = ", ".join(
        f"{b}: {v['name']} / {v.get('probe', '')} {v['balanced_accuracy']:.3f}"
        for b, v in results["best_baseline"].items()
    )
    lines += ["", f"Best baseline: {best}."]
    if "embedding" in results:
        emb = results["embedding"]
        top = ", ".join(f"{b}: {max(emb[b].values(), key=lambda v: v[0])[0]:.3f}" for b in budgets)
        lines.append(f"Embedding ({results.get('embedder', '?')}), best probe: {top}.")
    if "error_reduction" in results:
        er = ", ".join(
            f"{b}: {'n/a' if v is None else f'{v:.1%}'}"
            for b, v in results["error_reduction"].items()
        )
        lines.append(f"Error reduction of the embedding vs the best baseline: {er}.")
    return "\n".join(lines)


SHIPPED_BUNDLE = "model/weights/tiny"


def _quality(dataset: str, subdir: str, title: str) -> Callable[[argparse.Namespace], str]:
    def run(opts: argparse.Namespace) -> str:
        out = Path(opts.out_root) / subdir
        cache = opts.cache_dir or str(Path(opts.out_root) / "cache")
        argv = ["--dataset", dataset, "--embedder", opts.embedder, "--out", str(out)]
        argv += ["--cache-dir", cache]
        if opts.repeats != 30:
            argv += ["--repeats", str(opts.repeats)]
        command = "earthembed evaluate " + shlex.join(argv)
        path = out / "results.json"
        if not (
            opts.reuse and path.exists() and json.loads(path.read_text()).get("command") == command
        ):
            evaluate.run(argv)
        return quality_markdown(json.loads(path.read_text()), title)

    return run


def _speed(opts: argparse.Namespace) -> str:
    timings = [bench(runs=opts.speed_runs) for bench in speed.SPEED_BENCHMARKS.values()]
    return "\n".join(
        [
            "## Speed",
            "",
            f"Command: `python -m benchmarks.speed --runs {opts.speed_runs}` (median of the runs "
            "after one warm-up call)",
            "",
            f"Date {dt.date.today().isoformat()}; machine: {report.machine_description()}.",
            "",
            speed.timings_markdown(timings),
        ]
    )


def _embed(opts: argparse.Namespace) -> str:
    root = Path(opts.out_root)
    stac = opts.embed_stac
    if stac is None:  # the demo region, 2023, as the embed benchmark's runbook simulates it
        sim = root / "emb_demo_sim"
        stac = str(sim / "catalog.json")
        if not Path(stac).exists():
            from beam_jobs import simulate

            simulate.run(
                ["--out", str(sim), "--sim-region", "demo", "--years", "2023", "--seed", "0"]
            )
    work = opts.embed_work or str(root / "embed_speed")
    argv = ["--stac", stac, "--work", work]
    command = "python -m benchmarks.embed_speed " + " ".join(argv)
    path = Path(work) / "embed_speed.json"
    if not (
        opts.reuse and path.exists() and json.loads(path.read_text()).get("command") == command
    ):
        embed_speed.run(argv)
    return embed_speed.markdown(json.loads(path.read_text()))


def _index(opts: argparse.Namespace) -> str:
    path = Path(opts.out_root) / "index_bench.json"
    argv = ["--out", str(path)]
    command = "python -m benchmarks.index_bench " + " ".join(argv)
    if not (
        opts.reuse and path.exists() and json.loads(path.read_text()).get("command") == command
    ):
        index_bench.run(argv)
    return index_bench.markdown(json.loads(path.read_text()))


def _cost(opts: argparse.Namespace) -> str:
    """The cost table from the embed benchmark's measured end-to-end rate (run it first)."""
    work = opts.embed_work or str(Path(opts.out_root) / "embed_speed")
    path = Path(work) / "embed_speed.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no embed benchmark result to price; run `--only embed,cost` "
            "(or pass the same --embed-work / --out-root as the embed run)"
        )
    rate, vcpus, what = cost.from_embed_speed(json.loads(path.read_text()))
    return cost.markdown(
        rate, vcpus, what=what, command=f"python -m benchmarks.cost --from-json {path}"
    )


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "quality_tropical",
            "Quality: simulated tropical region",
            _quality(
                "sim:101:tropical",
                "sim_101_tropical",
                "Quality: simulated region `sim:101:tropical`",
            ),
        ),
        Benchmark(
            "quality_temperate",
            "Quality: simulated temperate region",
            _quality(
                "sim:202:temperate",
                "sim_202_temperate",
                "Quality: simulated region `sim:202:temperate`",
            ),
        ),
        Benchmark(
            "quality_eolearn",
            "Quality: eo-learn Slovenia",
            _quality("eolearn", "eolearn", "Quality: real patch `eolearn` (Slovenia)"),
        ),
        Benchmark("speed", "Speed", _speed),
        Benchmark("embed", "Embed: end-to-end throughput against the bare model", _embed),
        Benchmark("index", "Index: ANN recall, build, size, latency; planet projection", _index),
        Benchmark("cost", "Cost per area", _cost),
    )
}


def run(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and rewrite their sections of RESULTS.md."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--only", default="", help=f"comma-separated subset of {list(BENCHMARKS)}")
    p.add_argument("--results", default=str(RESULTS_PATH), help="the RESULTS.md to update")
    p.add_argument("--out-root", default="out/bench", help="where quality reports are written")
    p.add_argument("--reuse", action="store_true", help="render matching existing results.json")
    p.add_argument("--repeats", type=int, default=30, help="quality draws per budget")
    p.add_argument("--embedder", default=SHIPPED_BUNDLE, help="what the quality runs evaluate")
    p.add_argument("--cache-dir", default=None, help="simulated regions (default OUT_ROOT/cache)")
    p.add_argument("--speed-runs", type=int, default=5, help="timed runs per speed benchmark")
    p.add_argument("--embed-stac", default=None, help="catalog for the embed benchmark")
    p.add_argument("--embed-work", default=None, help="its work folder (OUT_ROOT/embed_speed)")
    opts = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    names = [n.strip() for n in opts.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmarks {sorted(unknown)}; known {list(BENCHMARKS)}")
    sections, failed = {}, []
    for name in names:
        bench = BENCHMARKS[name]
        t0 = time.perf_counter()
        try:
            sections[name] = bench.run(opts)
        except Exception as e:  # recorded in its section and in the exit code, not swallowed
            log.exception("benchmark %s failed", name)
            sections[name] = f"## {bench.title}\n\nFailed ({dt.date.today().isoformat()}): {e!r}"
            failed.append(name)
        log.info("%s: %.1f s", name, time.perf_counter() - t0)
    path = Path(opts.results)
    path.write_text(update_results(path.read_text() if path.exists() else "", sections))
    print(f"updated {path}: {', '.join(sections)}" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    from beam_jobs.cli import reexec_with_malloc_tunables

    reexec_with_malloc_tunables()  # the malloc `earthembed` runs its jobs with
    sys.exit(run())
