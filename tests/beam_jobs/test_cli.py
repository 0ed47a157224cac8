"""`earthembed` dispatch."""

import importlib
import importlib.util

from beam_jobs import cli


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.JOBS:
        assert name in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_available_job_module_has_run():
    for module_name, _ in cli.JOBS.values():
        if importlib.util.find_spec(module_name) is None:
            continue  # a later issue's job
        mod = importlib.import_module(module_name)
        assert callable(getattr(mod, "run", None)), module_name
