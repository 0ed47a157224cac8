"""`earthembed <job> ...`: dispatch to each job's `run(argv)`.

Modules are imported lazily so `earthembed --help` and light jobs start fast.
"""

from __future__ import annotations

import importlib
import sys

# command -> module with a `run(argv=None)` function.
JOBS: dict[str, tuple[str, str]] = {
    "simulate": ("beam_jobs.simulate", "simulate a multi-sensor region as a STAC catalog of COGs"),
    "build-training-data": (
        "beam_jobs.build_training_data",
        "STAC catalog or point table -> sharded TFRecords + tf.Transform stats",
    ),
    "inspect-tfrecords": (
        "beam_jobs.inspect_tfrecords",
        "counts, ranges and a PNG strip of TFRecords",
    ),
    "evaluate": (
        "evaluation.evaluate",
        "few-shot probes: embeddings vs designed-feature baselines",
    ),
    "train": ("model.main", "train the Flax embedding model"),
    "export": ("model.export", "export a trained workdir as a model bundle"),
    "embed": ("beam_jobs.embed", "AOI + year -> int8 COG + GeoParquet + STAC embedding tiles"),
    "embed-points": ("beam_jobs.embed_points", "point observation table -> GeoParquet embeddings"),
    "cloud": ("beam_jobs.cloud", "build and run the Dataflow flex templates (gcloud)"),
}


def _usage() -> str:
    lines = ["usage: earthembed <command> [options]", "", "commands:"]
    for name, (_, help_) in JOBS.items():
        lines.append(f"  {name:<22}{help_}")
    lines.append("")
    lines.append("`earthembed <command> --help` lists a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in JOBS:
        print(f"earthembed: unknown command {cmd!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _ = JOBS[cmd]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            print(
                f"earthembed: command {cmd!r} is not available in this build ({module_name} missing)",
                file=sys.stderr,
            )
            return 2
        raise
    result = module.run(rest)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
