"""model/main.py: flags map onto config fields; bad flags are named."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from model import main

REPO = Path(__file__).resolve().parents[2]


def test_familiar_flags_map_onto_the_config():
    args, c = main.parse(
        ["--data", "d", "--workdir", "w", "--architecture=adaptive_decoder", "--grid_resolution=10"]
        + ["--embedding_dim=32", "--batch_size=16", "--learning_rate=1e-4", "--loss=corr+align"]
        + ["--steps", "5", "--config.model.depth=3", "--config.train.crop_sizes=(1,8)"]
    )
    assert c.model.embedding_dim == 32 and c.train.batch_size == 16
    assert c.train.learning_rate == 1e-4 and c.train.steps == 5 and c.model.depth == 3
    assert tuple(c.train.crop_sizes) == (1, 8)
    assert c.loss.recon == 0 and c.loss.uniform == 0
    assert c.loss.consistency > 0 and c.loss.align > 0 and c.loss.label == 0


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--grid_resolution=30", "10 m"),
        ("--architecture=unet", "--architecture"),
        ("--model=stp", "--model"),
        ("--loss=recon+magic", "magic"),
        ("--config.model.nope=1", "nope"),
    ],
)
def test_bad_flags_are_named(flag, message, capsys):
    with pytest.raises(SystemExit):
        main.parse(["--data", "d", "--workdir", "w", flag])
    assert message in capsys.readouterr().err


def test_epochs_set_steps_from_the_example_count(tiny_td):
    _, c = main.parse(["--data", str(tiny_td), "--workdir", "w", "--epochs=2", "--batch_size=4"])
    from model import input_pipeline

    n = input_pipeline.open_data_dir(str(tiny_td)).num_train
    assert c.train.steps == -(-2 * n // 4)


def test_every_option_has_help_and_shows_its_default():
    from model import export

    for parser in (main.build_parser(), export.build_parser()):
        for action in parser._actions:
            assert action.help, action.option_strings
        text = parser.format_help()
        assert "(default:" in text
    assert "(default: tiny)" in " ".join(main.build_parser().format_help().split())


def test_help_imports_neither_jax_nor_tensorflow():
    """`earthembed train --help` / `export --help` build their parsers without JAX, Flax or
    TensorFlow (they are imported when a run starts)."""
    code = """
import contextlib, io, sys
from beam_jobs import cli
for cmd in ("train", "export"):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            cli.main([cmd, "--help"])
        except SystemExit as e:
            assert e.code == 0, e.code
    assert "--workdir" in out.getvalue(), cmd
import model.export, model.main
model.main.build_parser().format_help()
model.export.build_parser().format_help()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"jax", "jaxlib", "flax", "tensorflow"})
print("heavy:", heavy)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "heavy: []"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """model.* modules imported anywhere in a file (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            found |= subs if subs <= modules else {node.module} | (subs & modules)
    return found & modules


def test_model_has_no_import_loops():
    root = REPO / "model"
    files = {}
    for f in root.rglob("*.py"):
        parts = f.relative_to(REPO).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {m: _imports(f, set(files)) - {m} for m, f in files.items()}
    assert graph["model.main"] >= {"model.train", "model.configs"}  # the walk sees lazy imports

    def reaches(start: str, target: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            for n in graph[m] - seen:
                if n == target:
                    return True
                seen.add(n)
                todo.append(n)
        return False

    loops = sorted(m for m in graph if reaches(m, m))
    assert loops == [], f"import loops through {loops}"
