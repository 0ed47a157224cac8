"""`make bench`: run the registered benchmarks and rewrite their sections of RESULTS.md.

Runbook:

    python -m benchmarks.run_all                          # everything (what `make bench` runs)
    python -m benchmarks.run_all --only quality_eolearn,speed
    python -m benchmarks.run_all --out-root /tmp --reuse  # render existing /tmp/eval_* results

RESULTS.md holds one section per benchmark between `<!-- bench:NAME -->` and
`<!-- /bench:NAME -->`; a run rewrites only the sections it ran, so `--only` leaves the others
as they were. Every figure is printed with the command that produced it, the date and the
machine. Quality benchmarks write their full report (JSON, markdown tables, PNG) under
`--out-root`; with `--reuse`, a results.json there made by the same command is rendered
instead of rerun. A benchmark whose code has not landed yet (the simulator, the model) gets a
"pending" section; one that fails gets its error, and the run exits non-zero.
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

from benchmarks import speed, storage
from evaluation import evaluate, report

log = logging.getLogger(__name__)

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = """# Benchmark results

Regenerate with `make bench` (`python -m benchmarks.run_all`). Each section below is
rewritten by benchmarks/run_all.py and carries the command, date and machine of its figures.
Quality protocol: evaluation/__init__.py (module docstring); balanced accuracy on spatially
held-out pixels, mean ± std over class-balanced draws (`max`: the whole train pool, once).
"""


class Pending(Exception):
    """A benchmark whose prerequisites have not landed yet."""


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
    if "error_reduction" in results:
        er = ", ".join(
            f"{b}: {'n/a' if v is None else f'{v:.1%}'}"
            for b, v in results["error_reduction"].items()
        )
        lines.append(f"Error reduction of the embedding vs the best baseline: {er}.")
    return "\n".join(lines)


def _quality(dataset: str, subdir: str, title: str) -> Callable[[argparse.Namespace], str]:
    def run(opts: argparse.Namespace) -> str:
        out = Path(opts.out_root) / subdir
        argv = ["--dataset", dataset, "--embedder", "baselines", "--out", str(out)]
        if opts.repeats != 30:
            argv += ["--repeats", str(opts.repeats)]
        command = "earthembed evaluate " + shlex.join(argv)
        path = out / "results.json"
        if not (
            opts.reuse and path.exists() and json.loads(path.read_text()).get("command") == command
        ):
            try:
                evaluate.run(argv)
            except ModuleNotFoundError as e:
                raise Pending(f"`{command}` needs {e.name}, which has not landed yet") from None
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


def _storage(opts: argparse.Namespace) -> str:
    if not opts.storage_dir:
        raise Pending(
            "no embedding outputs yet (the embed issue); then run "
            "`python -m benchmarks.run_all --only storage --storage-dir EMBED_OUT`. "
            "Reference: 64 B/px raw int8, 256 B/px float32."
        )
    figures = storage.measure([opts.storage_dir])
    return "\n".join(
        [
            "## Storage",
            "",
            f"Command: `python -m benchmarks.storage {opts.storage_dir}`",
            "",
            f"Date {dt.date.today().isoformat()}; machine: {report.machine_description()}.",
            "",
            storage.figures_markdown(figures),
        ]
    )


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "quality_sim",
            "Quality: simulated tropical region",
            _quality(
                "sim:101:tropical", "eval_sim", "Quality: simulated region `sim:101:tropical`"
            ),
        ),
        Benchmark(
            "quality_eolearn",
            "Quality: eo-learn Slovenia",
            _quality("eolearn", "eval_eo", "Quality: real patch `eolearn` (Slovenia)"),
        ),
        Benchmark("speed", "Speed", _speed),
        Benchmark("storage", "Storage", _storage),
    )
}


def run(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks and rewrite their sections of RESULTS.md."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all")
    p.add_argument("--only", default="", help=f"comma-separated subset of {list(BENCHMARKS)}")
    p.add_argument("--results", default=str(RESULTS_PATH), help="the RESULTS.md to update")
    p.add_argument("--out-root", default="out/bench", help="where quality reports are written")
    p.add_argument("--reuse", action="store_true", help="render matching existing results.json")
    p.add_argument("--repeats", type=int, default=30, help="quality draws per budget")
    p.add_argument("--speed-runs", type=int, default=5)
    p.add_argument("--storage-dir", default=None, help="embedding outputs to measure")
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
        except Pending as e:
            sections[name] = f"## {bench.title}\n\nPending ({dt.date.today().isoformat()}): {e}"
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
    sys.exit(run())
