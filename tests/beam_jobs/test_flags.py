"""`earthembed <command> --help`: light imports, every default shown, one meaning per name."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from beam_jobs import cli, flags

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("apache_beam", "tensorflow", "jax")
# Checked in a fresh interpreter: the help of `cmd`, then which heavy packages got imported.
_PROBE = """
import sys
from beam_jobs import cli
rc = cli.main([sys.argv[1], "--help"])
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules))
sys.exit(rc)
"""


def _help_in_subprocess(cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), cmd],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("cmd", list(cli.JOBS))
def test_help_imports_no_heavy_package(cmd):
    proc = _help_in_subprocess(cmd)
    assert proc.returncode == 0, proc.stderr
    assert f"usage: earthembed {cmd} " in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1] == "HEAVY=", proc.stdout[-300:]


@pytest.mark.parametrize("cmd", list(flags.PARSERS))
def test_beam_job_help_is_stdlib_only(cmd):
    """flags.py imports no numpy either (directly or through schemas/ or simulation/)."""
    probe = (
        "import sys; from beam_jobs import flags; flags.PARSERS[sys.argv[1]]().format_help(); "
        "print(sorted(m for m in ('numpy', *sys.argv[2:]) if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, cmd, *HEAVY],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_help_through_the_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "beam_jobs.cli", "embed", "-h"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: earthembed embed ")
    assert "(default: 1024)" in proc.stdout  # --tile-size


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


@pytest.mark.parametrize("cmd", list(flags.PARSERS))
def test_every_default_is_shown(cmd):
    parser = flags.PARSERS[cmd]()
    squeezed = "".join(parser.format_help().split())  # wrapping may split a long default
    for action in _options(parser):
        assert action.help, f"{cmd} {action.option_strings[0]} has no help"
        if action.default is None or action.default is False:
            continue
        shown = "".join(f"(default: {action.default})".split())
        assert shown in squeezed, f"{cmd} {action.option_strings[0]}: {shown} not in its help"


def test_required_options_and_flags_show_no_default():
    text = flags.embed_parser().format_help()
    assert "(default: None)" not in text and "(default: False)" not in text


def test_cli_help_uses_the_parser_the_job_runs_with():
    from beam_jobs import (
        build_training_data,
        change,
        classify,
        cloud,
        cluster,
        embed,
        embed_points,
        inspect_tfrecords,
        quicklook,
        sample,
        similarity,
        simulate,
    )

    modules = {
        "simulate": simulate,
        "build-training-data": build_training_data,
        "inspect-tfrecords": inspect_tfrecords,
        "embed": embed,
        "embed-points": embed_points,
        "cloud": cloud,
        "sample": sample,
        "similarity": similarity,
        "change": change,
        "cluster": cluster,
        "classify": classify,
        "quicklook": quicklook,
    }
    for cmd, module in modules.items():
        module_name, func = cli.JOBS[cmd].parser.split(":")
        assert module_name == "beam_jobs.flags"
        assert getattr(flags, func) is flags.PARSERS[cmd] is module.build_parser, cmd


# An option name shared by several jobs parses the same way in each.
SHARED = ("--stac", "--stac-api", "--collections", "--observations", "--bbox", "--aoi", "--year",
          "--years", "--period", "--model", "--out", "--batch-size", "--seed", "--sources",
          "--tile-size", "--verbose", "--overwrite", "--bf16")  # fmt: skip


def test_region_means_the_cloud_region_on_every_job():
    """--region is Google Cloud's (cloud's own option, Beam's elsewhere); simulate's is --sim-region."""
    for cmd, build in flags.PARSERS.items():
        strings = {s for a in _options(build()) for s in a.option_strings}
        assert ("--region" in strings) == (cmd == "cloud"), cmd
    (sim_region,) = [
        a for a in _options(flags.simulate_parser()) if "--sim-region" in a.option_strings
    ]
    assert (sim_region.dest, sim_region.default, sim_region.choices) == (
        "region",
        "demo",
        ("demo",),
    )


@pytest.mark.parametrize("name", SHARED)
def test_a_shared_option_parses_alike_in_every_job(name):
    seen = []
    for cmd, build in flags.PARSERS.items():
        if cmd == "cloud":  # its options configure gcloud; job parameters pass through
            continue
        for action in _options(build()):
            if name in action.option_strings:
                seen.append((cmd, type(action).__name__, action.type, action.dest, action.nargs))
    assert len(seen) >= 2, f"{name} is not shared: {seen}"
    assert len({s[1:] for s in seen}) == 1, seen


def test_model_default_is_the_shipped_bundle():
    for cmd in ("embed", "embed-points"):
        assert flags.PARSERS[cmd]().get_default("model") == str(REPO / "model" / "weights" / "tiny")


def test_mirrored_defaults_match_their_owners():
    import simulation
    from beam_jobs import inference
    from schemas import examples

    assert flags.SIM_REGIONS == tuple(simulation.REGIONS)
    assert flags.SIM_BIOMES == tuple(sorted(simulation.classes.BIOMES))
    assert flags.SIM_SOURCES == tuple(simulation.ALL_SOURCES)
    assert flags.SIM_TILE_SIZE == simulation.world.DEFAULT_TILE_SIZE
    assert flags.EXAMPLE_PATCH_SIZE == examples.DEFAULT_PATCH_SIZE
    assert flags.EXAMPLE_MAX_FRAMES == examples.DEFAULT_MAX_FRAMES
    assert inference.DEFAULT_BATCH_SIZE == flags.DEFAULT_CHIP_BATCH_SIZE == 2
