"""`earthembed` dispatch."""

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from beam_jobs import cli, flags


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.JOBS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_available_job_module_has_run_and_a_parser():
    for command in cli.JOBS.values():
        if importlib.util.find_spec(command.module) is None:
            continue  # a later issue's job
        mod = importlib.import_module(command.module)
        assert callable(getattr(mod, "run", None)), command.module
        parser_module, func = command.parser.split(":")
        assert callable(getattr(importlib.import_module(parser_module), func)), command.parser


def test_job_help_prints_the_jobs_options_and_exits_0(capsys):
    assert cli.main(["embed", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: earthembed embed ")
    assert "--read-block" in out and f"(default: {flags.DEFAULT_READ_BLOCK})" in out


def _glibc(monkeypatch, version: str = "glibc 2.36"):
    monkeypatch.setattr(cli.sys, "platform", "linux")
    monkeypatch.setattr(cli.os, "confstr", lambda name: version)


def test_malloc_environ_adds_the_tunable_once_and_keeps_the_users(monkeypatch):
    _glibc(monkeypatch)
    assert cli.malloc_environ({"A": "1"}) == {"A": "1", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    other = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert cli.malloc_environ(other)["GLIBC_TUNABLES"] == (
        "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    )
    assert cli.malloc_environ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}) is None
    assert cli.malloc_environ({"GLIBC_TUNABLES": "x=1:glibc.malloc.hugetlb=0"}) is None
    _glibc(monkeypatch, "glibc 2.31")  # before the tunable existed
    assert cli.malloc_environ({}) is None
    monkeypatch.setattr(cli.sys, "platform", "darwin")
    assert cli.malloc_environ({}) is None


_PROBE = """
import ctypes, os, sys
from beam_jobs import cli
cli.reexec_with_malloc_tunables()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
n = 64 << 20
p = libc.malloc(n)  # above the mmap threshold: its own mapping
ctypes.memset(p, 1, n)
huge = 0
for line in open("/proc/self/smaps_rollup"):
    if line.startswith("AnonHugePages:"):
        huge = int(line.split()[1])
print(os.environ.get("GLIBC_TUNABLES"), sys.argv[1:], huge)
"""


def _probe(env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, "an-arg"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_the_program_reexecutes_itself_with_huge_pages_for_malloc():
    """The re-executed process has the tunable and the same arguments; where the kernel gives
    transparent huge pages on request (madvise), a 64 MiB malloc gets them, and not with the
    tunable turned off."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if cli.malloc_environ(env) is None:
        pytest.skip("not Linux with glibc >= 2.35")
    tunables, args, huge_kb = _probe(env)
    assert (tunables, args) == ("glibc.malloc.hugetlb=1", "['an-arg']")
    off = _probe({**env, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert off[:2] == ["glibc.malloc.hugetlb=0", "['an-arg']"]
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not thp.exists() or "[madvise]" not in thp.read_text():
        pytest.skip(
            f"transparent huge pages here: {thp.read_text().strip() if thp.exists() else 'none'}"
        )
    assert int(huge_kb) >= 32 * 1024 and int(off[2]) == 0, (huge_kb, off)
