"""schemas/ is contracts only: no module in it imports file, network, pipeline or ML libraries,
or any package above it (beam_jobs, model, evaluation, benchmarks, simulation).

Every import statement counts, at module level or inside a function (`ast.walk` sees both), as
`import x` or `from x import y`; relative imports inside schemas/ are fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

FORBIDDEN = (
    "rasterio",
    "pyarrow.parquet",
    "fsspec",
    "google.cloud",
    "requests",
    "urllib",
    "apache_beam",
    "tensorflow",
    "jax",
    "flax",
    "gcsfs",
    "boto3",
    # packages above schemas/ in the layout
    "beam_jobs",
    "model",
    "evaluation",
    "benchmarks",
    "simulation",
)


def _is_forbidden(module: str) -> bool:
    return any(module == f or module.startswith(f + ".") for f in FORBIDDEN)


def forbidden_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every forbidden import in a module's source, anywhere in it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # `from . import x`: inside schemas/
                continue
            names = [node.module]
            if not _is_forbidden(node.module):  # `from pyarrow import parquet` is pyarrow.parquet
                names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if _is_forbidden(name)]
    return sorted(set(found))


def test_the_walker_finds_imports_inside_functions_and_from_forms():
    source = (
        "import numpy as np\n"
        "import pyarrow as pa\n"
        "from schemas import sensors\n"
        "def write(path):\n"
        "    import rasterio.shutil\n"
        "    from pyarrow import parquet\n"
        "    if path:\n"
        "        from beam_jobs.io.files import atomic_target\n"
        "    return urllib\n"
        "class Reader:\n"
        "    def read(self):\n"
        "        import jax.numpy as jnp, json\n"
        "        from models import x\n"  # 'models' is not 'model'
    )
    assert forbidden_imports(source) == [
        (5, "rasterio.shutil"),
        (6, "pyarrow.parquet"),
        (8, "beam_jobs.io.files"),
        (12, "jax.numpy"),
    ]
    assert forbidden_imports("import pyarrow\nimport pyarrow.compute\nimport modelling\n") == []


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.py")), ids=lambda p: p.name)
def test_schemas_module_does_no_io(path):
    assert forbidden_imports(path.read_text()) == []


def test_every_schemas_module_is_checked():
    names = {p.name for p in SCHEMAS.glob("*.py")}
    assert {"embedding.py", "grid.py", "sensors.py", "observations.py"} <= names
    assert "files.py" not in names  # atomic publishing lives in beam_jobs/io/files.py
