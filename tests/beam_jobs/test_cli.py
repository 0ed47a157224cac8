"""`earthembed` dispatch."""

import importlib
import importlib.util

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
